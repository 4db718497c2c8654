//! A small CSV reader (RFC 4180: commas, double-quoted fields with `""` escapes and embedded
//! newlines, `\n` or `\r\n` line ends) that reports 1-based row numbers.

use std::path::Path;

use crate::{Error, Result};

/// One record: its 1-based row number (header = 1) and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based row number of the record's first line.
    pub row: usize,
    /// The fields, unquoted.
    pub fields: Vec<String>,
}

/// Parses CSV text into records; blank lines are skipped.
///
/// # Errors
/// [`Error::Csv`] for an unterminated quoted field or text right after a closing quote.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut line = 1;
    while i < bytes.len() {
        let row = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut field_start = i;
        loop {
            if i >= bytes.len() {
                fields.push(std::mem::take(&mut field));
                break;
            }
            match bytes[i] {
                b'"' if i == field_start => {
                    i += 1;
                    let qline = line;
                    loop {
                        match bytes.get(i) {
                            None => {
                                return Err(Error::Csv {
                                    path: path.to_path_buf(),
                                    row: qline,
                                    message: "unterminated quoted field".into(),
                                });
                            }
                            Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                                field.push('"');
                                i += 2;
                            }
                            Some(b'"') => {
                                i += 1;
                                break;
                            }
                            Some(_) => {
                                let ch_len = utf8_len(bytes[i]);
                                let s = &text[i..i + ch_len];
                                if s == "\n" {
                                    line += 1;
                                }
                                field.push_str(s);
                                i += ch_len;
                            }
                        }
                    }
                    match bytes.get(i) {
                        None | Some(b',') | Some(b'\n') | Some(b'\r') => {}
                        Some(_) => {
                            return Err(Error::Csv {
                                path: path.to_path_buf(),
                                row: line,
                                message: "text after a closing quote".into(),
                            });
                        }
                    }
                }
                b',' => {
                    fields.push(std::mem::take(&mut field));
                    i += 1;
                    field_start = i;
                }
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    i += 1;
                }
                b'\n' => {
                    fields.push(std::mem::take(&mut field));
                    i += 1;
                    line += 1;
                    break;
                }
                _ => {
                    let ch_len = utf8_len(bytes[i]);
                    field.push_str(&text[i..i + ch_len]);
                    i += ch_len;
                }
            }
        }
        if !(fields.len() == 1 && fields[0].is_empty()) {
            out.push(Record { row, fields });
        }
    }
    Ok(out)
}

fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Reads and parses a CSV file.
///
/// # Errors
/// [`Error::Io`] with the path, then as [`parse`].
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_commas_and_newlines() {
        let t = "a,b\r\n1,\"x, \"\"y\"\"\nz\"\n\n2,\n";
        let r = parse(t, Path::new("t.csv")).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].fields, vec!["1".to_string(), "x, \"y\"\nz".to_string()]);
        assert_eq!(r[2].row, 5);
        assert_eq!(r[2].fields, vec!["2".to_string(), String::new()]);
    }

    #[test]
    fn unterminated_quote_names_the_row() {
        let e = parse("a\n\"oops\n", Path::new("t.csv")).unwrap_err();
        assert!(e.to_string().contains("row 2"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = parse(&s, Path::new("fuzz.csv"));
        }
    }
}
