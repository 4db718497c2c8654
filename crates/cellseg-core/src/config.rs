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

/// [`load_toml_layers`], then each `KEY=VALUE` of `sets` (the examples' `--set`) on top, in order.
///
/// `KEY` is a dotted path (`train.optimizer.lr`); `VALUE` is a TOML value (`3`, `2e-4`, `true`,
/// `[0.5, 0.4]`, `"text"`), or, when it does not parse as one, the text itself as a string
/// (`--set train.run_dir=runs/x`). Each assignment is checked strictly on its own, as a file is,
/// so an unknown key, a wrong type or a bad value is an error naming the `--set` argument.
///
/// # Errors
/// As [`load_toml_layers`]; [`Error::ConfigParse`] naming `--set KEY=VALUE` for a malformed or
/// invalid assignment.
pub fn load_toml_layers_and_sets<T: DeserializeOwned + Serialize + Default>(
    paths: &[&Path],
    sets: &[String],
) -> Result<T> {
    if sets.is_empty() {
        return load_toml_layers(paths);
    }
    let base: T = load_toml_layers(paths)?;
    let mut merged = toml::Table::try_from(base).map_err(|e| Error::ConfigParse {
        path: "<merged config>".into(),
        message: e.to_string(),
    })?;
    for set in sets {
        let table = set_table(set)?;
        let name = format!("--set {set}");
        let _: T = toml::Value::Table(table.clone()).try_into().map_err(|e: toml::de::Error| {
            Error::ConfigParse {
                path: name.clone().into(),
                message: e.to_string().trim_end().to_string(),
            }
        })?;
        merge_tables(&mut merged, table);
    }
    merged.try_into().map_err(|e: toml::de::Error| Error::ConfigParse {
        path: format!("--set {}", sets.join(" --set ")).into(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// `a.b.c=value` as the table `{a = {b = {c = value}}}`.
///
/// # Errors
/// [`Error::ConfigParse`] naming the argument when it has no `=` or an empty key segment.
pub fn set_table(set: &str) -> Result<toml::Table> {
    let bad = |message: &str| Error::ConfigParse {
        path: format!("--set {set}").into(),
        message: message.into(),
    };
    let Some((key, raw)) = set.split_once('=') else {
        return Err(bad("expected KEY=VALUE, e.g. --set train.optimizer.lr=2e-4"));
    };
    let segments: Vec<&str> = key.trim().split('.').collect();
    if segments.iter().any(|s| {
        s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        return Err(bad("KEY must be a dotted path of names, e.g. train.optimizer.lr"));
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut value = value;
    for segment in segments.iter().rev() {
        let mut t = toml::Table::new();
        t.insert((*segment).to_string(), value);
        value = toml::Value::Table(t);
    }
    match value {
        toml::Value::Table(t) => Ok(t),
        _ => unreachable!("at least one segment"),
    }
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
    fn sets_override_files_and_are_checked_alone() {
        let dir = std::env::temp_dir().join(format!("cellseg-core-set-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(&file, "steps = 3").unwrap();
        let sets = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let d: Demo = load_toml_layers_and_sets(&[&file], &sets(&["lr=0.5"])).unwrap();
        assert_eq!(d, Demo { lr: 0.5, steps: 3 });
        let d: Demo =
            load_toml_layers_and_sets(&[&file], &sets(&["steps=4", "steps = 5"])).unwrap();
        assert_eq!(d.steps, 5);
        for (set, says) in [
            ("stesp=3", "stesp"),
            ("steps=fast", "string \"fast\""),
            ("steps=-1", "steps"),
            ("steps", "KEY=VALUE"),
            ("a..b=1", "dotted path"),
        ] {
            let err =
                load_toml_layers_and_sets::<Demo>(&[&file], &sets(&[set])).unwrap_err().to_string();
            assert!(err.contains(&format!("--set {set}")) && err.contains(says), "{set}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_set_value_that_is_not_toml_is_a_string() {
        let t = set_table("train.run_dir=runs/x").unwrap();
        assert_eq!(t["train"]["run_dir"].as_str(), Some("runs/x"));
        let t = set_table("a.b=[0.5, 0.4]").unwrap();
        assert_eq!(t["a"]["b"].as_array().unwrap().len(), 2);
        let t = set_table("flag=true").unwrap();
        assert_eq!(t["flag"].as_bool(), Some(true));
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
