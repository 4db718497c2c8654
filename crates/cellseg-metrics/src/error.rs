//! The error type of `cellseg-metrics`.

use std::path::PathBuf;

use cellseg_core::ImageSize;

/// Errors of `cellseg-metrics`. File errors name the file and the row, key or index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the shared vocabulary (sizes, lengths, configs).
    #[error(transparent)]
    Core(#[from] cellseg_core::Error),
    /// An RLE error outside any file (masks built in memory).
    #[error(transparent)]
    Rle(#[from] cellseg_rle::Error),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A CSV row is malformed (unterminated quote, wrong number of fields, bad number, …).
    #[error("{path}, row {row}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based row number, the header being row 1.
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// A CSV lacks a required column.
    #[error("{path}: no column {column:?} in the header {header:?}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: &'static str,
        /// The header that was found.
        header: Vec<String>,
    },
    /// The RLE of a CSV row is invalid.
    #[error("{path}, row {row} (id {id}): {source}")]
    RowRle {
        /// The file.
        path: PathBuf,
        /// 1-based row number, the header being row 1.
        row: usize,
        /// The image id of the row.
        id: String,
        /// What is wrong with the RLE (names the token or run).
        source: Box<cellseg_rle::Error>,
    },
    /// Rows of one image disagree on its size.
    #[error("{path}, row {row}: image {id} is {}x{} here but {}x{} in an earlier row", got.height, got.width, want.height, want.width)]
    ImageSizeConflict {
        /// The file.
        path: PathBuf,
        /// 1-based row number.
        row: usize,
        /// The image id.
        id: String,
        /// Size in this row.
        got: ImageSize,
        /// Size seen first.
        want: ImageSize,
    },
    /// Image ids of the truth are missing from the prediction, or the reverse.
    #[error("{path}: {} image id(s) {what}: {}", ids.len(), ids.iter().take(10).cloned().collect::<Vec<_>>().join(", "))]
    MissingIds {
        /// The file that lacks (or has extra) ids.
        path: PathBuf,
        /// "missing from the prediction" or "not in the truth".
        what: &'static str,
        /// The ids (all of them).
        ids: Vec<String>,
    },
    /// A JSON file is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser error (with line and column).
        source: serde_json::Error,
    },
    /// A COCO json lacks a field or has one of the wrong type.
    #[error("{path}: {key}: {message}")]
    CocoField {
        /// The file.
        path: PathBuf,
        /// Where, e.g. `annotations[12].bbox`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A COCO segmentation is invalid.
    #[error("{path}: {key}: {source}")]
    CocoSegmentation {
        /// The file.
        path: PathBuf,
        /// Where, e.g. `annotations[12].segmentation`.
        key: String,
        /// The RLE error.
        source: Box<cellseg_rle::Error>,
    },
    /// A COCO mask does not have the size of its image.
    #[error("{path}: {key}: mask is {}x{} but image {image_id} is {}x{}", got.height, got.width, want.height, want.width)]
    CocoMaskSize {
        /// The file.
        path: PathBuf,
        /// Where.
        key: String,
        /// The image id.
        image_id: String,
        /// Mask size.
        got: ImageSize,
        /// Image size.
        want: ImageSize,
    },
    /// Evaluation parameters are invalid.
    #[error("invalid COCO evaluation parameters: {message}")]
    Params {
        /// What is wrong.
        message: String,
    },
    /// An IoU matrix does not match the number of masks.
    #[error("IoU matrix has {got} values, expected {n_truth} x {n_pred}")]
    MatrixSize {
        /// Truth count.
        n_truth: usize,
        /// Prediction count.
        n_pred: usize,
        /// Values given.
        got: usize,
    },
    /// An entry given to [`crate::competition::IouMatrix::from_nonzero`] is invalid.
    #[error(
        "IoU entry {index} (truth {truth}, prediction {pred}, IoU {iou}) of a {n_truth} x {n_pred} matrix: {reason}"
    )]
    IouEntry {
        /// Position of the entry in the list.
        index: usize,
        /// Its truth (row).
        truth: usize,
        /// Its prediction (column).
        pred: usize,
        /// Its IoU.
        iou: f64,
        /// Rows of the matrix.
        n_truth: usize,
        /// Columns of the matrix.
        n_pred: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
