//! Strict TOML config loading shared by every crate and example.
//!
//! Config structs use `#[serde(deny_unknown_fields, default)]`, so a misspelt key is an error that
//! names the key, and a missing key takes its documented default.

use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
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
}
