//! The error type of `cellseg-ensemble`.

use std::path::PathBuf;

/// Errors of `cellseg-ensemble`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the shared vocabulary (sizes, lengths, TOML files).
    #[error(transparent)]
    Core(#[from] cellseg_core::Error),
    /// An error of the detectors.
    #[error(transparent)]
    Heads(#[from] cellseg_heads::Error),
    /// An error of the soft detections.
    #[error(transparent)]
    Postproc(#[from] cellseg_postproc::Error),
    /// An error reported by libtorch.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
    /// A config value the ensemble cannot run with.
    #[error("ensemble config{}: {reason}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Config {
        /// The file, when the config came from one.
        path: Option<PathBuf>,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// Members that cannot be ensembled together (named), or inputs that do not fit them.
    #[error("{0}")]
    Mismatch(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
