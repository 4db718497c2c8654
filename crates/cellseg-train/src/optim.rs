//! AdamW and SGD on tch tensors, with per-parameter weight-decay groups and global-norm clipping.
//!
//! Written here rather than taken from `tch::nn::Optimizer` so that (a) weight decay is decoupled
//! for AdamW and can be switched off per parameter by name, (b) parameters that got no gradient in
//! a step are skipped, as torch does for `grad = None`, and (c) the moments can be saved and
//! restored for an exact resume. The arithmetic follows torch 2.11's single-tensor
//! `torch.optim.AdamW` / `torch.optim.SGD` operation by operation (checked against them by the
//! `optim_matches_torch` test).

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::{Error, Result};

/// One trainable parameter and its optimizer state.
#[derive(Debug)]
struct Slot {
    name: String,
    /// The variable (a shallow clone of the `VarStore` entry: updates are in place).
    var: Tensor,
    weight_decay: f64,
    /// Steps this parameter was updated (torch keeps `step` per parameter).
    step: u64,
    /// AdamW first moment / SGD momentum buffer.
    buf1: Option<Tensor>,
    /// AdamW second moment.
    buf2: Option<Tensor>,
}

/// Whether a parameter named `name` is excluded from weight decay by the `no_decay` substrings
/// (the seed's per-parameter groups, SEED.md §3.3).
pub fn is_no_decay(name: &str, no_decay: &[String]) -> bool {
    no_decay.iter().any(|k| name.contains(k.as_str()))
}

/// AdamW or SGD over a fixed, ordered list of named parameters.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    cfg: OptimizerConfig,
    slots: Vec<Slot>,
}

