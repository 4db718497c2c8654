//! The error type of `cellseg-postproc`.

use std::path::PathBuf;

/// Errors of `cellseg-postproc`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the shared vocabulary (sizes, lengths, configs).
    #[error(transparent)]
    Core(#[from] cellseg_core::Error),
    /// A threshold is NaN or outside its documented range.
    #[error("{name} = {value} is outside [{min}, {max}]")]
    ThresholdOutOfRange {
        /// Which threshold (config key or argument name).
        name: String,
        /// The value given.
        value: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// A detection score is NaN.
    #[error("score of detection {index} is NaN")]
    NanScore {
        /// Index of the detection in its input.
        index: usize,
    },
    /// Parallel arrays of one image differ in length.
    #[error("{what}: {left_name} has {left} entries but {right_name} has {right}")]
    LengthMismatch {
        /// What was being processed.
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
    /// A mask belongs to an image of another size.
    #[error(
        "{what}: mask {index} is for a {got_h}x{got_w} image but the image is {want_h}x{want_w}"
    )]
    MaskSize {
        /// What was being processed.
        what: &'static str,
        /// Index of the mask.
        index: usize,
        /// Height of the mask's image.
        got_h: usize,
        /// Width of the mask's image.
        got_w: usize,
        /// Height of the image.
        want_h: usize,
        /// Width of the image.
        want_w: usize,
    },
    /// A soft mask's rectangle does not fit its buffer or its image.
    #[error(
        "soft mask: rectangle {rect:?} (top, left, height, width) needs {expected} values inside a {image_h}x{image_w} image, got {got}"
    )]
    SoftMaskShape {
        /// `(top, left, height, width)`.
        rect: [usize; 4],
        /// `height * width`.
        expected: usize,
        /// Values given.
        got: usize,
        /// Image height.
        image_h: usize,
        /// Image width.
        image_w: usize,
    },
    /// A box label is not a Sartorius cell type, so no per-type threshold applies.
    #[error(
        "image {image}: the majority box label {label} is not a cell type (0 shsy5y, 1 astro, 2 cort)"
    )]
    UnknownCellLabel {
        /// The image identifier.
        image: String,
        /// The label that won the vote.
        label: usize,
    },
    /// The config is semantically invalid (after parsing).
    #[error("invalid post-processing config: {key} = {value}: {reason}")]
    Config {
        /// The TOML key.
        key: String,
        /// The offending value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An OOF file is malformed, truncated or corrupted, or an image cannot be written to one.
    #[error("{}: {}{message}", .path.display(), oof_location(*.image, .id.as_deref(), *.detection, *.offset))]
    Oof {
        /// The file.
        path: PathBuf,
        /// Position of the image record in the file (0-based), when known.
        image: Option<usize>,
        /// Its id, when already read.
        id: Option<String>,
        /// The detection within the image, when inside one.
        detection: Option<usize>,
        /// Byte offset of the problem, when reading.
        offset: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// Out-of-fold predictions and the truth do not describe the same images.
    #[error("{}: {message} (truth {})", .oof.display(), .truth.display())]
    OofTruth {
        /// The OOF file.
        oof: PathBuf,
        /// The truth file.
        truth: PathBuf,
        /// What differs, with the ids.
        message: String,
    },
    /// A tweaking grid is invalid.
    #[error("tweak grid {}: {key} = {value}: {reason}", .path.display())]
    Grid {
        /// The grid file (or `<default>`).
        path: PathBuf,
        /// The TOML key.
        key: String,
        /// The offending value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An error of `cellseg-metrics` (reading the truth, building IoU matrices).
    #[error(transparent)]
    Metrics(#[from] cellseg_metrics::Error),
    /// JSON serialisation failed.
    #[error("cannot serialise {path} as JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde_json error.
        source: serde_json::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn oof_location(
    image: Option<usize>,
    id: Option<&str>,
    detection: Option<usize>,
    offset: Option<u64>,
) -> String {
    let mut s = String::new();
    if let Some(i) = image {
        s.push_str(&format!("image record {i}"));
        if let Some(id) = id {
            s.push_str(&format!(" (id {id})"));
        }
        s.push_str(", ");
    }
    if let Some(k) = detection {
        s.push_str(&format!("detection {k}, "));
    }
    if let Some(o) = offset {
        s.push_str(&format!("byte {o}: "));
    }
    s
}

/// Checks that `value` lies in `[min, max]` (NaN never does).
pub(crate) fn check_range(name: &str, value: f64, min: f64, max: f64) -> Result<()> {
    if value >= min && value <= max {
        Ok(())
    } else {
        Err(Error::ThresholdOutOfRange { name: name.to_string(), value, min, max })
    }
}
