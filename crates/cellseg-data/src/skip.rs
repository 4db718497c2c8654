//! Lenient loading: bad items skipped with a logged reason instead of failing the whole read.

use std::path::PathBuf;

use crate::{Error, Result};

/// How a reader treats a bad item (a row, an annotation, an image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strictness {
    /// The first bad item is an error (default).
    #[default]
    Strict,
    /// Bad items are skipped; each skip is logged with `tracing::warn!` and listed in the result.
    Lenient,
}

/// One item a lenient reader skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file the item came from.
    pub file: PathBuf,
    /// The 1-based CSV line, or the JSON image / annotation id.
    pub row: String,
    /// The error that would have been returned in strict mode.
    pub reason: String,
}

/// Returns `err` in strict mode; in lenient mode logs it, records it and returns `Ok`.
pub(crate) fn skip_or_fail(
    strictness: Strictness,
    file: &std::path::Path,
    row: impl Into<String>,
    err: Error,
    skipped: &mut Vec<Skipped>,
) -> Result<()> {
    match strictness {
        Strictness::Strict => Err(err),
        Strictness::Lenient => {
            let row = row.into();
            tracing::warn!(file = %file.display(), row = %row, reason = %err, "skipped");
            skipped.push(Skipped { file: file.to_path_buf(), row, reason: err.to_string() });
            Ok(())
        }
    }
}
