//! The training loop, generic over the model, the data and the validation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cellseg_dist::ProcessGroup;

use tch::{Tensor, nn};

use crate::checkpoint::{
    BestRecord, CheckpointStore, LossScale, STATE_FORMAT, TrainState, named_variables,
};
use crate::config::TrainConfig;
use crate::data_parallel::Ranks;
use crate::error::HookError;
use crate::losses::{LossWeighting, Losses};
use crate::metrics_log::{MetricsLog, Record};
use crate::observer::{
    EvalRecord, EvalReport, NonFiniteStep, RunPlan, SkippedBatch, StepStats, TrainObserver,
};
use crate::optim::{Optimizer, clip_grad_norm};
use crate::sampler::{ALGORITHM, STREAM_DATA, STREAM_TORCH, epoch_order, mix};
use crate::schedule::LrSchedule;
use crate::{Error, Result};

/// A model the engine can train: it owns its variables and turns a batch into named losses.
pub trait TrainableModel {
    /// What [`TrainData::batch`] builds for it.
    type Batch;

    /// The model's variables (trainable ones are optimised; all are checkpointed).
    fn var_store(&self) -> &nn::VarStore;

    /// The named losses of `batch` in training mode (mmdet names: `loss_rpn_cls`, `loss_cls`, …).
    ///
    /// # Errors
    /// Any error of the model; the engine reports it with the step and the batch's image ids.
    fn losses(&mut self, batch: &Self::Batch) -> std::result::Result<Losses, HookError>;

    /// Called at the start of each 1-based epoch (the seed re-applies `freeze_bn` there).
    fn on_epoch_start(&mut self, _epoch: u32) {}

    /// A TOML description of the model from which it can be rebuilt, written by the engine as
    /// [`MODEL_CARD_FILE`] in the run folder of a fresh run (none by default).
    ///
    /// # Errors
    /// When the description cannot be serialised.
    fn description(&self) -> std::result::Result<Option<String>, HookError> {
        Ok(None)
    }
}

/// The model description in a run folder ([`TrainableModel::description`]).
pub const MODEL_CARD_FILE: &str = "model.toml";

/// The training samples: the engine chooses the order, the data source builds the batches.
pub trait TrainData {
    /// The batch type the model consumes.
    type Batch;

    /// Number of samples (images) in one epoch.
    fn len(&self) -> usize;

    /// Whether there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The image ids of samples `indices` (reported with non-finite losses and model errors).
    fn image_ids(&self, indices: &[usize]) -> Vec<String>;

    /// Builds the batch of samples `indices`. `seed` is a deterministic function of the run seed
    /// and the batch position: use it for every random augmentation so that a resumed run sees
    /// the same crops.
    ///
    /// # Errors
    /// Any error of the data source (a missing image, …).
    fn batch(
        &mut self,
        indices: &[usize],
        seed: u64,
    ) -> std::result::Result<Self::Batch, HookError>;

    /// The `(height, width)` that `batch`'s images are padded to, for the error that a step ran
    /// out of memory (unknown by default).
    fn padded_size(&self, _batch: &Self::Batch) -> Option<(usize, usize)> {
        None
    }
}

/// The libtorch message of an error whose chain says that memory ran out.
fn out_of_memory_message(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if cellseg_heads::libtorch::is_out_of_memory(&text) {
            return Some(text.lines().next().unwrap_or_default().to_string());
        }
        next = e.source();
    }
    None
}

/// Validation during training (the competition metric, overall and per cell type).
pub trait Validator<M: ?Sized> {
    /// Scores `model` on the validation images (the model's own inference path, no gradients).
    ///
    /// # Errors
    /// Any error of the validation.
    fn validate(&mut self, model: &mut M) -> std::result::Result<EvalReport, HookError>;

    /// [`Self::validate`] by the ranks of `group` together, every rank returning the same report
    /// (each scores its share of the images and the parts are gathered). By default every rank
    /// validates every image: the same report, without the speed-up.
    ///
    /// # Errors
    /// Any error of the validation, or of the group.
    fn validate_sharded(
        &mut self,
        model: &mut M,
        group: &ProcessGroup,
    ) -> std::result::Result<EvalReport, HookError> {
        let _ = group;
        self.validate(model)
    }
}

