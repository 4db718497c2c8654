//! The error type of `cellseg-data`.
//!
//! Every variant names the file and, where there is one, the row (1-based line number of a CSV, or
//! the annotation / image id of a JSON), so that bad input can be found and fixed.

use std::path::PathBuf;

/// Errors of `cellseg-data`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the shared vocabulary (sizes, lengths, configs).
    #[error(transparent)]
    Core(#[from] cellseg_core::Error),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An image named by an annotation file does not exist.
    #[error("{annotations} {row}: image {image} does not exist")]
    MissingImage {
        /// The missing image.
        image: PathBuf,
        /// The annotation file that names it.
        annotations: PathBuf,
        /// `line N` (1-based CSV line) or `image N` (JSON image id).
        row: String,
    },
    /// `corrected_masks` names a folder that does not exist.
    #[error("corrected masks folder {dir} does not exist (data.corrected_masks)")]
    CorrectedMasksFolder {
        /// The folder.
        dir: PathBuf,
    },
    /// An astro image has no corrected mask in the `corrected_masks` folder (Heng's folder
    /// holds one `{id}.png` per astro training image).
    #[error(
        "{annotations} {row}: astro image {id} has no corrected mask {mask} (data.corrected_masks \
         holds one {{id}}.png per astro image)"
    )]
    MissingCorrectedMask {
        /// The image id.
        id: String,
        /// The file looked for.
        mask: PathBuf,
        /// The annotation file.
        annotations: PathBuf,
        /// `line N` of the image's first row.
        row: String,
    },
    /// An image file exists but cannot be decoded (corrupt PNG / TIFF, unsupported layout).
    #[error("cannot decode image {path}: {message}")]
    ImageDecode {
        /// The image.
        path: PathBuf,
        /// What the decoder reported.
        message: String,
    },
    /// An image could not be encoded or written.
    #[error("cannot write image {path}: {message}")]
    ImageEncode {
        /// The image.
        path: PathBuf,
        /// What the encoder reported.
        message: String,
    },
    /// A CSV row is malformed (wrong number of columns, a field that is not a number, …).
    #[error("{path} line {line}: {message}")]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number (the header is line 1).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A run-length encoding or polygon in an annotation file cannot be decoded.
    #[error("{path} {row} (image {image_id}): bad mask encoding: {source}")]
    Rle {
        /// The annotation file.
        path: PathBuf,
        /// `line N` (1-based CSV line) or `annotation N` / `image N` (JSON ids).
        row: String,
        /// The image the row belongs to.
        image_id: String,
        /// What the RLE decoder reported.
        #[source]
        source: Box<cellseg_rle::Error>,
    },
    /// The width / height stated by an annotation file differs from the image (or from other rows).
    #[error(
        "{path} {row} (image {image_id}): annotation says {ann_h}x{ann_w} (HxW) but {what} is {got_h}x{got_w}"
    )]
    SizeMismatch {
        /// The annotation file.
        path: PathBuf,
        /// `line N` (1-based CSV line) or `image N` / `annotation N` (JSON ids).
        row: String,
        /// The image id.
        image_id: String,
        /// Height stated by the annotation.
        ann_h: u32,
        /// Width stated by the annotation.
        ann_w: u32,
        /// What the annotation was compared with (the image file, an earlier row).
        what: String,
        /// Height found.
        got_h: u32,
        /// Width found.
        got_w: u32,
    },
    /// An annotation lies (partly) outside its image.
    #[error(
        "{path} {row} (image {image_id}): annotation outside the {height}x{width} image: {detail}"
    )]
    AnnotationOutside {
        /// The annotation file.
        path: PathBuf,
        /// `line N` (1-based CSV line) or `annotation N` / `image N` (JSON ids).
        row: String,
        /// The image id.
        image_id: String,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
        /// Which coordinate is outside.
        detail: String,
    },
    /// A JSON annotation file is malformed or misses a key.
    #[error("{path}: {message}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// What is wrong (serde's message names the key and the line).
        message: String,
    },
    /// A value names no known cell type / class.
    #[error("{path} {row}: unknown cell type {value:?}")]
    UnknownCellType {
        /// The file.
        path: PathBuf,
        /// `line N` (1-based CSV line) or `image N` (JSON image id).
        row: String,
        /// The value found.
        value: String,
    },
    /// An image with this id is not in the data set (fold files, lookups).
    #[error("{path} line {line}: unknown image id {id:?}")]
    UnknownId {
        /// The file that names the id.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The id.
        id: String,
    },
    /// An image has no group (plate_well) for GroupKFold: its `sample_id` is empty.
    #[error("image {id} has no plate_well (empty sample_id): cannot build group folds")]
    MissingGroup {
        /// The image id.
        id: String,
    },
    /// There are fewer groups than folds.
    #[error("cannot split {n_groups} groups into {n_splits} folds")]
    TooFewGroups {
        /// Requested folds.
        n_splits: usize,
        /// Distinct groups.
        n_groups: usize,
    },
    /// Random crops never kept an instance (the image has no valid box inside any crop).
    #[error("image {id}: no instance survived {tries} random crops of {crop_h}x{crop_w}")]
    NoInstanceSurvives {
        /// The image id.
        id: String,
        /// Attempts made.
        tries: usize,
        /// Crop height.
        crop_h: usize,
        /// Crop width.
        crop_w: usize,
    },
    /// A config value is out of its valid range.
    #[error("invalid config value {key} = {value}: {reason}")]
    InvalidConfig {
        /// The TOML key (dotted path).
        key: &'static str,
        /// The value found.
        value: String,
        /// The valid range.
        reason: &'static str,
    },
    /// Two fold splits of the same data disagree (an experiment's `folds.csv` against the split a
    /// new run computes, or two experiments against each other).
    #[error("{path}: {message}")]
    SplitMismatch {
        /// The recorded split (`folds.csv`).
        path: PathBuf,
        /// What differs, naming the first differing image id.
        message: String,
    },
    /// Two images of a data set being written share an id (a generated id and a real one, or two
    /// real ones): the second would overwrite the first's PNG.
    #[error("{dir}: image id {id} is given twice; nothing was written")]
    DuplicateImage {
        /// The folder being written.
        dir: PathBuf,
        /// The id.
        id: String,
    },
    /// The images of a batch have different channel counts.
    #[error("batch image {index} ({id}) has {got} channels, expected 1 or 3")]
    Channels {
        /// Position in the batch.
        index: usize,
        /// Image id.
        id: String,
        /// Channels found.
        got: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