impl Optimizer {
    /// An optimizer over `params` (name, variable). Parameters whose name matches
    /// `cfg.no_decay` get weight decay 0; the others `cfg.effective_weight_decay()`.
    pub fn new(cfg: &OptimizerConfig, params: Vec<(String, Tensor)>) -> Self {
        let wd = cfg.effective_weight_decay();
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let weight_decay = if is_no_decay(&name, &cfg.no_decay) { 0.0 } else { wd };
                Slot { name, var, weight_decay, step: 0, buf1: None, buf2: None }
            })
            .collect();
        Self { kind: cfg.kind, cfg: cfg.clone(), slots }
    }

    /// The trainable variables of `vs`, sorted by name (the order the optimizer uses).
    pub fn trainable(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The parameters, in order.
    pub fn params(&self) -> Vec<&Tensor> {
        self.slots.iter().map(|s| &s.var).collect()
    }

    /// `(name, weight_decay)` of each parameter, in order.
    pub fn groups(&self) -> Vec<(&str, f64)> {
        self.slots.iter().map(|s| (s.name.as_str(), s.weight_decay)).collect()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there is no parameter.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Applies one update with learning rate `lr`. `grads[i]` is the gradient of parameter `i`
    /// (`None`: it got none this step and is left untouched, state included).
    ///
    /// # Panics
    /// If `grads.len()` differs from the number of parameters.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) {
        assert_eq!(grads.len(), self.slots.len(), "one gradient slot per parameter");
        let _guard = tch::no_grad_guard();
        for (slot, grad) in self.slots.iter_mut().zip(grads) {
            let Some(grad) = grad else { continue };
            slot.step += 1;
            match self.kind {
                OptimizerKind::Adamw => adamw_update(slot, grad, lr, &self.cfg),
                OptimizerKind::Sgd => sgd_update(slot, grad, lr, &self.cfg),
            }
        }
    }

    /// The optimizer state as named tensors (`exp_avg/<param>`, `exp_avg_sq/<param>`,
    /// `momentum_buffer/<param>`) and per-parameter step counts.
    pub fn state(&self) -> (Vec<(String, Tensor)>, BTreeMap<String, u64>) {
        let (n1, n2) = self.buffer_names();
        let mut tensors = Vec::new();
        let mut steps = BTreeMap::new();
        for s in &self.slots {
            steps.insert(s.name.clone(), s.step);
            if let Some(b) = &s.buf1 {
                tensors.push((format!("{n1}/{}", s.name), b.shallow_clone()));
            }
            if let Some(b) = &s.buf2 {
                tensors.push((format!("{n2}/{}", s.name), b.shallow_clone()));
            }
        }
        (tensors, steps)
    }

    fn buffer_names(&self) -> (&'static str, &'static str) {
        match self.kind {
            OptimizerKind::Adamw => ("exp_avg", "exp_avg_sq"),
            OptimizerKind::Sgd => ("momentum_buffer", "unused"),
        }
    }

    /// Restores the state written by [`Optimizer::state`] (read from `path`, used in errors).
    ///
    /// # Errors
    /// [`Error::CheckpointMismatch`] when a buffer names an unknown parameter or has the wrong
    /// shape; [`Error::CheckpointState`] when step counts and buffers disagree.
    pub fn load_state(
        &mut self,
        tensors: Vec<(String, Tensor)>,
        steps: &BTreeMap<String, u64>,
        path: &std::path::Path,
    ) -> Result<()> {
        let (n1, n2) = self.buffer_names();
        let index: BTreeMap<String, usize> =
            self.slots.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        let mut unexpected = Vec::new();
        let mut wrong_shape = Vec::new();
        let mut bufs: Vec<(usize, bool, Tensor)> = Vec::new();
        for (key, t) in tensors {
            let parsed =
                key.split_once('/').and_then(|(b, p)| index.get(p).map(|&i| (b == n1, b == n2, i)));
            match parsed {
                Some((first, second, i)) if first || second => {
                    let expected = self.slots[i].var.size();
                    if t.size() != expected {
                        wrong_shape.push(crate::error::ShapeMismatch {
                            key,
                            expected,
                            found: t.size(),
                        });
                    } else {
                        bufs.push((i, first, t));
                    }
                }
                _ => unexpected.push(key),
            }
        }
        let missing: Vec<String> = self
            .slots
            .iter()
            .filter(|s| !steps.contains_key(&s.name))
            .map(|s| s.name.clone())
            .collect();
        let unknown_steps: Vec<String> =
            steps.keys().filter(|k| !index.contains_key(*k)).cloned().collect();
        unexpected.extend(unknown_steps);
        if !(missing.is_empty() && unexpected.is_empty() && wrong_shape.is_empty()) {
            return Err(Error::CheckpointMismatch {
                path: path.to_path_buf(),
                missing,
                unexpected,
                wrong_shape,
            });
        }
        for s in &mut self.slots {
            s.step = steps[&s.name];
            s.buf1 = None;
            s.buf2 = None;
        }
        let device = self.slots.first().map(|s| s.var.device());
        for (i, first, t) in bufs {
            let slot = &mut self.slots[i];
            let t = t.to_device(device.unwrap_or(tch::Device::Cpu)).to_kind(slot.var.kind());
            if first { slot.buf1 = Some(t) } else { slot.buf2 = Some(t) }
        }
        for s in &self.slots {
            let complete = match self.kind {
                OptimizerKind::Adamw => s.buf1.is_some() && s.buf2.is_some(),
                OptimizerKind::Sgd => s.buf1.is_some() || self.cfg.sgd.momentum == 0.0,
            };
            if s.step > 0 && !complete {
                return Err(Error::CheckpointState {
                    path: path.to_path_buf(),
                    message: format!(
                        "parameter {} made {} steps but has no moments",
                        s.name, s.step
                    ),
                });
            }
        }
        Ok(())
    }
}

/// torch's single-tensor AdamW (non-amsgrad), operation by operation.
fn adamw_update(slot: &mut Slot, grad: &Tensor, lr: f64, cfg: &OptimizerConfig) {
    let [beta1, beta2] = cfg.adamw.betas;
    let var = &mut slot.var;
    if slot.weight_decay != 0.0 {
        let _ = var.g_mul_scalar_(1.0 - lr * slot.weight_decay);
    }
    let exp_avg = slot.buf1.get_or_insert_with(|| var.zeros_like());
    let _ = exp_avg.lerp_(grad, 1.0 - beta1);
    let exp_avg_sq = slot.buf2.get_or_insert_with(|| var.zeros_like());
    // addcmul_(grad, grad, value = 1 - beta2) computes self + (value·grad)·grad.
    let _ = exp_avg_sq.g_mul_scalar_(beta2);
    let _ = exp_avg_sq.g_add_(&(grad * (1.0 - beta2) * grad));
    let step = slot.step as f64;
    let bias_correction1 = 1.0 - beta1.powf(step);
    let bias_correction2 = 1.0 - beta2.powf(step);
    let step_size = lr / bias_correction1;
    let denom = (exp_avg_sq.sqrt() / bias_correction2.sqrt()) + cfg.adamw.eps;
    // addcdiv_(exp_avg, denom, value = -step_size) computes self + (value·exp_avg)/denom.
    let _ = var.g_add_(&((&*exp_avg * (-step_size)) / denom));
}