/// How [`Trainer::fit`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run; fails if `run_dir` already holds one.
    Fresh,
    /// Continue the run in `run_dir` exactly where its latest checkpoint stopped.
    Resume,
}

/// The outcome of [`Trainer::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Optimizer steps done in total (resumed steps included).
    pub steps: u64,
    /// Epochs completed.
    pub epochs_done: u32,
    /// Whether the observer stopped the run before the end.
    pub stopped_early: bool,
    /// Steps skipped for a non-finite loss or gradient.
    pub nonfinite_steps: u32,
    /// The last step's combined loss.
    pub last_loss: Option<f64>,
    /// The best validation result.
    pub best: Option<BestRecord>,
    /// The checkpoint a resumed run started from (after passing over unreadable newer ones).
    pub resumed_from: Option<PathBuf>,
    /// The last checkpoint folder.
    pub last_checkpoint: Option<PathBuf>,
    /// The best checkpoint folder.
    pub best_checkpoint: Option<PathBuf>,
    /// The JSON-lines metrics log.
    pub metrics_log: PathBuf,
    /// The PNG of the curves.
    pub curves: PathBuf,
}

/// The training engine of one run (SEED.md §3 recipe by default).
#[derive(Debug, Clone)]
pub struct Trainer {
    cfg: TrainConfig,
    /// The whole config of the run (`with_resolved_config`), written as `config.resolved.toml`.
    resolved: Option<String>,
    /// The data-parallel group (`with_group`); one process by default.
    ranks: Ranks,
}

/// The mutable position of a run.
struct Position {
    step: u64,
    epoch: u32,
    batch_in_epoch: u64,
    nonfinite: u32,
    /// The skipped steps since the last completed one.
    streak: Vec<SkippedBatch>,
    best: Option<BestRecord>,
    loss_scale: Option<LossScale>,
}

/// What one optimizer step produced.
enum StepOutcome {
    Done(StepStats),
    Skipped(NonFiniteStep),
}

