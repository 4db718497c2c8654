//! Strict TOML config loading shared by every crate and example.
//!
//! Config structs use `#[serde(deny_unknown_fields, default)]`, so a misspelt key is an error that
//! names the key, and a missing key takes its documented default.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Reads and parses the TOML file at `path` into `T`.
///
/// # Errors
/// [`Error::ConfigIo`] when the file cannot be read, [`Error::ConfigParse`] (naming the file, the key
/// and the line) when it is not valid for `T`.
pub fn load_toml<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::ConfigIo { path: path.to_path_buf(), source })?;
    parse_toml(&text, path)
}

/// Parses TOML `text` (read from `path`, used in error messages) into `T`.
///
/// # Errors
/// [`Error::ConfigParse`] naming the file, the key and the line.
pub fn parse_toml<T: DeserializeOwned>(text: &str, path: impl AsRef<Path>) -> Result<T> {
    toml::from_str(text).map_err(|e| Error::ConfigParse {
        path: path.as_ref().to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Reads the TOML files in order, each overlaid on `T::default()` and the files before it (tables
/// merge key by key, so a partly filled table keeps the values set before it, defaults included:
/// a file writing only `[mask_head.roi] sampling_ratio` keeps the mask head's own `output_size`;
/// any other value replaces), then the result into `T`. Each file is first parsed strictly on its
/// own, so unknown keys and wrong types are errors naming the file, the key and the line.
///
/// # Errors
/// [`Error::ConfigIo`] / [`Error::ConfigParse`] naming the file; [`Error::ConfigParse`] naming
/// all the files when the merged values do not fit together.
pub fn load_toml_layers<T: DeserializeOwned + Serialize + Default>(paths: &[&Path]) -> Result<T> {
    let mut merged = toml::Table::try_from(T::default())
        .map_err(|e| Error::ConfigParse { path: "<defaults>".into(), message: e.to_string() })?;
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ConfigIo { path: path.to_path_buf(), source })?;
        let _: T = parse_toml(&text, path)?;
        let table: toml::Table = parse_toml(&text, path)?;
        merge_tables(&mut merged, table);
    }
    let names = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" + ");
    merged.try_into().map_err(|e: toml::de::Error| Error::ConfigParse {
        path: names.into(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// `over` merged into `base`: tables key by key (recursively), any other value replaces.
pub fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        lr: f64,
        steps: u32,
    }
    impl Default for Demo {
        fn default() -> Self {
            Self { lr: 2e-4, steps: 10 }
        }
    }

    #[test]
    fn missing_keys_take_defaults() {
        let d: Demo = parse_toml("steps = 3", "a.toml").unwrap();
        assert_eq!(d, Demo { lr: 2e-4, steps: 3 });
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = parse_toml::<Demo>("stesp = 3", "cfg/a.toml").unwrap_err().to_string();
        assert!(err.contains("cfg/a.toml") && err.contains("stesp"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse_toml::<Demo>("lr = \"fast\"", "a.toml").unwrap_err().to_string();
        assert!(err.contains("lr"), "{err}");
    }

    #[test]
    fn layers_overlay_key_by_key() {
        #[derive(Debug, Deserialize, serde::Serialize, PartialEq, Default)]
        #[serde(deny_unknown_fields, default)]
        struct Outer {
            name: String,
            inner: Demo,
        }
        let dir = std::env::temp_dir().join(format!("cellseg-core-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.toml");
        let b = dir.join("b.toml");
        std::fs::write(&a, "name = \"a\"\n[inner]\nlr = 0.5\n").unwrap();
        std::fs::write(&b, "[inner]\nsteps = 7\n").unwrap();
        let o: Outer = load_toml_layers(&[a.as_path(), b.as_path()]).unwrap();
        assert_eq!(o, Outer { name: "a".into(), inner: Demo { lr: 0.5, steps: 7 } });
        std::fs::write(&b, "[inner]\nstesp = 7\n").unwrap();
        let err = load_toml_layers::<Outer>(&[a.as_path(), b.as_path()]).unwrap_err().to_string();
        assert!(err.contains("b.toml") && err.contains("stesp"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
