//! The error type of `cellseg-train`.

use std::path::PathBuf;

/// The error a user-supplied hook ([`crate::TrainableModel`], [`crate::TrainData`],
/// [`crate::Validator`]) returns; the engine wraps it with the step and the hook's name.
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A tensor whose shape in a checkpoint differs from the model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The variable name.
    pub key: String,
    /// The model's shape.
    pub expected: Vec<i64>,
    /// The checkpoint's shape.
    pub found: Vec<i64>,
}

impl std::fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (model {:?}, checkpoint {:?})", self.key, self.expected, self.found)
    }
}

fn list(keys: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = keys.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(", … ({} more)", keys.len() - SHOWN));
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

fn list_shapes(items: &[ShapeMismatch]) -> String {
    list(&items.iter().map(ToString::to_string).collect::<Vec<_>>())
}

/// Errors of `cellseg-train`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the shared vocabulary (config loading names the file and the key).
    #[error(transparent)]
    Core(#[from] cellseg_core::Error),
    /// An error reported by libtorch.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
    /// A config value is out of range or inconsistent with another.
    #[error("invalid training config: `{key}` {message}")]
    InvalidConfig {
        /// The offending key (dotted path, e.g. `optimizer.lr`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file or folder could not be read, written, created or renamed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`creating folder`, `writing`, `renaming to`, …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error (a full disk shows as `No space left on device`).
        source: std::io::Error,
    },
    /// A safetensors file could not be written or read.
    #[error("safetensors file {path}: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What libtorch / safetensors reported.
        source: tch::TchError,
    },
    /// A PyTorch `.pth` / `.pt` checkpoint could not be read (`cellseg_backbones::pth`).
    #[error(transparent)]
    Weights(#[from] cellseg_backbones::Error),
    /// A checkpoint's weights do not match the model (another architecture).
    #[error(
        "checkpoint {path} does not match the model: missing keys [{}]; unexpected keys [{}]; \
         wrong shapes [{}]",
        list(missing),
        list(unexpected),
        list_shapes(wrong_shape)
    )]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// Keys the model has but the checkpoint lacks.
        missing: Vec<String>,
        /// Keys the checkpoint has but the model lacks.
        unexpected: Vec<String>,
        /// Keys present in both with different shapes.
        wrong_shape: Vec<ShapeMismatch>,
    },
    /// A checkpoint's JSON state is unreadable or inconsistent with the run.
    #[error("checkpoint state {path}: {message}")]
    CheckpointState {
        /// The `state.json` (or pointer) file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint file's bytes differ from the SHA-256 its `state.json` recorded when it was
    /// written (changed in place, or a bit flipped on disk).
    #[error(
        "checkpoint file {path} is damaged: its SHA-256 is {found}, {state} recorded {expected}"
    )]
    Checksum {
        /// The damaged file.
        path: PathBuf,
        /// The `state.json` that recorded the checksum.
        state: PathBuf,
        /// The recorded SHA-256 (hex).
        expected: String,
        /// The SHA-256 of the file now (hex).
        found: String,
    },
    /// `resume` was asked for but the run folder holds no checkpoint.
    #[error("nothing to resume: {path} holds no checkpoint (no `latest.json`)")]
    NoCheckpoint {
        /// The run folder.
        path: PathBuf,
    },
    /// `resume` found checkpoints, but none of them could be read.
    #[error("nothing to resume: no checkpoint of {path} is readable: {}", list(tried))]
    NoReadableCheckpoint {
        /// The run folder.
        path: PathBuf,
        /// Each checkpoint folder tried, newest first, with why it was rejected.
        tried: Vec<String>,
    },
    /// A fresh run was started in a folder that already holds a run.
    #[error(
        "{path} already holds a training run (`latest.json`); resume it or choose another run_dir"
    )]
    RunExists {
        /// The run folder.
        path: PathBuf,
    },
    /// HTC's semantic target is built from the instance masks, and a training image has
    /// ground truths but not one mask pixel.
    #[error(
        "training image `{id}` has {instances} ground truths but no mask pixel: HTC's semantic \
         target is built from the instance masks (train HTC on data with masks, or use \
         arch = \"cascade\")"
    )]
    NoMasks {
        /// The image's id.
        id: String,
        /// Its number of ground truths.
        instances: usize,
    },
    /// The model's `losses` hook failed.
    #[error("model losses failed at step {step} (images {image_ids:?}): {source}")]
    Model {
        /// The optimizer step being computed.
        step: u64,
        /// The batch's image ids.
        image_ids: Vec<String>,
        /// The model's error.
        source: HookError,
    },
    /// A run folder's `model.toml` is missing or does not describe a model this version builds.
    #[error("model card {path}: {reason}")]
    ModelCard {
        /// The file (or where it was looked for).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model's description (`model.toml`) could not be made.
    #[error("describing the model for {path}: {source}")]
    Describe {
        /// The file that was to be written.
        path: PathBuf,
        /// The model's error.
        source: HookError,
    },
    /// The data source failed to build a batch.
    #[error("building batch {batch} of epoch {epoch} failed: {source}")]
    Data {
        /// 1-based epoch.
        epoch: u32,
        /// Index of the micro-batch in the epoch.
        batch: u64,
        /// The data source's error.
        source: HookError,
    },
    /// The validation hook failed.
    #[error("validation after epoch {epoch} failed: {source}")]
    Validation {
        /// 1-based epoch.
        epoch: u32,
        /// The validator's error.
        source: HookError,
    },
    /// The model returned no loss that the loss weighting uses.
    #[error("step {step}: none of the losses [{names}] is used by the loss weighting")]
    NoLoss {
        /// The optimizer step.
        step: u64,
        /// The names returned by the model.
        names: String,
    },
    /// Too many steps had a non-finite loss or gradient.
    #[error(
        "stopping at step {step}: {count} steps had a non-finite loss or gradient, more than \
         `{key}` = {limit}; in a row: {}",
        list(&streak.iter().map(ToString::to_string).collect::<Vec<_>>())
    )]
    TooManyNonFinite {
        /// How many steps were skipped (in the run or in a row, as `key` says).
        count: u32,
        /// The configured limit.
        limit: u32,
        /// Which limit: `max_nonfinite_steps` or `max_nonfinite_in_a_row`.
        key: &'static str,
        /// The last offending step.
        step: u64,
        /// The skipped steps in a row up to `step`, with their image ids.
        streak: Vec<crate::observer::SkippedBatch>,
    },
    /// A step ran out of memory (on the GPU, usually): the error says what to lower.
    #[error(
        "out of memory at step {step} on {device} with batch_size {batch_size}{} (images \
         {image_ids:?}): {message}. Lower `batch_size` (and raise `grad_accumulation` to keep the \
         effective batch) or the crop size (`crop.height` / `crop.width` of the augmentations){}",
        padded_size.map(|(h, w)| format!(" of {h}×{w} images")).unwrap_or_default(),
        if *mixed_precision { "" } else { ", or turn on `mixed_precision` (CUDA)" }
    )]
    OutOfMemory {
        /// The 1-based step.
        step: u64,
        /// The model's device.
        device: String,
        /// Images per forward pass (`batch_size`).
        batch_size: usize,
        /// The padded `(height, width)` of the batch's images, when the data source knows it.
        padded_size: Option<(usize, usize)>,
        /// Whether float16 autocast was on.
        mixed_precision: bool,
        /// The batch's image ids.
        image_ids: Vec<String>,
        /// libtorch's message.
        message: String,
    },
    /// The data source has fewer samples than one (accumulated) batch.
    #[error("the training data has {samples} samples, fewer than one step of {needed}")]
    NotEnoughData {
        /// Samples in the data source.
        samples: usize,
        /// `batch_size × world size × grad_accumulation`.
        needed: usize,
    },
    /// A collective of the data-parallel group failed (a peer died, timed out or disagreed).
    #[error(transparent)]
    Dist(#[from] cellseg_dist::Error),
    /// Another rank of the group failed; this one stops with it instead of waiting.
    #[error("rank {rank} of {world} failed ({what}); rank {this} stops too: {message}")]
    Peer {
        /// The rank that failed first.
        rank: usize,
        /// The group size.
        world: usize,
        /// This process's rank.
        this: usize,
        /// What it was doing (`starting the run`, `writing a checkpoint`, …).
        what: &'static str,
        /// Its error, or what is known of it on this rank.
        message: String,
    },
    /// A run is resumed with another number of processes than it was written with: the data
    /// positions (each rank's shard of every epoch) would not be the same.
    #[error(
        "{path}: the run was trained by {saved} process(es); resuming it with {now} would change \
         the data order — resume with --nproc-per-node / WORLD_SIZE = {saved}"
    )]
    WorldSize {
        /// The checkpoint's `state.json`.
        path: PathBuf,
        /// The world size the checkpoint was written with.
        saved: usize,
        /// This group's world size.
        now: usize,
    },
    /// The loss/validation plot could not be drawn.
    #[error("drawing plot {path}: {message}")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What plotters reported.
        message: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