impl Trainer {
    /// A trainer for `cfg`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the config does not validate.
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg, resolved: None, ranks: Ranks::new(Arc::new(ProcessGroup::single())) })
    }

    /// Trains data-parallel over the ranks of `group` (see [`crate::data_parallel`]): every rank
    /// calls [`Self::fit`] with the same config, an equal model and the same data; `batch_size`
    /// is per rank. One rank (the default) is the plain one-process run.
    pub fn with_group(mut self, group: Arc<ProcessGroup>) -> Self {
        self.ranks = Ranks::new(group);
        self
    }

    /// Records `toml` (the whole config the run was made with: data, fold, model, augmentations,
    /// post-processing, and this `[train]`) as the new run's `config.resolved.toml`, instead of
    /// this `[train]` alone, so that a run folder says how it was made.
    pub fn with_resolved_config(mut self, toml: String) -> Self {
        self.resolved = Some(toml);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Trains `model` on `data`, validating with `validator` on the seed's schedule, writing
    /// checkpoints, `metrics.jsonl` and `curves.png` into `run_dir`.
    ///
    /// # Errors
    /// Config, I/O and checkpoint errors naming the file; hook errors with the step; too many
    /// non-finite steps ([`Error::TooManyNonFinite`]).
    #[tracing::instrument(level = "info", skip_all, fields(run_dir = %self.cfg.run_dir.display()))]
    pub fn fit<M, D>(
        &self,
        model: &mut M,
        data: &mut D,
        mut validator: Option<&mut dyn Validator<M>>,
        observer: &mut dyn TrainObserver,
        start: Start,
    ) -> Result<TrainReport>
    where
        M: TrainableModel,
        D: TrainData<Batch = M::Batch>,
    {
        let cfg = &self.cfg;
        let store = CheckpointStore::new(&cfg.run_dir);
        let metrics_path = cfg.run_dir.join("metrics.jsonl");
        let curves_path = cfg.run_dir.join("curves.png");
        let device = model.var_store().device();
        let amp = cfg.mixed_precision && device.is_cuda();
        if cfg.mixed_precision && !amp {
            tracing::warn!(?device, "mixed_precision needs CUDA; training in float32");
        }

        let params = Optimizer::trainable(model.var_store());
        let param_tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
        let trainable_scalars: i64 = params.iter().map(|(_, t)| t.numel() as i64).sum();
        if params.is_empty() {
            return Err(Error::InvalidConfig {
                key: "model".into(),
                message: "has no trainable variable".into(),
            });
        }
        let mut optimizer = Optimizer::new(&cfg.optimizer, params);

        let ranks = &self.ranks;
        let n = data.len();
        // The global batch: `batch_size` per rank.
        let global_batch = cfg.batch_size * ranks.world();
        let per_step = global_batch * cfg.grad_accumulation;
        if n < per_step {
            return Err(Error::NotEnoughData { samples: n, needed: per_step });
        }
        let accum = cfg.grad_accumulation as u64;
        let steps_per_epoch = (n / global_batch) as u64 / accum;
        let micro_per_epoch = steps_per_epoch * accum;
        let total_steps = steps_per_epoch * u64::from(cfg.epochs);
        let horizon =
            LrSchedule::horizon(cfg.schedule.horizon, n, cfg.epochs, per_step, steps_per_epoch);
        let schedule = LrSchedule::new(&cfg.schedule, cfg.optimizer.lr, horizon);

        let mut pos = Position {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            nonfinite: 0,
            streak: Vec::new(),
            best: None,
            loss_scale: amp.then(LossScale::default),
        };
        let mut resumed_from = None;
        // Rank 0 alone writes the run folder; every rank reads a checkpoint to resume from.
        let opened = match start {
            Start::Fresh if ranks.is_main() => {
                self.start_fresh(model, &store, &metrics_path).map(Some)
            }
            Start::Fresh => Ok(None),
            Start::Resume => (|| {
                let ckpt = store.load_resumable(model.var_store())?;
                let state_path = ckpt.dir.join(crate::checkpoint::STATE_FILE);
                check_resumable(cfg, &ckpt.state, &state_path, ranks.world())?;
                optimizer.load_state(
                    ckpt.optimizer,
                    &ckpt.state.optimizer_steps,
                    &ckpt.dir.join(crate::checkpoint::OPTIMIZER_FILE),
                )?;
                let s = ckpt.state;
                pos = Position {
                    step: s.step,
                    epoch: s.epoch,
                    batch_in_epoch: s.batch_in_epoch,
                    nonfinite: s.nonfinite_steps,
                    streak: s.nonfinite_streak,
                    best: s.best,
                    loss_scale: if amp { Some(s.loss_scale.unwrap_or_default()) } else { None },
                };
                tracing::info!(dir = %ckpt.dir.display(), step = pos.step, epoch = pos.epoch + 1, passed_over = ckpt.skipped.len(), "resuming");
                resumed_from = Some(ckpt.dir);
                if ranks.is_main() {
                    MetricsLog::resume(&metrics_path, pos.step).map(Some)
                } else {
                    Ok(None)
                }
            })(),
        };
        let mut log = ranks.agree("starting the run", opened)?;
        ranks.broadcast_variables(model.var_store())?;

        let plan = RunPlan {
            total_steps,
            steps_per_epoch,
            epochs: cfg.epochs,
            start_step: pos.step,
            schedule_steps: horizon,
            warmup_steps: schedule.warmup_steps,
            trainable_tensors: optimizer.len(),
            trainable_scalars,
        };
        tracing::info!(
            total_steps,
            steps_per_epoch,
            horizon,
            warmup = schedule.warmup_steps,
            params = trainable_scalars,
            samples = n,
            "training"
        );
        observer.on_start(&plan);

        let started = Instant::now();
        let mut report = TrainReport {
            steps: pos.step,
            epochs_done: pos.epoch,
            stopped_early: false,
            nonfinite_steps: pos.nonfinite,
            last_loss: None,
            best: pos.best.clone(),
            last_checkpoint: resumed_from.clone(),
            resumed_from,
            best_checkpoint: store.best_dir().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unreadable best.json; the next best score rewrites it");
                None
            }),
            metrics_log: metrics_path.clone(),
            curves: curves_path.clone(),
        };

        while pos.epoch < cfg.epochs {
            let epoch = pos.epoch;
            let _span = tracing::info_span!("epoch", epoch = epoch + 1).entered();
            model.on_epoch_start(epoch + 1);
            let weighting = LossWeighting::for_epoch(cfg.loss.decay, epoch + 1, cfg.epochs);
            let order = epoch_order(cfg.seed, epoch, n);
            while pos.batch_in_epoch < micro_per_epoch {
                let ctx = StepContext {
                    cfg,
                    ranks,
                    order: &order,
                    micro_per_epoch,
                    weighting,
                    amp,
                    schedule: &schedule,
                    total_steps,
                    started,
                };
                let outcome =
                    ctx.run_step(model, data, &param_tensors, &mut optimizer, &mut pos)?;
                match outcome {
                    StepOutcome::Done(stats) => {
                        pos.streak.clear();
                        report.last_loss = Some(stats.loss);
                        observer.on_step(&stats);
                        append(&mut log, Record::Step(stats))?;
                    }
                    StepOutcome::Skipped(skipped) => {
                        tracing::warn!(
                            step = skipped.step, what = %skipped.what, value = skipped.value,
                            image_ids = ?skipped.image_ids, count = skipped.count,
                            in_a_row = skipped.in_a_row, "non-finite step skipped"
                        );
                        observer.on_nonfinite(&skipped);
                        let limit = if skipped.in_a_row > cfg.max_nonfinite_in_a_row {
                            Some((
                                "max_nonfinite_in_a_row",
                                skipped.in_a_row,
                                cfg.max_nonfinite_in_a_row,
                            ))
                        } else if skipped.count > cfg.max_nonfinite_steps {
                            Some(("max_nonfinite_steps", skipped.count, cfg.max_nonfinite_steps))
                        } else {
                            None
                        };
                        let step = skipped.step;
                        append(&mut log, Record::NonFinite(skipped))?;
                        if let Some((key, count, limit)) = limit {
                            return Err(Error::TooManyNonFinite {
                                count,
                                limit,
                                key,
                                step,
                                streak: pos.streak.clone(),
                            });
                        }
                    }
                }
                report.steps = pos.step;
                report.nonfinite_steps = pos.nonfinite;
                let periodic = cfg.checkpoint.every_steps > 0
                    && pos.step % cfg.checkpoint.every_steps == 0
                    && pos.batch_in_epoch < micro_per_epoch;
                // Any rank's observer stops every rank.
                let stop = ranks.any(observer.should_stop())?;
                if periodic || stop {
                    let dir =
                        self.save(&store, model, &optimizer, &schedule, &pos, None, observer)?;
                    report.last_checkpoint = Some(dir);
                }
                if stop {
                    tracing::info!(step = pos.step, "stopped by the observer");
                    report.stopped_early = true;
                    self.plot(log.as_ref(), &curves_path);
                    observer.on_end(&report);
                    return Ok(report);
                }
            }

            // End of the epoch: validation, checkpoint, curves.
            pos.epoch += 1;
            pos.batch_in_epoch = 0;
            report.epochs_done = pos.epoch;
            let done = epoch + 1;
            let mut best_score = None;
            if let Some(v) = validator.as_deref_mut().filter(|_| cfg.eval.due(done, cfg.epochs)) {
                let _span = tracing::info_span!("validation").entered();
                let eval = if ranks.is_parallel() {
                    v.validate_sharded(model, ranks.group())
                } else {
                    v.validate(model)
                };
                let eval = eval.map_err(|source| Error::Validation { epoch: done, source });
                let eval = ranks.agree("validating", eval)?;
                let is_best = eval.score.is_finite()
                    && pos.best.as_ref().is_none_or(|b| eval.score > b.score);
                if is_best {
                    pos.best = Some(BestRecord { step: pos.step, epoch: done, score: eval.score });
                    best_score = Some(eval.score);
                    report.best = pos.best.clone();
                }
                tracing::info!(epoch = done, score = eval.score, per_type = ?eval.per_type, is_best, "validation");
                let record = EvalRecord { step: pos.step, epoch: done, report: eval, is_best };
                observer.on_eval(&record);
                append(&mut log, Record::Eval(record))?;
            }
            let every = cfg.checkpoint.every_epochs;
            let regular = (every > 0 && done % every == 0) || done == cfg.epochs;
            if regular || best_score.is_some() {
                let dir =
                    self.save(&store, model, &optimizer, &schedule, &pos, best_score, observer)?;
                if best_score.is_some() {
                    report.best_checkpoint = Some(dir.clone());
                }
                report.last_checkpoint = Some(dir);
            }
            self.plot(log.as_ref(), &curves_path);
        }
        tracing::info!(steps = pos.step, best = ?pos.best, "training finished");
        observer.on_end(&report);
        Ok(report)
    }

    /// A new run folder: `config.resolved.toml`, the model card, an empty `metrics.jsonl`.
    fn start_fresh<M: TrainableModel>(
        &self,
        model: &M,
        store: &CheckpointStore,
        metrics_path: &std::path::Path,
    ) -> Result<MetricsLog> {
        let cfg = &self.cfg;
        if store.has_latest() {
            return Err(Error::RunExists { path: cfg.run_dir.clone() });
        }
        store.create_run_dir()?;
        let resolved = match &self.resolved {
            Some(t) => t.clone(),
            None => cfg.to_toml()?,
        };
        crate::checkpoint::write_atomic(
            &cfg.run_dir.join("config.resolved.toml"),
            resolved.as_bytes(),
        )?;
        let card_path = cfg.run_dir.join(MODEL_CARD_FILE);
        let card = model
            .description()
            .map_err(|source| Error::Describe { path: card_path.clone(), source })?;
        if let Some(card) = card {
            crate::checkpoint::write_atomic(&card_path, card.as_bytes())?;
        }
        MetricsLog::create(metrics_path)
    }

    /// Writes a checkpoint of the current position (rank 0; the others wait for it and return
    /// the folder it wrote).
    #[allow(clippy::too_many_arguments)]
    fn save<M: TrainableModel>(
        &self,
        store: &CheckpointStore,
        model: &M,
        optimizer: &Optimizer,
        schedule: &LrSchedule,
        pos: &Position,
        best_score: Option<f64>,
        observer: &mut dyn TrainObserver,
    ) -> Result<PathBuf> {
        let ranks = &self.ranks;
        let saved = if ranks.is_main() {
            let (state, moments) = self.state(optimizer, schedule, pos);
            let weights = named_variables(model.var_store());
            let keep = self.cfg.checkpoint.keep_last;
            store.save(&weights, &moments, &state, best_score, keep).map(Some)
        } else {
            Ok(None)
        };
        let dir = match ranks.agree("writing a checkpoint", saved)? {
            Some(dir) => dir,
            None => store
                .latest_dir()?
                .ok_or_else(|| Error::NoCheckpoint { path: store.run_dir().to_path_buf() })?,
        };
        observer.on_checkpoint(&dir, pos.step);
        Ok(dir)
    }

    /// The `state.json` of the current position, and the optimizer moments to save with it.
    fn state(
        &self,
        optimizer: &Optimizer,
        schedule: &LrSchedule,
        pos: &Position,
    ) -> (TrainState, Vec<(String, Tensor)>) {
        let (moments, optimizer_steps) = optimizer.state();
        let state = TrainState {
            format: STATE_FORMAT,
            step: pos.step,
            epoch: pos.epoch,
            batch_in_epoch: pos.batch_in_epoch,
            schedule: *schedule,
            rng_algorithm: ALGORITHM.into(),
            optimizer_steps,
            loss_scale: pos.loss_scale.clone(),
            nonfinite_steps: pos.nonfinite,
            nonfinite_streak: pos.streak.clone(),
            best: pos.best.clone(),
            config: self.cfg.clone(),
            world_size: self.ranks.world(),
            checksums: BTreeMap::new(),
        };
        (state, moments)
    }

    /// Redraws `curves.png` (rank 0, which holds the log); a failure is logged, never fatal to
    /// the run.
    fn plot(&self, log: Option<&MetricsLog>, path: &std::path::Path) {
        let Some(log) = log else { return };
        if let Err(e) = crate::plot::write_curves(log.records(), path) {
            tracing::warn!(error = %e, "could not write the curves");
        }
    }
}