/// torch's single-tensor SGD, operation by operation.
fn sgd_update(slot: &mut Slot, grad: &Tensor, lr: f64, cfg: &OptimizerConfig) {
    let s = &cfg.sgd;
    let var = &mut slot.var;
    let mut d_p = if slot.weight_decay != 0.0 {
        grad + &*var * slot.weight_decay
    } else {
        grad.shallow_clone()
    };
    if s.momentum != 0.0 {
        let buf = match slot.buf1.take() {
            None => d_p.detach().copy(),
            Some(mut b) => {
                let _ = b.g_mul_scalar_(s.momentum);
                let _ = b.g_add_(&(&d_p * (1.0 - s.dampening)));
                b
            }
        };
        d_p = if s.nesterov { d_p + &buf * s.momentum } else { buf.shallow_clone() };
        slot.buf1 = Some(buf);
    }
    let _ = var.g_add_(&(d_p * (-lr)));
}

/// Scales `grads` in place so that their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`: coefficient `min(1, max_norm / (norm + 1e-6))`), and returns
/// the norm before clipping. `max_norm = None` only measures. Returns NaN/inf when a gradient is
/// not finite (the caller skips the step).
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: Option<f64>) -> f64 {
    let _guard = tch::no_grad_guard();
    let norms: Vec<Tensor> =
        grads.iter().flatten().map(|g| g.norm().to_kind(Kind::Float)).collect();
    if norms.is_empty() {
        return 0.0;
    }
    let total = Tensor::stack(&norms, 0).norm();
    let total_value = total.double_value(&[]);
    if let Some(max_norm) = max_norm.filter(|&m| m > 0.0) {
        if total_value.is_finite() {
            let coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
            for g in grads.iter_mut().flatten() {
                let _ = g.g_mul_(&coef);
            }
        }
    }
    total_value
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn cfg(kind: OptimizerKind) -> OptimizerConfig {
        OptimizerConfig { kind, ..OptimizerConfig::default() }
    }

    #[test]
    fn no_decay_groups_follow_the_seed_names() {
        let c = cfg(OptimizerKind::Adamw);
        let params =
            ["backbone.conv1.weight", "backbone.bn1.weight", "fc.bias", "neck.norm.weight"]
                .iter()
                .map(|n| (n.to_string(), Tensor::zeros([2], (Kind::Float, Device::Cpu))))
                .collect();
        let opt = Optimizer::new(&c, params);
        let wd: Vec<f64> = opt.groups().iter().map(|g| g.1).collect();
        assert_eq!(wd, vec![0.01, 0.0, 0.0, 0.0]);
        let seed = OptimizerConfig { seed_ignores_weight_decay: true, ..c };
        let opt = Optimizer::new(
            &seed,
            vec![("w".into(), Tensor::zeros([1], (Kind::Float, Device::Cpu)))],
        );
        assert_eq!(opt.groups()[0].1, 0.0);
    }

    #[test]
    fn parameters_without_gradient_are_untouched() {
        let p = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let before = p.copy();
        let mut opt =
            Optimizer::new(&cfg(OptimizerKind::Adamw), vec![("w".into(), p.shallow_clone())]);
        opt.step(&[None], 0.1);
        assert!(p.equal(&before));
        assert_eq!(opt.state().1["w"], 0);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = vec![
            Some(Tensor::from_slice(&[3.0f32, 0.0])),
            None,
            Some(Tensor::from_slice(&[0.0f32, 4.0])),
        ];
        let norm = clip_grad_norm(&mut g, Some(1.0));
        assert!((norm - 5.0).abs() < 1e-6);
        let after = clip_grad_norm(&mut g, None);
        assert!((after - 1.0).abs() < 1e-5, "{after}");
    }

    #[test]
    fn state_round_trips() {
        let p = Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let c = cfg(OptimizerKind::Adamw);
        let mut a = Optimizer::new(&c, vec![("w".into(), p.shallow_clone())]);
        a.step(&[Some(Tensor::ones([2, 2], (Kind::Float, Device::Cpu)))], 0.1);
        let (t, steps) = a.state();
        let q = Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut b = Optimizer::new(&c, vec![("w".into(), q.shallow_clone())]);
        b.load_state(t, &steps, std::path::Path::new("x")).unwrap();
        assert_eq!(b.state().1["w"], 1);
        let bad =
            vec![("exp_avg/other".to_string(), Tensor::zeros([1], (Kind::Float, Device::Cpu)))];
        let err = b.load_state(bad, &steps, std::path::Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("exp_avg/other"), "{err}");
    }
}
