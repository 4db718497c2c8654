//! EfficientNet B3–B7 in the TensorFlow variant that the seed used through timm
//! (`tf_efficientnet_b*_ns`): TF "same" padding, batch-norm eps 1e-3, SiLU, squeeze-excitation,
//! returning the outputs of block stages 1, 2, 4 and 6 (`SEED.md` §2.2, `blocks_idx=[1,2,4,6]`).
//!
//! # References
//! Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (2019).
//! Names and semantics follow timm 1.0.22 `models/efficientnet.py`, `_efficientnet_blocks.py`,
//! `_efficientnet_builder.py` (`round_channels`, `ceil` depth scaling, SE from the block input).

use tch::{Kind, Tensor, nn};

use crate::backbone::{Backbone, BackboneConfig, ShapeSpec};
use crate::conv::{Conv2d, ConvOptions, Padding};
use crate::norm::{BatchNorm2d, Norm};

const BN_EPS: f64 = 1e-3;
/// Block stages whose outputs are returned (the seed's `blocks_idx`).
pub const OUT_STAGES: [usize; 4] = [1, 2, 4, 6];

/// EfficientNet-B0 stages: (depthwise-separable?, repeats, kernel, stride, expansion, channels).
const B0_STAGES: [(bool, usize, i64, i64, i64, i64); 7] = [
    (true, 1, 3, 1, 1, 16),
    (false, 2, 3, 2, 6, 24),
    (false, 2, 5, 2, 6, 40),
    (false, 3, 3, 2, 6, 80),
    (false, 3, 5, 1, 6, 112),
    (false, 4, 5, 2, 6, 192),
    (false, 1, 3, 1, 6, 320),
];

/// The compound-scaled sizes B3–B7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EfficientNetVariant {
    /// Width 1.2, depth 1.4.
    B3,
    /// Width 1.4, depth 1.8.
    B4,
    /// Width 1.6, depth 2.2.
    B5,
    /// Width 1.8, depth 2.6.
    B6,
    /// Width 2.0, depth 3.1.
    B7,
}

impl EfficientNetVariant {
    /// `(width multiplier, depth multiplier)` (timm `_gen_efficientnet`).
    pub fn multipliers(self) -> (f64, f64) {
        match self {
            Self::B3 => (1.2, 1.4),
            Self::B4 => (1.4, 1.8),
            Self::B5 => (1.6, 2.2),
            Self::B6 => (1.8, 2.6),
            Self::B7 => (2.0, 3.1),
        }
    }

    /// Channels of the stem and of each of the 7 block stages.
    pub fn channels(self) -> (i64, [i64; 7]) {
        let (w, _) = self.multipliers();
        (round_channels(32, w), B0_STAGES.map(|s| round_channels(s.5, w)))
    }

    /// Number of blocks in each of the 7 stages (`ceil(repeats · depth)`).
    pub fn depths(self) -> [usize; 7] {
        let (_, d) = self.multipliers();
        B0_STAGES.map(|s| (s.1 as f64 * d).ceil() as usize)
    }

    /// Channels of the four outputs (the seed's `out_channels` table: B4 = [32, 56, 160, 448]).
    pub fn out_channels(self) -> [i64; 4] {
        let (_, c) = self.channels();
        OUT_STAGES.map(|i| c[i])
    }
}

/// timm `round_channels` / `make_divisible(v·m, 8, round_limit=0.9)`.
fn round_channels(c: i64, multiplier: f64) -> i64 {
    let v = c as f64 * multiplier;
    let mut new = ((v + 4.0) as i64 / 8 * 8).max(8);
    if (new as f64) < 0.9 * v {
        new += 8;
    }
    new
}

/// timm `SqueezeExcite`: mean → `conv_reduce` → SiLU → `conv_expand` → sigmoid gate.
///
/// # Checkpoint keys
/// `conv_reduce.{weight,bias}`, `conv_expand.{weight,bias}`.
#[derive(Debug)]
pub struct SqueezeExcite {
    conv_reduce: Conv2d,
    conv_expand: Conv2d,
}