/// Appends `record` to the log of rank 0 (the other ranks have none).
fn append(log: &mut Option<MetricsLog>, record: Record) -> Result<()> {
    match log {
        Some(log) => log.append(record),
        None => Ok(()),
    }
}

/// A resumed run must see the same data positions: the fields that define them must not change.
fn check_resumable(
    cfg: &TrainConfig,
    state: &TrainState,
    path: &std::path::Path,
    world_size: usize,
) -> Result<()> {
    if state.world_size != world_size {
        return Err(Error::WorldSize {
            path: path.to_path_buf(),
            saved: state.world_size,
            now: world_size,
        });
    }
    let saved = &state.config;
    let fixed = [
        ("seed", saved.seed == cfg.seed),
        ("batch_size", saved.batch_size == cfg.batch_size),
        ("grad_accumulation", saved.grad_accumulation == cfg.grad_accumulation),
        ("optimizer.kind", saved.optimizer.kind == cfg.optimizer.kind),
    ];
    if let Some((key, _)) = fixed.iter().find(|(_, same)| !same) {
        return Err(Error::CheckpointState {
            path: path.to_path_buf(),
            message: format!(
                "the checkpoint was written with another `{key}`; resume needs the same"
            ),
        });
    }
    if state.rng_algorithm != ALGORITHM {
        return Err(Error::CheckpointState {
            path: path.to_path_buf(),
            message: format!(
                "data order `{}` is not this build's `{ALGORITHM}`",
                state.rng_algorithm
            ),
        });
    }
    let mut a = saved.clone();
    a.run_dir = cfg.run_dir.clone();
    if &a != cfg {
        tracing::warn!(path = %path.display(), "resuming with a config that differs from the checkpoint's");
    }
    Ok(())
}

