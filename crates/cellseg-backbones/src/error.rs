//! The error type of `cellseg-backbones`.

use std::fmt::Write as _;
use std::path::PathBuf;

/// A variable whose shape in the checkpoint differs from the model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The key as stored in the file.
    pub key: String,
    /// The shape the model expects.
    pub expected: Vec<i64>,
    /// The shape found in the file.
    pub found: Vec<i64>,
}

/// Everything that kept a checkpoint from loading strictly, all keys at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyProblems {
    /// Model variables with no tensor in the file (names as in the file would spell them).
    pub missing: Vec<String>,
    /// Tensors in the file that match no model variable.
    pub unexpected: Vec<String>,
    /// Tensors whose shape differs from the model variable's.
    pub mismatched: Vec<ShapeMismatch>,
}

impl KeyProblems {
    /// `true` when there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl std::fmt::Display for KeyProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        if !self.missing.is_empty() {
            let _ = write!(s, "{} missing key(s): {}", self.missing.len(), self.missing.join(", "));
        }
        if !self.unexpected.is_empty() {
            if !s.is_empty() {
                s.push_str("; ");
            }
            let _ = write!(
                s,
                "{} unexpected key(s): {}",
                self.unexpected.len(),
                self.unexpected.join(", ")
            );
        }
        if !self.mismatched.is_empty() {
            if !s.is_empty() {
                s.push_str("; ");
            }
            let _ = write!(s, "{} wrongly shaped key(s): ", self.mismatched.len());
            for (i, m) in self.mismatched.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{} (model {:?}, file {:?})", m.key, m.expected, m.found);
            }
        }
        f.write_str(&s)
    }
}

/// Errors of `cellseg-backbones`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the shared vocabulary (sizes, lengths, configs).
    #[error(transparent)]
    Core(#[from] cellseg_core::Error),
    /// An error reported by libtorch.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
    /// A checkpoint file could not be read or parsed as safetensors.
    #[error("cannot read checkpoint {path}: {source}")]
    CheckpointRead {
        /// The file.
        path: PathBuf,
        /// What tch / safetensors reported.
        source: tch::TchError,
    },
    /// A PyTorch `torch.save` file (`.pth` / `.pt`) could not be read.
    #[error("cannot read PyTorch checkpoint {path}: {message}")]
    Pth {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A PyTorch file was read but holds no state_dict (a dict of named tensors).
    #[error("PyTorch file {path} holds no state_dict: {found}")]
    NotAStateDict {
        /// The file.
        path: PathBuf,
        /// What it holds instead.
        found: String,
    },
    /// A checkpoint file could not be written.
    #[error("cannot write checkpoint {path}: {message}")]
    CheckpointWrite {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A checkpoint does not fit the model: every missing, unexpected and wrongly shaped key.
    #[error("checkpoint {path} does not fit the model: {problems}")]
    CheckpointMismatch {
        /// The file.
        path: PathBuf,
        /// All the problems, by key.
        problems: KeyProblems,
    },
    /// A pattern of a load policy is not a valid regular expression.
    #[error("invalid key pattern {pattern:?} in load policy: {message}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What `regex` reported.
        message: String,
    },
    /// A config value is out of its range.
    #[error("invalid config: {key} = {value}: {reason}")]
    InvalidConfig {
        /// The key (dotted path inside the config).
        key: &'static str,
        /// The value, as written.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// An FPN was given inputs that do not fit its config.
    #[error("FPN expects {expected} input levels with strides doubling, got {found:?}")]
    FpnInputs {
        /// Number of levels expected (at least 1).
        expected: usize,
        /// `(channels, stride)` of the levels given.
        found: Vec<(i64, u32)>,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