impl SqueezeExcite {
    fn new(p: &nn::Path, channels: i64, reduced: i64, trainable: bool) -> Self {
        let o = ConvOptions { bias: true, trainable, ..Default::default() };
        Self {
            conv_reduce: Conv2d::new(&(p / "conv_reduce"), channels, reduced, 1, o),
            conv_expand: Conv2d::new(&(p / "conv_expand"), reduced, channels, 1, o),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.mean_dim([2, 3].as_slice(), true, Kind::Float);
        let s = self.conv_expand.forward(&self.conv_reduce.forward(&s).silu_());
        x * s.sigmoid()
    }
}

/// One EfficientNet block: timm `DepthwiseSeparableConv` (stage 0) or `InvertedResidual`.
///
/// # Checkpoint keys
/// Depthwise-separable: `conv_dw`, `bn1`, `se.*`, `conv_pw`, `bn2`. Inverted residual:
/// `conv_pw`, `bn1`, `conv_dw`, `bn2`, `se.*`, `conv_pwl`, `bn3`.
#[derive(Debug)]
pub struct MbBlock {
    /// Expansion 1×1 (inverted residual only).
    conv_pw: Option<(Conv2d, BatchNorm2d)>,
    conv_dw: Conv2d,
    bn_dw: BatchNorm2d,
    se: SqueezeExcite,
    /// Projection 1×1 (`conv_pw`/`bn2` in the depthwise-separable block, `conv_pwl`/`bn3` else).
    conv_proj: Conv2d,
    bn_proj: BatchNorm2d,
    skip: bool,
    drop_path: f64,
}

struct BlockArgs {
    separable: bool,
    c_in: i64,
    c_out: i64,
    kernel: i64,
    stride: i64,
    expansion: i64,
    drop_path: f64,
}

impl MbBlock {
    fn new(p: &nn::Path, a: &BlockArgs, norm: Norm, frozen: bool) -> Self {
        let o = ConvOptions { padding: Padding::TfSame, trainable: !frozen, ..Default::default() };
        let mid = a.c_in * a.expansion;
        let bn = |name: &str, c| BatchNorm2d::new(&(p / name), c, BN_EPS, norm, frozen);
        let conv_pw = (!a.separable)
            .then(|| (Conv2d::new(&(p / "conv_pw"), a.c_in, mid, 1, o), bn("bn1", mid)));
        let dw = ConvOptions { stride: a.stride, groups: mid, ..o };
        let conv_dw = Conv2d::new(&(p / "conv_dw"), mid, mid, a.kernel, dw);
        let bn_dw = bn(if a.separable { "bn1" } else { "bn2" }, mid);
        // timm: SqueezeExcite(mid, rd_ratio = 0.25 / expansion), rd = round(mid · rd_ratio).
        let reduced = (mid as f64 * (0.25 / a.expansion as f64)).round_ties_even() as i64;
        let se = SqueezeExcite::new(&(p / "se"), mid, reduced, !frozen);
        let (proj, bn_name) = if a.separable { ("conv_pw", "bn2") } else { ("conv_pwl", "bn3") };
        let conv_proj = Conv2d::new(&(p / proj), mid, a.c_out, 1, o);
        let bn_proj = bn(bn_name, a.c_out);
        let skip = a.stride == 1 && a.c_in == a.c_out;
        Self { conv_pw, conv_dw, bn_dw, se, conv_proj, bn_proj, skip, drop_path: a.drop_path }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let y = match &self.conv_pw {
            // In-place SiLU on fresh batch-norm outputs, as timm's `SiLU(inplace=True)`.
            Some((conv, bn)) => bn.forward(&conv.forward(x), train).silu_(),
            None => x.shallow_clone(),
        };
        let y = self.bn_dw.forward(&self.conv_dw.forward(&y), train).silu_();
        let y = self.se.forward(&y);
        let y = self.bn_proj.forward(&self.conv_proj.forward(&y), train);
        if !self.skip {
            return y;
        }
        let mut y = if train && self.drop_path > 0.0 { drop_path(&y, self.drop_path) } else { y };
        y += x;
        y
    }
}

/// Stochastic depth (timm `drop_path`): zeroes whole samples with probability `rate` and scales
/// the others by `1 / (1 - rate)`.
fn drop_path(x: &Tensor, rate: f64) -> Tensor {
    let keep = 1.0 - rate;
    let n = x.size()[0];
    let mask = Tensor::empty([n, 1, 1, 1], (x.kind(), x.device())).bernoulli_float_(keep);
    x * mask / keep
}

/// TF EfficientNet trunk with timm names, without the classifier head (`conv_head`, `bn2`,
/// `classifier` are not built).
///
/// # Checkpoint keys
/// `conv_stem.weight`, `bn1.*`, `blocks.{stage}.{block}.*` (see [`MbBlock`]) — the timm
/// `state_dict` minus the head; the seed's mmdet checkpoints spell them `backbone.effnet.*`
/// (see [`crate::checkpoint::mmdet_key`]).
#[derive(Debug)]
pub struct EfficientNet {
    conv_stem: Conv2d,
    bn1: BatchNorm2d,
    blocks: Vec<Vec<MbBlock>>,
    out_shapes: Vec<ShapeSpec>,
}

impl EfficientNet {
    /// Builds the trunk under `p` with `cfg.stem_stride`, `cfg.norm`, `cfg.frozen_stages`
    /// (0: stem, 1: + block stages 0–1, 2: + stage 2, 3: + stages 3–4, 4: everything) and
    /// `cfg.drop_path_rate`.
    ///
    /// # Panics
    /// If `cfg.stem_stride` is not 1 or 2 (checked by [`BackboneConfig::validate`]).
    pub fn new(p: &nn::Path, v: EfficientNetVariant, cfg: &BackboneConfig) -> Self {
        assert!(matches!(cfg.stem_stride, 1 | 2), "stem_stride must be 1 or 2");
        // Output stage k (1..=4) ends at block stage OUT_STAGES[k-1].
        let frozen_stage = |block_stage: usize| {
            let k = OUT_STAGES.iter().position(|&s| block_stage <= s).unwrap_or(3) as i64 + 1;
            k <= cfg.frozen_stages
        };
        let (stem, chans) = v.channels();
        let depths = v.depths();
        let total: usize = depths.iter().sum();
        let o = ConvOptions {
            stride: cfg.stem_stride,
            padding: Padding::TfSame,
            trainable: cfg.frozen_stages < 0,
            ..Default::default()
        };
        let conv_stem = Conv2d::new(&(p / "conv_stem"), 3, stem, 3, o);
        let bn1 = BatchNorm2d::new(&(p / "bn1"), stem, BN_EPS, cfg.norm, cfg.frozen_stages >= 0);
        let mut c_in = stem;
        let mut stride = cfg.stem_stride as u32;
        let mut index = 0;
        let mut blocks = Vec::with_capacity(7);
        let mut out_shapes = Vec::with_capacity(4);
        for (s, (&(separable, _, kernel, st, expansion, _), &n)) in
            B0_STAGES.iter().zip(&depths).enumerate()
        {
            let sp = p / "blocks" / s;
            let frozen = frozen_stage(s);
            let stage: Vec<MbBlock> = (0..n)
                .map(|b| {
                    let args = BlockArgs {
                        separable,
                        c_in,
                        c_out: chans[s],
                        kernel,
                        stride: if b == 0 { st } else { 1 },
                        expansion,
                        drop_path: cfg.drop_path_rate * index as f64 / total as f64,
                    };
                    index += 1;
                    c_in = chans[s];
                    MbBlock::new(&(&sp / b), &args, cfg.norm, frozen)
                })
                .collect();
            stride *= st as u32;
            if OUT_STAGES.contains(&s) {
                out_shapes.push(ShapeSpec { channels: chans[s], stride });
            }
            blocks.push(stage);
        }
        Self { conv_stem, bn1, blocks, out_shapes }
    }
}

impl Backbone for EfficientNet {
    fn out_shapes(&self) -> Vec<ShapeSpec> {
        self.out_shapes.clone()
    }