/// Everything one optimizer step needs besides the mutable state.
struct StepContext<'a> {
    cfg: &'a TrainConfig,
    ranks: &'a Ranks,
    order: &'a [usize],
    micro_per_epoch: u64,
    weighting: LossWeighting,
    amp: bool,
    schedule: &'a LrSchedule,
    total_steps: u64,
    started: Instant,
}

/// What this rank's micro-batches of one step produced.
struct Accumulated {
    grads: Vec<Option<Tensor>>,
    loss_sum: f64,
    named: BTreeMap<String, f64>,
    /// The first non-finite loss.
    bad: Option<(&'static str, f64)>,
    /// The micro-batches that ran (all, or up to the non-finite one).
    run: usize,
}

impl StepContext<'_> {
    /// Runs `grad_accumulation` micro-batches and one optimizer update (or skips it).
    fn run_step<M, D>(
        &self,
        model: &mut M,
        data: &mut D,
        params: &[Tensor],
        optimizer: &mut Optimizer,
        pos: &mut Position,
    ) -> Result<StepOutcome>
    where
        M: TrainableModel,
        D: TrainData<Batch = M::Batch>,
    {
        let cfg = self.cfg;
        let ranks = self.ranks;
        let t0 = Instant::now();
        let step = pos.step; // 0-based index of this optimizer step
        let accum = cfg.grad_accumulation as u64;
        let scale = pos.loss_scale.as_ref().map_or(1.0, |s| s.scale);
        let _span = tracing::debug_span!("step", step = step + 1).entered();
        let global_batch = cfg.batch_size * ranks.world();
        let local = self.accumulate(model, data, params, pos, scale);
        let Accumulated { mut grads, loss_sum, named, mut bad, run } =
            if ranks.is_parallel() { self.combine(local)? } else { local? };
        // The images of the micro-batches that ran (every rank's), for the reports.
        let first = pos.batch_in_epoch as usize * global_batch;
        let image_ids = data.image_ids(&self.order[first..first + run * global_batch]);
        pos.batch_in_epoch += accum;
        let lr = self.schedule.lr(step);
        let mut grad_norm = f64::NAN;
        if bad.is_none() {
            ranks.mean_gradients(&mut grads, params)?;
            if scale != 1.0 {
                let _guard = tch::no_grad_guard();
                for g in grads.iter_mut().flatten() {
                    let _ = g.g_mul_scalar_(1.0 / scale);
                }
            }
            grad_norm = clip_grad_norm(&mut grads, cfg.optimizer.clip_grad_norm);
            let finite = grad_norm.is_finite();
            if let Some(ls) = pos.loss_scale.as_mut() {
                ls.update(finite);
            }
            if finite {
                optimizer.step(&grads, lr);
            } else if pos.loss_scale.is_some() {
                // A float16 overflow: the scaler has backed off; not a data problem.
                tracing::debug!(step = step + 1, scale, "float16 overflow, step skipped");
            } else {
                bad = Some(("grad_norm", grad_norm));
            }
        }
        pos.step += 1;
        if let Some((what, value)) = bad {
            pos.nonfinite += 1;
            pos.streak.push(SkippedBatch { step: pos.step, image_ids: image_ids.clone() });
            return Ok(StepOutcome::Skipped(NonFiniteStep {
                step: pos.step,
                epoch: pos.epoch + 1,
                value,
                what: what.into(),
                image_ids,
                count: pos.nonfinite,
                in_a_row: pos.streak.len() as u32,
            }));
        }
        let dt = t0.elapsed().as_secs_f64();
        let stats = StepStats {
            step: pos.step,
            total_steps: self.total_steps,
            epoch: pos.epoch + 1,
            epochs: cfg.epochs,
            lr,
            loss: loss_sum / accum as f64,
            losses: named,
            grad_norm,
            images_per_s: (global_batch as f64 * accum as f64) / dt.max(1e-9),
            elapsed_s: self.started.elapsed().as_secs_f64(),
        };
        tracing::debug!(step = stats.step, loss = stats.loss, lr, grad_norm, "step");
        Ok(StepOutcome::Done(stats))
    }

