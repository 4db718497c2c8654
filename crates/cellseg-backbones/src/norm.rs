//! Batch normalisation with the three training behaviours detectors use.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

/// How the batch-norm layers of a trunk behave during training.
///
/// In evaluation (`train = false`) all three are the same function of the stored statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// PyTorch `BatchNorm2d`: batch statistics and running-stat updates in training.
    BatchNorm,
    /// mmdet `norm_eval = True` (mmdet's ResNet default and the seed's): always normalises with
    /// the running statistics, which never change; the affine `weight` and `bias` still train.
    #[default]
    BatchNormEval,
    /// torchvision `FrozenBatchNorm2d`: running statistics and affine parameters are all constants.
    FrozenBatchNorm,
}

/// One `BatchNorm2d`, PyTorch names: `weight`, `bias`, `running_mean`, `running_var`,
/// `num_batches_tracked`.
///
/// # Checkpoint keys
/// `{weight, bias, running_mean, running_var}` (`[C]` f32) and `num_batches_tracked` (`[]` i64),
/// as in every torchvision / timm / mmdet `state_dict`.
#[derive(Debug)]
pub struct BatchNorm2d {
    /// Scale, `[C]`.
    weight: Tensor,
    /// Shift, `[C]`.
    bias: Tensor,
    /// Running mean, `[C]`, never trained by the optimiser.
    running_mean: Tensor,
    /// Running variance, `[C]`, never trained by the optimiser.
    running_var: Tensor,
    /// Number of training batches seen, `[]` i64 (kept for checkpoint compatibility).
    num_batches_tracked: Tensor,
    eps: f64,
    momentum: f64,
    norm: Norm,
}

impl BatchNorm2d {
    /// Builds a batch norm over `channels` under `p`, with `eps` (1e-5 for ResNet, 1e-3 for the
    /// TF EfficientNets). `frozen` makes the affine parameters constants whatever `norm` says.
    pub fn new(p: &nn::Path, channels: i64, eps: f64, norm: Norm, frozen: bool) -> Self {
        let trainable = !frozen && norm != Norm::FrozenBatchNorm;
        let dev = p.device();
        let weight = p.add("weight", Tensor::ones([channels], (Kind::Float, dev)), trainable);
        let bias = p.add("bias", Tensor::zeros([channels], (Kind::Float, dev)), trainable);
        let running_mean =
            p.add("running_mean", Tensor::zeros([channels], (Kind::Float, dev)), false);
        let running_var = p.add("running_var", Tensor::ones([channels], (Kind::Float, dev)), false);
        let num_batches_tracked =
            p.add("num_batches_tracked", Tensor::zeros([] as [i64; 0], (Kind::Int64, dev)), false);
        let norm = if frozen { Norm::FrozenBatchNorm } else { norm };
        Self {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            eps,
            momentum: 0.1,
            norm,
        }
    }

    /// Sets the scale (`weight`) to 0: the layer then outputs its `bias` (mmdet's
    /// `zero_init_residual` for the last batch norm of a residual branch).
    pub(crate) fn zero_scale(&mut self) {
        tch::no_grad(|| {
            let _ = self.weight.zero_();
        });
    }

    /// The behaviour in training.
    pub fn norm(&self) -> Norm {
        self.norm
    }

    /// Normalises `x` (`[N, C, H, W]`); batch statistics only when `train` and the mode is
    /// [`Norm::BatchNorm`].
    ///
    /// # Panics
    /// If `x` does not have `C` channels.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let batch_stats = train && self.norm == Norm::BatchNorm;
        if batch_stats {
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().f_add_scalar_(1);
            });
        }
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            batch_stats,
            self.momentum,
            self.eps,
            true,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn bn(norm: Norm) -> (nn::VarStore, BatchNorm2d) {
        let vs = nn::VarStore::new(Device::Cpu);
        let bn = BatchNorm2d::new(&vs.root(), 3, 1e-5, norm, false);
        (vs, bn)
    }

    #[test]
    fn batch_norm_updates_running_stats_only_in_training_mode() {
        let x = Tensor::randn([4, 3, 5, 5], (Kind::Float, Device::Cpu)) * 3.0 + 2.0;
        for norm in [Norm::BatchNorm, Norm::BatchNormEval, Norm::FrozenBatchNorm] {
            let (vs, bn) = bn(norm);
            let _ = bn.forward(&x, true);
            let mean = vs.variables()["running_mean"].abs().sum(Kind::Float).double_value(&[]);
            let count = vs.variables()["num_batches_tracked"].int64_value(&[]);
            if norm == Norm::BatchNorm {
                assert!(mean > 0.1 && count == 1, "{norm:?}: {mean} {count}");
            } else {
                assert!(mean == 0.0 && count == 0, "{norm:?}: {mean} {count}");
            }
        }
    }

    #[test]
    fn frozen_batch_norm_has_no_trainable_parameters() {
        let (vs, _) = bn(Norm::FrozenBatchNorm);
        assert!(vs.trainable_variables().is_empty());
        let (vs, _) = bn(Norm::BatchNormEval);
        assert_eq!(vs.trainable_variables().len(), 2);
        assert_eq!(vs.len(), 5);
    }

    #[test]
    fn eval_mode_uses_running_statistics() {
        let (vs, bn) = bn(Norm::BatchNorm);
        tch::no_grad(|| {
            vs.variables()["running_mean"]
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[1.0f32, 2.0, 3.0]));
            vs.variables()["running_var"]
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[4.0f32, 4.0, 4.0]));
        });
        let x = Tensor::ones([1, 3, 1, 1], (Kind::Float, Device::Cpu)) * 5.0;
        let y = bn.forward(&x, false).view([3]);
        let want = Tensor::from_slice(&[2.0f32, 1.5, 1.0]);
        assert!(y.allclose(&want, 1e-4, 1e-4, false), "{y}");
    }
}