    fn forward(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        let mut x = self.bn1.forward(&self.conv_stem.forward(images), train).silu_();
        let mut outs = Vec::with_capacity(4);
        for (s, stage) in self.blocks.iter().enumerate() {
            for block in stage {
                x = block.forward(&x, train);
            }
            if OUT_STAGES.contains(&s) {
                outs.push(x.shallow_clone());
            }
        }
        outs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn channels_and_depths_match_timm_b4() {
        let v = EfficientNetVariant::B4;
        assert_eq!(v.channels(), (48, [24, 32, 56, 112, 160, 272, 448]));
        assert_eq!(v.depths(), [2, 4, 4, 6, 6, 8, 2]);
    }

    #[test]
    fn out_channels_match_the_seeds_table() {
        use EfficientNetVariant::*;
        assert_eq!(B3.out_channels(), [32, 48, 136, 384]);
        assert_eq!(B4.out_channels(), [32, 56, 160, 448]);
        assert_eq!(B5.out_channels(), [40, 64, 176, 512]);
        assert_eq!(B6.out_channels(), [40, 72, 200, 576]);
        assert_eq!(B7.out_channels(), [48, 80, 224, 640]);
    }

    #[test]
    fn outputs_have_ceil_sizes_at_the_promised_strides() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = BackboneConfig { stem_stride: 1, ..Default::default() };
        let m = EfficientNet::new(&vs.root(), EfficientNetVariant::B3, &cfg);
        let x = Tensor::zeros([1, 3, 19, 22], (Kind::Float, Device::Cpu));
        let outs = tch::no_grad(|| m.forward(&x, false));
        for (o, spec) in outs.iter().zip(m.out_shapes()) {
            let s = spec.stride as i64;
            assert_eq!(o.size(), [1, spec.channels, (19 + s - 1) / s, (22 + s - 1) / s]);
        }
        assert_eq!(m.out_shapes().iter().map(|s| s.stride).collect::<Vec<_>>(), [2, 4, 8, 16]);
    }
}

#[cfg(test)]
mod freezing {
    use super::*;
    use tch::Device;

    #[test]
    fn frozen_stages_two_freezes_stem_and_blocks_0_to_2() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = BackboneConfig { frozen_stages: 2, ..Default::default() };
        let _m = EfficientNet::new(&vs.root(), EfficientNetVariant::B3, &cfg);
        for (name, t) in vs.variables() {
            let stats = name.contains("running_") || name.ends_with("num_batches_tracked");
            let frozen = name.starts_with("conv_stem")
                || name.starts_with("bn1")
                || ["blocks.0.", "blocks.1.", "blocks.2."].iter().any(|b| name.starts_with(b));
            assert_eq!(t.requires_grad(), !frozen && !stats, "{name}");
        }
    }
}
