//! A tiny convolutional trunk for CPU demos and tests.
//!
//! [`TinyConvNet`] is four stages of `3×3 conv (stride 2) → BN → ReLU → 3×3 conv → BN → ReLU`,
//! giving feature maps at strides 2, 4, 8 and 16 — the layout of the seed's stride-1-stem ResNets,
//! so the same FPN, anchors and heads apply. It has no pretrained weights: it exists so that a
//! Mask R-CNN can be trained from scratch on a laptop CPU in minutes (the `make demo` run).
//!
//! # Example
//! ```
//! use cellseg_backbones::{Backbone, TinyConfig, TinyConvNet};
//! use tch::{nn, Device, Kind, Tensor};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let net = TinyConvNet::new(&(vs.root() / "backbone"), &TinyConfig::default())?;
//! let x = Tensor::zeros([1, 3, 64, 64], (Kind::Float, Device::Cpu));
//! let outs = net.forward(&x, false);
//! assert_eq!(outs.len(), 4);
//! assert_eq!(outs[3].size(), [1, 64, 4, 4]);
//! # Ok::<(), cellseg_backbones::Error>(())
//! ```

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn, nn::ModuleT};

use crate::backbone::{Backbone, ShapeSpec};
use crate::error::{Error, Result};
use crate::norm::Norm;

/// Widths of a [`TinyConvNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TinyConfig {
    /// Output channels of the four stages (strides 2, 4, 8, 16). Default `[16, 32, 48, 64]`.
    pub widths: [i64; 4],
    /// Batch-norm behaviour in training. Default `batch_norm` (batch statistics, running
    /// statistics updated: a trunk trained from scratch needs them); `batch_norm_eval` is the
    /// seed's `norm_eval = True`, `frozen_batch_norm` also freezes the affine parameters.
    pub norm: Norm,
}

impl Default for TinyConfig {
    fn default() -> Self {
        Self { widths: [16, 32, 48, 64], norm: Norm::BatchNorm }
    }
}

#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    /// Whether training uses batch statistics ([`Norm::BatchNorm`]).
    batch_stats: bool,
}

impl ConvBn {
    fn new(p: &nn::Path, cin: i64, cout: i64, stride: i64, norm: Norm) -> Self {
        let cfg = nn::ConvConfig { stride, padding: 1, bias: false, ..Default::default() };
        // The convolution first: both initialisations draw from libtorch's generator.
        let conv = nn::conv2d(p / "conv", cin, cout, 3, cfg);
        let mut bn = nn::batch_norm2d(p / "bn", cout, Default::default());
        if norm == Norm::FrozenBatchNorm {
            for t in [bn.ws.as_mut(), bn.bs.as_mut()].into_iter().flatten() {
                *t = t.set_requires_grad(false);
            }
        }
        Self { conv, bn, batch_stats: norm == Norm::BatchNorm }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&x.apply(&self.conv), train && self.batch_stats).relu()
    }
}

/// A four-stage conv + batch-norm + ReLU trunk with outputs at strides 2, 4, 8, 16.
///
/// Weight names: `stage{i}.{down,conv}.{conv.weight,bn.*}`.
#[derive(Debug)]
pub struct TinyConvNet {
    stages: Vec<(ConvBn, ConvBn)>,
    widths: [i64; 4],
}

impl TinyConvNet {
    /// Builds the trunk under `p` (randomly initialised).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a width is not positive.
    pub fn new(p: &nn::Path, cfg: &TinyConfig) -> Result<Self> {
        if let Some(w) = cfg.widths.iter().find(|&&w| w <= 0) {
            return Err(Error::InvalidConfig {
                key: "tiny.widths",
                value: w.to_string(),
                reason: "widths must be positive",
            });
        }
        let mut cin = 3;
        let mut stages = Vec::new();
        for (i, &c) in cfg.widths.iter().enumerate() {
            let s = p / format!("stage{i}");
            stages.push((
                ConvBn::new(&(&s / "down"), cin, c, 2, cfg.norm),
                ConvBn::new(&(&s / "conv"), c, c, 1, cfg.norm),
            ));
            cin = c;
        }
        Ok(Self { stages, widths: cfg.widths })
    }
}

impl Backbone for TinyConvNet {
    fn out_shapes(&self) -> Vec<ShapeSpec> {
        self.widths
            .iter()
            .enumerate()
            .map(|(i, &c)| ShapeSpec { channels: c, stride: 2 << i })
            .collect()
    }

    fn forward(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        let mut x = images.shallow_clone();
        let mut outs = Vec::with_capacity(4);
        for (down, conv) in &self.stages {
            x = conv.forward(&down.forward(&x, train), train);
            outs.push(x.shallow_clone());
        }
        outs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_follow_the_strides() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = TinyConfig { widths: [8, 8, 16, 16], ..TinyConfig::default() };
        let net = TinyConvNet::new(&vs.root(), &cfg).unwrap();
        let x = Tensor::randn([2, 3, 48, 80], (Kind::Float, Device::Cpu));
        let outs = net.forward(&x, true);
        let want = [[2, 8, 24, 40], [2, 8, 12, 20], [2, 16, 6, 10], [2, 16, 3, 5]];
        for (o, w) in outs.iter().zip(want) {
            assert_eq!(o.size(), w);
        }
        assert_eq!(net.out_shapes()[3], ShapeSpec { channels: 16, stride: 16 });
    }

    #[test]
    fn eval_mode_batch_norm_keeps_its_statistics_and_frozen_ones_do_not_train() {
        for (norm, stats_move, affine_trains) in [
            (Norm::BatchNorm, true, true),
            (Norm::BatchNormEval, false, true),
            (Norm::FrozenBatchNorm, false, false),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = TinyConfig { widths: [4, 4, 4, 4], norm };
            let net = TinyConvNet::new(&vs.root(), &cfg).unwrap();
            let before = vs.variables()["stage0.down.bn.running_mean"].copy();
            let x = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu)) + 3.0;
            let _ = net.forward(&x, true);
            let after = &vs.variables()["stage0.down.bn.running_mean"];
            assert_eq!(!before.equal(after), stats_move, "{norm:?}");
            let w = &vs.variables()["stage0.down.bn.weight"];
            assert_eq!(w.requires_grad(), affine_trains, "{norm:?}");
        }
    }

    #[test]
    fn rejects_zero_width() {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = TinyConvNet::new(
            &vs.root(),
            &TinyConfig { widths: [8, 0, 8, 8], ..TinyConfig::default() },
        )
        .unwrap_err();
        assert!(err.to_string().contains("widths"), "{err}");
    }
}
