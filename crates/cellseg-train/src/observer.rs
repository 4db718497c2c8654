//! What the training loop reports: per-step statistics, validation results, skipped steps, and the
//! [`TrainObserver`] hooks through which binaries show progress (the library never draws a bar).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Statistics of one optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Optimizer steps done, this one included (1-based).
    pub step: u64,
    /// Steps the whole run makes.
    pub total_steps: u64,
    /// 1-based epoch.
    pub epoch: u32,
    /// Epochs of the run.
    pub epochs: u32,
    /// Learning rate used by this step.
    pub lr: f64,
    /// The combined (weighted) loss, averaged over the accumulated micro-batches.
    pub loss: f64,
    /// Each named loss (mean over its tensor and the micro-batches), unweighted.
    pub losses: BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Images processed per second in this step (data loading included).
    pub images_per_s: f64,
    /// Seconds since this process started training.
    pub elapsed_s: f64,
}

/// What a [`crate::Validator`] measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The score that selects the best checkpoint (higher is better), e.g. the competition mAP.
    pub score: f64,
    /// The score per cell type (`shsy5y`, `astro`, `cort`, …).
    pub per_type: BTreeMap<String, f64>,
    /// Other numbers worth logging (validation loss, counts, …).
    pub extra: BTreeMap<String, f64>,
}

/// A validation result placed in the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Optimizer steps done.
    pub step: u64,
    /// 1-based epoch after which it ran.
    pub epoch: u32,
    /// The measurements.
    pub report: EvalReport,
    /// Whether it is the best score so far (its checkpoint became `best`).
    pub is_best: bool,
}

/// A step skipped because its loss or gradient was not finite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NonFiniteStep {
    /// The step (1-based) that was skipped.
    pub step: u64,
    /// 1-based epoch.
    pub epoch: u32,
    /// The offending value: the loss, or the gradient norm when the loss was finite.
    pub value: f64,
    /// Which one it was (`loss` or `grad_norm`).
    pub what: String,
    /// The image ids of the step's batch(es).
    pub image_ids: Vec<String>,
    /// Skipped steps so far in the run.
    pub count: u32,
    /// Skipped steps in a row, this one included.
    #[serde(default)]
    pub in_a_row: u32,
}

/// A skipped step and its images, as kept for the error that stops a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedBatch {
    /// The step (1-based).
    pub step: u64,
    /// The image ids of its batch(es).
    pub image_ids: Vec<String>,
}

impl std::fmt::Display for SkippedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} images {:?}", self.step, self.image_ids)
    }
}

/// The shape of a run, given to [`TrainObserver::on_start`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    /// Steps the whole run makes.
    pub total_steps: u64,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: u64,
    /// Epochs.
    pub epochs: u32,
    /// Step the run starts from (0, or the resumed position).
    pub start_step: u64,
    /// The schedule horizon `T`.
    pub schedule_steps: u64,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Trainable tensors.
    pub trainable_tensors: usize,
    /// Trainable scalars.
    pub trainable_scalars: i64,
}

/// Hooks the training loop calls; every method has a no-op default and `()` implements it.
///
/// A binary implements it with an `indicatif` progress bar (loss, lr, speed, ETA from
/// [`StepStats`]); tests collect the calls.
pub trait TrainObserver {
    /// Before the first step.
    fn on_start(&mut self, _plan: &RunPlan) {}
    /// After each optimizer step.
    fn on_step(&mut self, _stats: &StepStats) {}
    /// When a step is skipped for a non-finite loss or gradient.
    fn on_nonfinite(&mut self, _step: &NonFiniteStep) {}
    /// After each validation.
    fn on_eval(&mut self, _record: &EvalRecord) {}
    /// After a checkpoint is written.
    fn on_checkpoint(&mut self, _dir: &Path, _step: u64) {}
    /// When the run ends (finished or stopped).
    fn on_end(&mut self, _report: &crate::TrainReport) {}
    /// Asked after every optimizer step: `true` saves a checkpoint and stops the run cleanly
    /// (Ctrl-C handling, time limits). `resume` continues from there.
    fn should_stop(&mut self) -> bool {
        false
    }
}

impl TrainObserver for () {}
