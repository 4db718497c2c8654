//! The error type of `cellseg-heads`.

/// Errors of `cellseg-heads`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the shared vocabulary (sizes, lengths, configs).
    #[error(transparent)]
    Core(#[from] cellseg_core::Error),
    /// An error reported by libtorch.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
    /// A configuration value is out of range or inconsistent.
    #[error("config key `{key}`: {reason}")]
    Config {
        /// Dotted key, e.g. `rpn.anchors`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// Expected shape, in words.
        expected: String,
        /// Actual shape.
        got: Vec<i64>,
    },
    /// Inputs disagree in length (images vs targets, levels vs strides, …).
    #[error("{what}: {left} vs {right}")]
    Mismatch {
        /// Which inputs.
        what: &'static str,
        /// One length.
        left: usize,
        /// The other length.
        right: usize,
    },
    /// An input is on another device, or of another dtype, than the model needs.
    #[error("{what} {shape:?} is {got}; the model needs {expected}")]
    Input {
        /// Which input.
        what: &'static str,
        /// Its shape.
        shape: Vec<i64>,
        /// Its device or dtype.
        got: String,
        /// The model's.
        expected: String,
    },
    /// libtorch failed during a stage (a kernel rejected a shape, a CUDA error).
    #[error("libtorch failed in {stage} on {input}: {message}")]
    Libtorch {
        /// The stage (`mask_rcnn losses`, `predict`, …).
        stage: &'static str,
        /// The stage's input: shape, dtype and device.
        input: String,
        /// libtorch's message (its first line).
        message: String,
    },
    /// libtorch ran out of memory during a stage.
    #[error("out of memory in {stage} on {input}: {message}")]
    OutOfMemory {
        /// The stage.
        stage: &'static str,
        /// The stage's input: shape, dtype and device.
        input: String,
        /// libtorch's message (its first line).
        message: String,
    },
    /// An error of the post-processing vocabulary (soft masks).
    #[error(transparent)]
    Postproc(#[from] cellseg_postproc::Error),
    /// An error of the backbone crate.
    #[error(transparent)]
    Backbone(#[from] cellseg_backbones::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
