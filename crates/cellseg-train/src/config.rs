//! The training configuration (`configs/train.toml`).
//!
//! Every key has a default. Where the value comes from the seed solution, the field's doc cites
//! `SEED.md` (the inventory of TheoViel/kaggle_sartorius); other values are cellseg's own choices.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The run-level training configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// File format version; bump when a field changes meaning.
    pub version: u32,
    /// Where checkpoints, `metrics.jsonl`, `curves.png` and `config.resolved.toml` go.
    pub run_dir: PathBuf,
    /// Seed of everything random: `tch::manual_seed` per step, the data order, augmentations.
    /// SEED.md §3.1: `seed=42`.
    pub seed: u64,
    /// Passes over the training data. SEED.md §3.2: `epochs = 10 × batch_size` (40 for bs 4).
    pub epochs: u32,
    /// Images per forward pass. SEED.md §3.1: `BATCH_SIZES["maskrcnn"]["resnet50"] = 4`.
    pub batch_size: usize,
    /// Forward/backward passes per optimizer step (the seed has none: 1).
    pub grad_accumulation: usize,
    /// Autocast (float16) with dynamic loss scaling on CUDA; ignored with a warning on the CPU.
    /// The seed never used mixed precision (SEED.md §3.3).
    pub mixed_precision: bool,
    /// How many steps with a non-finite loss or gradient are skipped and tolerated in the whole
    /// run; the next one stops it with an error naming the step and its images (ours).
    pub max_nonfinite_steps: u32,
    /// How many such steps in a row are tolerated; the next one stops the run with an error
    /// naming each of them and their images (ours: a streak means the model has diverged, not
    /// that one batch is bad).
    pub max_nonfinite_in_a_row: u32,
    /// Optimizer and its parameter groups.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// How the model's named losses are combined.
    pub loss: LossConfig,
    /// When validation runs.
    pub eval: EvalConfig,
    /// When and how checkpoints are written.
    pub checkpoint: CheckpointConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            version: 1,
            run_dir: PathBuf::from("runs/train"),
            seed: 42,
            epochs: 40,
            batch_size: 4,
            grad_accumulation: 1,
            mixed_precision: false,
            max_nonfinite_steps: 10,
            max_nonfinite_in_a_row: 3,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            loss: LossConfig::default(),
            eval: EvalConfig::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }
}

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay (`torch.optim.AdamW`, non-amsgrad).
    Adamw,
    /// SGD with optional (Nesterov) momentum and L2 weight decay (`torch.optim.SGD`).
    Sgd,
}

/// The optimizer and its parameter groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// SEED.md §3.1: `optimizer="AdamW"`.
    pub kind: OptimizerKind,
    /// Peak learning rate. SEED.md §3.1: `lr=2e-4` (finetuning; LIVECell pretraining 3e-4, §3.6).
    pub lr: f64,
    /// Weight decay of the decaying group. SEED.md §3.1: `weight_decay=0.01`.
    pub weight_decay: f64,
    /// Reproduce the seed's bug: its `fit()` was called without `weight_decay`, so no parameter
    /// was ever decayed (SEED.md §9.12). Off by default: cellseg applies `weight_decay`.
    pub seed_ignores_weight_decay: bool,
    /// Parameters whose name contains one of these substrings get no weight decay.
    /// SEED.md §3.3: `bias`, `LayerNorm.weight`, `absolute_pos_embed`,
    /// `relative_position_bias_table`, `norm`, `bn`.
    pub no_decay: Vec<String>,
    /// Clip the global L2 norm of all gradients to this value (`None` or 0: no clipping).
    /// SEED.md §3.3: `clip_grad_norm_(params, 10.)`.
    pub clip_grad_norm: Option<f64>,
    /// AdamW settings.
    pub adamw: AdamwConfig,
    /// SGD settings.
    pub sgd: SgdConfig,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adamw,
            lr: 2e-4,
            weight_decay: 0.01,
            seed_ignores_weight_decay: false,
            no_decay: [
                "bias",
                "LayerNorm.weight",
                "absolute_pos_embed",
                "relative_position_bias_table",
                "norm",
                "bn",
            ]
            .map(String::from)
            .to_vec(),
            clip_grad_norm: Some(10.0),
            adamw: AdamwConfig::default(),
            sgd: SgdConfig::default(),
        }
    }
}

