//! A minimal CSV reader (RFC 4180 quoting, one record per line) for the competition files.

use std::collections::HashMap;
use std::path::Path;

use crate::{Error, Result};

/// A parsed CSV file: header and records, each with its 1-based line number.
#[derive(Debug)]
pub(crate) struct CsvFile {
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
    /// Malformed records (wrong field count, open quote): `(line, error)`, for the caller to fail
    /// on or skip.
    pub bad: Vec<(usize, Error)>,
}

impl CsvFile {
    /// Reads `path`; every record must have as many fields as the header.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let Some((_, head)) = lines.next() else {
            return Err(Error::Csv { path: path.into(), line: 1, message: "empty file".into() });
        };
        let header = split(head.trim_start_matches('\u{feff}'), path, 1)?;
        let mut rows = Vec::new();
        let mut bad = Vec::new();
        for (i, l) in lines {
            let line = i + 1;
            match split(l, path, line) {
                Ok(fields) if fields.len() == header.len() => rows.push((line, fields)),
                Ok(fields) => bad.push((
                    line,
                    Error::Csv {
                        path: path.into(),
                        line,
                        message: format!(
                            "{} fields, the header has {}",
                            fields.len(),
                            header.len()
                        ),
                    },
                )),
                Err(e) => bad.push((line, e)),
            }
        }
        Ok(Self { header, rows, bad })
    }

    /// Column index of each name in `names`.
    pub fn columns<const N: usize>(&self, names: [&str; N], path: &Path) -> Result<[usize; N]> {
        let pos: HashMap<&str, usize> =
            self.header.iter().enumerate().map(|(i, h)| (h.trim(), i)).collect();
        let mut out = [0; N];
        for (o, n) in out.iter_mut().zip(names) {
            *o = *pos.get(n).ok_or_else(|| Error::Csv {
                path: path.into(),
                line: 1,
                message: format!("missing column {n:?} (header: {:?})", self.header),
            })?;
        }
        Ok(out)
    }
}

fn split(line: &str, path: &Path, line_no: usize) -> Result<Vec<String>> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err(Error::Csv {
            path: path.into(),
            line: line_no,
            message: "unterminated quoted field".into(),
        });
    }
    out.push(cur);
    Ok(out)
}

/// Parses a non-negative integer field.
pub(crate) fn parse_usize(v: &str, col: &str, path: &Path, line: usize) -> Result<usize> {
    v.trim().parse().map_err(|_| Error::Csv {
        path: path.into(),
        line,
        message: format!("column {col}: {v:?} is not a non-negative integer"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_line_numbers() {
        let f = CsvFile::parse("a,b\n1,\"x,\"\"y\"\"\"\n\n2,z\n", Path::new("t.csv")).unwrap();
        assert_eq!(f.rows[0], (2, vec!["1".into(), "x,\"y\"".into()]));
        assert_eq!(f.rows[1].0, 4);
        let f = CsvFile::parse("a,b\n1\n", Path::new("t.csv")).unwrap();
        let err = f.bad[0].1.to_string();
        assert!(err.contains("t.csv line 2"), "{err}");
    }
}
