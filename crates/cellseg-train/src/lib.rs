//! The training engine of cellseg: optimizers, schedules, loss weighting, atomic checkpoints with
//! exact resume, validation, metrics log, curves and observer hooks.
//!
//! Needs libtorch (tch). The engine is generic: any model implementing [`TrainableModel`] (named
//! losses from a batch), any [`TrainData`] (samples, image ids, seeded batches) and any
//! [`Validator`] (a score, overall and per cell type) can be trained; the detector adapter
//! ([`detector::Detector`]: Mask R-CNN, Cascade Mask R-CNN, HTC) plugs in the same way.
//!
//! # Brief overview
//! - [`TrainConfig`] (`configs/train.toml`): every default cites the seed's value (SEED.md §3).
//! - [`Trainer::fit`]: the loop. Per step: seeded batch → `losses` → [`LossWeighting`] (plain sum,
//!   or the seed's loss-weight decay normalised by Σw) → gradients (with accumulation, optional
//!   float16 autocast on CUDA) → global-norm clipping → [`Optimizer`] (AdamW with decoupled weight
//!   decay / SGD, per-parameter no-decay groups) at the [`LrSchedule`] learning rate.
//! - [`CheckpointStore`]: safetensors weights and moments + `state.json`, written atomically;
//!   `latest.json` / `best.json` pointers. [`Start::Resume`] continues bit-exactly.
//! - [`TrainObserver`]: `on_step`, `on_eval`, … hooks for progress bars (no-op defaults).
//! - `metrics.jsonl` ([`metrics_log`]) and `curves.png` ([`plot`]) next to the checkpoints.
//!
//! # Example
//! ```no_run
//! use cellseg_train::{HookError, Losses, Start, TrainConfig, TrainData, TrainableModel, Trainer};
//! use tch::{nn, nn::Module, Device, Kind, Tensor};
//!
//! struct Linear { vs: nn::VarStore, lin: nn::Linear }
//! impl TrainableModel for Linear {
//!     type Batch = (Tensor, Tensor);
//!     fn var_store(&self) -> &nn::VarStore { &self.vs }
//!     fn losses(&mut self, (x, y): &Self::Batch) -> Result<Losses, HookError> {
//!         let mut l = Losses::new();
//!         l.push("loss_mask", self.lin.forward(x).mse_loss(y, tch::Reduction::Mean));
//!         Ok(l)
//!     }
//! }
//! struct Points(Tensor, Tensor);
//! impl TrainData for Points {
//!     type Batch = (Tensor, Tensor);
//!     fn len(&self) -> usize { self.0.size()[0] as usize }
//!     fn image_ids(&self, idx: &[usize]) -> Vec<String> { idx.iter().map(|i| i.to_string()).collect() }
//!     fn batch(&mut self, idx: &[usize], _seed: u64) -> Result<Self::Batch, HookError> {
//!         let i = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
//!         Ok((self.0.index_select(0, &i), self.1.index_select(0, &i)))
//!     }
//! }
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let lin = nn::linear(vs.root() / "fc", 3, 1, Default::default());
//! let mut model = Linear { vs, lin };
//! let x = Tensor::randn([64, 3], (Kind::Float, Device::Cpu));
//! let mut data = Points(x.shallow_clone(), x.sum_dim_intlist([1i64].as_slice(), true, Kind::Float));
//! let cfg = TrainConfig { epochs: 3, batch_size: 8, run_dir: "runs/linear".into(), ..Default::default() };
//! let report = Trainer::new(cfg)?.fit(&mut model, &mut data, None, &mut (), Start::Fresh)?;
//! println!("{} steps, last loss {:?}", report.steps, report.last_loss);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data_parallel;
pub mod detector;
pub mod error;
pub mod losses;
pub mod metrics_log;
pub mod observer;
pub mod optim;
pub mod overlay;
pub mod plot;
pub mod pretrained;
pub mod sampler;
pub mod schedule;
pub mod trainer;

pub use checkpoint::{BestRecord, CheckpointStore, TrainState, load_weights};
pub use config::{
    CheckpointConfig, EvalConfig, LossConfig, OptimizerConfig, OptimizerKind, ScheduleConfig,
    ScheduleHorizon, ScheduleKind, TrainConfig,
};
pub use error::{Error, HookError, Result, ShapeMismatch};
pub use losses::{DecayWeights, LossWeighting, Losses};
pub use observer::{
    EvalRecord, EvalReport, NonFiniteStep, RunPlan, SkippedBatch, StepStats, TrainObserver,
};
pub use optim::{Optimizer, clip_grad_norm};
pub use pretrained::{
    PretrainedConfig, PretrainedReport, RunCheckpoint, load_pretrained, resolve_checkpoint_file,
};
pub use schedule::LrSchedule;
pub use trainer::{
    MODEL_CARD_FILE, Start, TrainData, TrainReport, TrainableModel, Trainer, Validator,
};