impl OptimizerConfig {
    /// The weight decay actually applied to the decaying group.
    pub fn effective_weight_decay(&self) -> f64 {
        if self.seed_ignores_weight_decay { 0.0 } else { self.weight_decay }
    }
}

/// AdamW hyper-parameters (torch defaults, which the seed kept: SEED.md §3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamwConfig {
    /// `(beta1, beta2)`; torch default `(0.9, 0.999)`.
    pub betas: [f64; 2],
    /// Added to the denominator; torch default `1e-8`.
    pub eps: f64,
}

impl Default for AdamwConfig {
    fn default() -> Self {
        Self { betas: [0.9, 0.999], eps: 1e-8 }
    }
}

/// SGD hyper-parameters (torch semantics; the seed did not use SGD).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    /// Momentum factor (mmdet's usual 0.9).
    pub momentum: f64,
    /// Dampening of the momentum (torch default 0).
    pub dampening: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening = 0`).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { momentum: 0.9, dampening: 0.0, nesterov: false }
    }
}

/// The shape of the learning-rate curve after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Linear warm-up from 0, then linear decay to 0 (transformers'
    /// `get_linear_schedule_with_warmup`; SEED.md §3.3 `scheduler="linear"`).
    Linear,
    /// Linear warm-up from 0, then half a cosine to 0 (transformers'
    /// `get_cosine_schedule_with_warmup`).
    Cosine,
    /// Linear warm-up from 0, then constant.
    Constant,
}

/// How the schedule's total number of steps is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleHorizon {
    /// The seed's `T = (samples · epochs) // (batch_size · grad_accumulation)` (SEED.md §3.3). With
    /// `drop_last` the run makes slightly fewer steps, so the LR ends just above 0.
    Seed,
    /// The number of optimizer steps the run really makes, so the LR reaches 0 at the end.
    Steps,
}

/// The learning-rate schedule, stepped after every optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// SEED.md §3.1: `scheduler="linear"`.
    pub kind: ScheduleKind,
    /// Warm-up steps as a fraction of the horizon, truncated: `int(warmup_prop · T)`.
    /// SEED.md §3.1: `warmup_prop=0.05`.
    pub warmup_prop: f64,
    /// SEED.md §3.3: the seed's formula.
    pub horizon: ScheduleHorizon,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self { kind: ScheduleKind::Linear, warmup_prop: 0.05, horizon: ScheduleHorizon::Seed }
    }
}

/// How the model's named losses become one scalar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// The seed's loss-weight decay over epochs, normalised by the sum of weights (SEED.md §3.4);
    /// `false` is mmdet's plain sum of every loss whose name contains `loss`. SEED.md §3.1:
    /// `loss_decay=True` for finetuning (`False` for LIVECell pretraining, §3.6).
    pub decay: bool,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self { decay: true }
    }
}

/// When validation runs (SEED.md §3.5:
/// `do_eval = (epoch >= first_epoch and epoch % every_epochs == 0) or epoch == epochs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// SEED.md §3.1: `first_epoch_eval=5`.
    pub first_epoch: u32,
    /// SEED.md §3.1: `verbose_eval=5`.
    pub every_epochs: u32,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { first_epoch: 5, every_epochs: 5 }
    }
}

impl EvalConfig {
    /// Whether validation runs after 1-based `epoch` of `epochs`.
    pub fn due(&self, epoch: u32, epochs: u32) -> bool {
        (epoch >= self.first_epoch && self.every_epochs > 0 && epoch % self.every_epochs == 0)
            || epoch == epochs
    }
}

/// When checkpoints are written (ours; the seed saved only at evaluation epochs and at the end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Write a checkpoint after every this many epochs (0: only at the end).
    pub every_epochs: u32,
    /// Also write one every this many optimizer steps (0: never), for long epochs.
    pub every_steps: u64,
    /// How many regular checkpoints to keep (the best one is always kept in addition).
    pub keep_last: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self { every_epochs: 1, every_steps: 0, keep_last: 2 }
    }
}

