//! The error type of `cellseg-core`.

use std::path::PathBuf;

/// Errors of `cellseg-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config file could not be read.
    #[error("cannot read config {path}: {source}")]
    ConfigIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A config file is not valid TOML for its type (unknown key, wrong type, …).
    #[error("invalid config {path}: {message}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// What `toml` reported, including the key and the line.
        message: String,
    },
    /// Parallel arrays (boxes, labels, scores, masks) have different lengths.
    #[error("{what}: {left_name} has {left} entries but {right_name} has {right}")]
    LengthMismatch {
        /// What was being built.
        what: &'static str,
        /// Name of the first array.
        left_name: &'static str,
        /// Its length.
        left: usize,
        /// Name of the second array.
        right_name: &'static str,
        /// Its length.
        right: usize,
    },
    /// A mask does not have the size of its image.
    #[error("mask {index} is {got_h}x{got_w} but the image is {want_h}x{want_w}")]
    MaskSize {
        /// Index of the mask.
        index: usize,
        /// Mask height.
        got_h: usize,
        /// Mask width.
        got_w: usize,
        /// Image height.
        want_h: usize,
        /// Image width.
        want_w: usize,
    },
    /// A name is not a known cell type.
    #[error("unknown cell type {0:?}")]
    UnknownCellType(String),
    /// A buffer has the wrong number of elements for its shape.
    #[error("{what}: expected {expected} values for shape {shape:?}, got {got}")]
    BufferSize {
        /// What was being built.
        what: &'static str,
        /// The shape.
        shape: Vec<usize>,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