    /// This rank's micro-batches of the step at `pos`: their gradients (undefined where a
    /// parameter got none), summed losses, and the first non-finite loss (which ends them).
    fn accumulate<M, D>(
        &self,
        model: &mut M,
        data: &mut D,
        params: &[Tensor],
        pos: &Position,
        scale: f64,
    ) -> Result<Accumulated>
    where
        M: TrainableModel,
        D: TrainData<Batch = M::Batch>,
    {
        let cfg = self.cfg;
        let (rank, world) = (self.ranks.rank(), self.ranks.world());
        let step = pos.step;
        let accum = cfg.grad_accumulation as u64;
        let mut grads: Vec<Option<Tensor>> = params.iter().map(|_| None).collect();
        let mut loss_sum = 0.0;
        let mut named: BTreeMap<String, f64> = BTreeMap::new();
        let mut bad: Option<(&'static str, f64)> = None;
        let device = params[0].device();
        let mut run = 0;
        for k in 0..accum {
            run += 1;
            let mb = pos.batch_in_epoch + k;
            // This rank's share of the global micro-batch `mb`.
            let start = (mb as usize * world + rank) * cfg.batch_size;
            let indices = &self.order[start..start + cfg.batch_size];
            let global = u64::from(pos.epoch) * self.micro_per_epoch + mb;
            // Every random draw of the step is a function of (seed, position, rank): exact
            // resume. One rank draws as the engine always did.
            let stream = global * world as u64 + rank as u64;
            tch::manual_seed(mix(cfg.seed, STREAM_TORCH, stream) as i64);
            let ids = data.image_ids(indices);
            let batch = data
                .batch(indices, mix(cfg.seed, STREAM_DATA, stream))
                .map_err(|source| Error::Data { epoch: pos.epoch + 1, batch: mb, source })?;
            let padded_size = data.padded_size(&batch);
            // Only an error formats anything.
            let out_of_memory = |message: String, image_ids: Vec<String>| Error::OutOfMemory {
                step: step + 1,
                device: format!("{device:?}"),
                batch_size: cfg.batch_size,
                padded_size,
                mixed_precision: self.amp,
                image_ids,
                message,
            };
            let losses = match tch::autocast(self.amp, || model.losses(&batch)) {
                Ok(losses) => losses,
                Err(source) => {
                    return Err(match out_of_memory_message(source.as_ref()) {
                        Some(message) => out_of_memory(message, ids),
                        None => Error::Model { step: step + 1, image_ids: ids, source },
                    });
                }
            };
            let total = self
                .weighting
                .combine(&losses)
                .ok_or_else(|| Error::NoLoss { step: step + 1, names: losses.names() })?;
            // The total and every named loss in one device-to-host copy.
            let read = cellseg_heads::detectors::read_means(
                std::iter::once(&total).chain(losses.iter().map(|(_, t)| t)),
            );
            let value = read[0];
            for ((name, _), v) in losses.iter().zip(&read[1..]) {
                *named.entry(name.to_string()).or_default() += v / accum as f64;
            }
            loss_sum += value;
            if !value.is_finite() {
                bad = Some(("loss", value));
                break;
            }
            let scaled = total * (scale / accum as f64);
            let g = Tensor::f_run_backward(&[&scaled], params, false, false).map_err(|e| {
                match out_of_memory_message(&e) {
                    Some(message) => out_of_memory(message, ids.clone()),
                    None => Error::Tch(e),
                }
            })?;
            for (acc, g) in grads.iter_mut().zip(g) {
                if !g.defined() {
                    continue;
                }
                *acc = Some(match acc.take() {
                    None => g,
                    Some(a) => a + g,
                });
            }
        }
        Ok(Accumulated { grads, loss_sum, named, bad, run })
    }

    /// Every rank's outcome of [`Self::accumulate`]: an error on any rank stops all of them, a
    /// non-finite loss on any rank skips the step on all of them, and the logged losses are the
    /// means over the ranks. The gradients stay this rank's (the caller averages them).
    fn combine(&self, local: Result<Accumulated>) -> Result<Accumulated> {
        let ranks = self.ranks;
        // [failed, non-finite, its value, micro-batches run, number of named losses]
        let head = match &local {
            Err(_) => [1.0, 0.0, 0.0, 0.0, 0.0],
            Ok(a) => [
                0.0,
                f64::from(u8::from(a.bad.is_some())),
                a.bad.map_or(0.0, |(_, v)| v),
                a.run as f64,
                a.named.len() as f64,
            ],
        };
        let all = ranks.gather(&head)?;
        let mut local = local?;
        if let Some(rank) = all.iter().position(|h| h[0] != 0.0) {
            return Err(ranks.peer(rank, "computing its losses", "its log names the error".into()));
        }
        if let Some(h) = all.iter().find(|h| h[1] != 0.0) {
            local.bad = Some(("loss", h[2]));
            local.run = all.iter().map(|h| h[3] as usize).max().unwrap_or(local.run);
            return Ok(local);
        }
        if let Some(rank) = all.iter().position(|h| h[4] != head[4]) {
            return Err(ranks.peer(
                rank,
                "computing its losses",
                format!("{} named losses there, {} here", all[rank][4], head[4]),
            ));
        }
        let mut values: Vec<f64> = vec![local.loss_sum];
        values.extend(local.named.values());
        let mean = ranks.mean_values(&values)?;
        local.loss_sum = mean[0];
        for (v, m) in local.named.values_mut().zip(&mean[1..]) {
            *v = *m;
        }
        Ok(local)
    }
}