impl TrainConfig {
    /// Reads `path` (strict: unknown keys and wrong types are errors naming the key and the file)
    /// and validates it.
    ///
    /// # Errors
    /// [`Error::Core`] for unreadable or ill-typed files, [`Error::InvalidConfig`] for bad values.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let cfg: Self = cellseg_core::config::load_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML, defaults filled in (written as `config.resolved.toml`).
    ///
    /// # Errors
    /// Never in practice (every field is representable); kept fallible for safety.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::InvalidConfig {
            key: "<root>".into(),
            message: format!("cannot be serialised: {e}"),
        })
    }

    /// Checks value ranges and consistency.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first offending key.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, message: String| Err(Error::InvalidConfig { key: key.into(), message });
        if self.version != 1 {
            return bad("version", format!("is {}, this build reads version 1", self.version));
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.grad_accumulation == 0 {
            return bad("grad_accumulation", "must be at least 1".into());
        }
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad("optimizer.lr", format!("must be positive, got {}", o.lr));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return bad("optimizer.weight_decay", format!("must be >= 0, got {}", o.weight_decay));
        }
        if let Some(c) = o.clip_grad_norm {
            if !(c.is_finite() && c >= 0.0) {
                return bad("optimizer.clip_grad_norm", format!("must be >= 0, got {c}"));
            }
        }
        for (i, b) in o.adamw.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return bad(
                    "optimizer.adamw.betas",
                    format!("beta{} must lie in [0, 1), got {b}", i + 1),
                );
            }
        }
        if !(o.adamw.eps.is_finite() && o.adamw.eps > 0.0) {
            return bad("optimizer.adamw.eps", format!("must be positive, got {}", o.adamw.eps));
        }
        let s = &o.sgd;
        if !(s.momentum.is_finite() && s.momentum >= 0.0) {
            return bad("optimizer.sgd.momentum", format!("must be >= 0, got {}", s.momentum));
        }
        if !(s.dampening.is_finite() && s.dampening >= 0.0) {
            return bad("optimizer.sgd.dampening", format!("must be >= 0, got {}", s.dampening));
        }
        if s.nesterov && (s.momentum <= 0.0 || s.dampening != 0.0) {
            return bad("optimizer.sgd.nesterov", "needs momentum > 0 and dampening = 0".into());
        }
        if !(0.0..=1.0).contains(&self.schedule.warmup_prop) {
            return bad(
                "schedule.warmup_prop",
                format!("must lie in [0, 1], got {}", self.schedule.warmup_prop),
            );
        }
        if self.checkpoint.keep_last == 0 {
            return bad("checkpoint.keep_last", "must be at least 1 (resume needs one)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let cfg: TrainConfig = cellseg_core::config::parse_toml("", "t.toml").unwrap();
        assert_eq!(cfg, TrainConfig::default());
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let err = cellseg_core::config::parse_toml::<TrainConfig>(
            "[optimizer]\nlearning_rate = 1e-3\n",
            "configs/bad.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("learning_rate") && err.contains("configs/bad.toml"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key_and_the_file() {
        let err = cellseg_core::config::parse_toml::<TrainConfig>("epochs = \"forty\"", "x/t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochs") && err.contains("x/t.toml"), "{err}");
    }

    #[test]
    fn load_names_the_file_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.toml");
        std::fs::write(&path, "[schedule]\nkind = \"cosine\"\nwarmup = 3\n").unwrap();
        let err = TrainConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("warmup") && err.contains("train.toml"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut cfg = TrainConfig::default();
        cfg.optimizer.sgd.nesterov = true;
        cfg.optimizer.sgd.momentum = 0.0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("optimizer.sgd.nesterov"), "{err}");
        let cfg = TrainConfig { batch_size: 0, ..TrainConfig::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("batch_size"));
    }

    #[test]
    fn resolved_toml_round_trips() {
        let cfg = TrainConfig::default();
        let text = cfg.to_toml().unwrap();
        let back: TrainConfig = cellseg_core::config::parse_toml(&text, "r.toml").unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn eval_schedule_follows_the_seed() {
        let e = EvalConfig::default();
        let due: Vec<u32> = (1..=12).filter(|&ep| e.due(ep, 12)).collect();
        assert_eq!(due, vec![5, 10, 12]);
    }

    #[test]
    fn committed_train_toml_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/train.toml");
        TrainConfig::load(&path).unwrap();
    }
}
