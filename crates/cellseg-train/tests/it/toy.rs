//! A tiny model, data source, validator and observer to drive the engine on the CPU.

use std::collections::BTreeMap;

use cellseg_train::{
    EvalRecord, EvalReport, HookError, Losses, NonFiniteStep, StepStats, TrainData, TrainObserver,
    TrainableModel, Validator,
};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Two-layer perceptron with dropout (so the torch RNG matters) and a frozen (non-trainable)
/// buffer, producing three named losses.
pub struct Toy {
    pub vs: nn::VarStore,
    fc1: nn::Linear,
    fc2: nn::Linear,
    offset: Tensor,
    /// Extra layer present only in the "other architecture" variant.
    _extra: Option<nn::Linear>,
    /// Make every gradient NaN while the loss stays finite (d√u at u = 0, times 0).
    pub nan_grad: bool,
    /// Ask libtorch for more memory than any machine has in every step.
    pub oom: bool,
}

impl Toy {
    pub fn new(init_seed: i64) -> Self {
        Self::build(init_seed, 8, false)
    }

    pub fn other_architecture() -> Self {
        Self::build(0, 6, true)
    }

    /// The toy model on `device` (for the CUDA-only checks).
    pub fn on(device: Device) -> Self {
        let mut m = Self::build(1, 8, false);
        m.vs.set_device(device);
        m.offset = m.offset.to_device(device);
        m
    }

    fn build(init_seed: i64, hidden: i64, extra: bool) -> Self {
        tch::manual_seed(init_seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let fc1 = nn::linear(&root / "fc1", 4, hidden, Default::default());
        let fc2 = nn::linear(&root / "fc2", hidden, 3, Default::default());
        let offset = root.zeros_no_train("offset", &[3]);
        let _extra = extra.then(|| nn::linear(&root / "extra", 3, 3, Default::default()));
        Self { vs, fc1, fc2, offset, _extra, nan_grad: false, oom: false }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.fc1.forward(x).relu().dropout(0.2, train);
        self.fc2.forward(&h) + &self.offset
    }

    pub fn weights(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().collect()
    }
}

pub struct ToyBatch {
    x: Tensor,
    y: Tensor,
}

impl TrainableModel for Toy {
    type Batch = ToyBatch;

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn losses(&mut self, batch: &ToyBatch) -> Result<Losses, HookError> {
        if self.oom {
            let _ = Tensor::f_zeros([1 << 50], (Kind::Float, Device::Cpu))?;
        }
        let out = self.forward(&batch.x, true);
        let mut l = Losses::new();
        l.push("loss_cls", (out.select(1, 0) - batch.y.select(1, 0)).square().mean(None));
        l.push("loss_bbox", (out.select(1, 1) - batch.y.select(1, 1)).abs().mean(None));
        let mask = (out.select(1, 2) - batch.y.select(1, 2)).square();
        let mask = if self.nan_grad { mask + (&out * 0.0).sqrt().sum(Kind::Float) } else { mask };
        l.push("loss_mask", mask);
        l.push("acc", Tensor::from(0.5f32));
        Ok(l)
    }
}

/// `n` points in R⁴ with targets `W·x`; sample `poison` (if any) has NaN inputs.
pub struct ToyData {
    x: Tensor,
    y: Tensor,
    pub poison: Option<usize>,
    /// Where batches are sent.
    pub device: Device,
}

impl ToyData {
    pub fn new(n: usize) -> Self {
        let mut s = 12345u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let xs: Vec<f32> = (0..n * 4).map(|_| next()).collect();
        let x = Tensor::from_slice(&xs).view([n as i64, 4]);
        let w =
            Tensor::from_slice(&[0.5f32, -1.0, 0.3, 2.0, 0.1, 0.0, -0.7, 0.4, 1.0, 1.0, -1.0, 0.2])
                .view([4, 3]);
        let y = x.matmul(&w);
        Self { x, y, poison: None, device: Device::Cpu }
    }
}

impl TrainData for ToyData {
    type Batch = ToyBatch;

    fn len(&self) -> usize {
        self.x.size()[0] as usize
    }

    fn image_ids(&self, indices: &[usize]) -> Vec<String> {
        indices.iter().map(|i| format!("img-{i}")).collect()
    }

    fn batch(&mut self, indices: &[usize], seed: u64) -> Result<ToyBatch, HookError> {
        let idx = Tensor::from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let mut x = self.x.index_select(0, &idx);
        // A seeded "augmentation": jitter from the batch seed only.
        let jitter: Vec<f32> = (0..indices.len() * 4)
            .map(|k| (((seed >> (k % 48)) & 0xff) as f32 / 255.0 - 0.5) * 0.01)
            .collect();
        x += Tensor::from_slice(&jitter).view([indices.len() as i64, 4]);
        if let Some(p) = self.poison {
            if let Some(row) = indices.iter().position(|&i| i == p) {
                let _ = x.get(row as i64).fill_(f64::NAN);
            }
        }
        let device = self.device;
        Ok(ToyBatch { x: x.to_device(device), y: self.y.index_select(0, &idx).to_device(device) })
    }
}

/// Scores `-mse` on fixed points; "per type" splits the points in two halves.
pub struct ToyValidator {
    data: ToyData,
    pub calls: usize,
}

impl ToyValidator {
    pub fn new() -> Self {
        Self { data: ToyData::new(16), calls: 0 }
    }
}

impl Validator<Toy> for ToyValidator {
    fn validate(&mut self, model: &mut Toy) -> Result<EvalReport, HookError> {
        self.calls += 1;
        let _g = tch::no_grad_guard();
        let out = model.forward(&self.data.x, false);
        let err = (out - &self.data.y).square().mean_dim([1i64].as_slice(), false, Kind::Float);
        let mut report =
            EvalReport { score: -err.mean(None).double_value(&[]), ..Default::default() };
        report.per_type.insert("a".into(), -err.narrow(0, 0, 8).mean(None).double_value(&[]));
        report.per_type.insert("b".into(), -err.narrow(0, 8, 8).mean(None).double_value(&[]));
        Ok(report)
    }
}

/// Records every call; stops after `stop_at` steps when set.
#[derive(Default)]
pub struct Collect {
    pub steps: Vec<StepStats>,
    pub evals: Vec<EvalRecord>,
    pub skipped: Vec<NonFiniteStep>,
    pub checkpoints: Vec<u64>,
    pub stop_at: Option<u64>,
}

impl TrainObserver for Collect {
    fn on_step(&mut self, s: &StepStats) {
        self.steps.push(s.clone());
    }
    fn on_eval(&mut self, r: &EvalRecord) {
        self.evals.push(r.clone());
    }
    fn on_nonfinite(&mut self, s: &NonFiniteStep) {
        self.skipped.push(s.clone());
    }
    fn on_checkpoint(&mut self, _dir: &std::path::Path, step: u64) {
        self.checkpoints.push(step);
    }
    fn should_stop(&mut self) -> bool {
        match (self.stop_at, self.steps.last(), self.skipped.last()) {
            (Some(n), s, k) => s.map_or(0, |s| s.step).max(k.map_or(0, |k| k.step)) >= n,
            _ => false,
        }
    }
}
