//! Feature pyramid network as in mmdet 2.17 `models/necks/fpn.py` with the seed's settings
//! (`SEED.md` §2.3): 1×1 lateral and 3×3 output convolutions with bias and no norm, nearest
//! top-down upsampling to the lateral's size, extra levels by `max_pool2d(kernel 1, stride 2)`.
//!
//! # References
//! Lin et al., "Feature Pyramid Networks for Object Detection" (2017). torchvision
//! `ops.FeaturePyramidNetwork` + `LastLevelMaxPool` computes the same function (the parity test
//! checks it) under other key names (`inner_blocks.{i}.0` = `lateral_convs.{i}.conv`,
//! `layer_blocks.{i}.0` = `fpn_convs.{i}.conv`).

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::backbone::{FeatureMaps, ShapeSpec};
use crate::conv::{Conv2d, ConvOptions, Padding};
use crate::{Error, Result};

/// FPN hyper-parameters (mmdet `FPN(out_channels=256, num_outs=5)`, the seed's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FpnConfig {
    /// Channels of every output. Default 256 (mmdet, seed).
    pub out_channels: i64,
    /// Number of outputs: one per input level, then max-pooled extra levels. Default 5 (seed).
    pub num_outs: usize,
}

impl Default for FpnConfig {
    fn default() -> Self {
        Self { out_channels: 256, num_outs: 5 }
    }
}

/// Xavier-uniform bound `sqrt(6 / (fan_in + fan_out))` for a `k`×`k` convolution.
fn xavier_uniform(c_in: i64, c_out: i64, k: i64) -> nn::Init {
    let bound = (6.0 / ((c_in + c_out) * k * k) as f64).sqrt();
    nn::Init::Uniform { lo: -bound, up: bound }
}

/// mmdet `ConvModule` without norm and activation: only `conv`.
#[derive(Debug)]
struct ConvModule {
    conv: Conv2d,
}

/// Feature pyramid network, mmdet names (`neck.*` in mmdet checkpoints).
///
/// # Checkpoint keys
/// `lateral_convs.{i}.conv.{weight,bias}`, `fpn_convs.{i}.conv.{weight,bias}`, `i` over the
/// input levels.
#[derive(Debug)]
pub struct Fpn {
    lateral_convs: Vec<ConvModule>,
    fpn_convs: Vec<ConvModule>,
    out_shapes: Vec<ShapeSpec>,
}

impl Fpn {
    /// Builds the FPN under `p` for inputs described by `in_shapes` (strides increasing, each
    /// twice the previous). Weights start Xavier-uniform, biases 0 (mmdet's `init_cfg`).
    ///
    /// # Errors
    /// [`Error::FpnInputs`] when `in_shapes` is empty or its strides do not double, and
    /// [`Error::InvalidConfig`] when `num_outs < in_shapes.len()` or `out_channels < 1`.
    pub fn new(p: &nn::Path, cfg: &FpnConfig, in_shapes: &[ShapeSpec]) -> Result<Self> {
        let doubling = in_shapes.windows(2).all(|w| w[1].stride == 2 * w[0].stride);
        if in_shapes.is_empty() || !doubling {
            return Err(Error::FpnInputs {
                expected: in_shapes.len().max(1),
                found: in_shapes.iter().map(|s| (s.channels, s.stride)).collect(),
            });
        }
        if cfg.num_outs < in_shapes.len() {
            return Err(Error::InvalidConfig {
                key: "fpn.num_outs",
                value: cfg.num_outs.to_string(),
                reason: "must be at least the number of backbone levels",
            });
        }
        if cfg.out_channels < 1 {
            return Err(Error::InvalidConfig {
                key: "fpn.out_channels",
                value: cfg.out_channels.to_string(),
                reason: "must be positive",
            });
        }
        let c = cfg.out_channels;
        let mut lateral_convs = Vec::with_capacity(in_shapes.len());
        let mut fpn_convs = Vec::with_capacity(in_shapes.len());
        for (i, s) in in_shapes.iter().enumerate() {
            let lp = p / "lateral_convs" / i / "conv";
            let o1 = ConvOptions {
                bias: true,
                init: xavier_uniform(s.channels, c, 1),
                ..Default::default()
            };
            lateral_convs.push(ConvModule { conv: Conv2d::new(&lp, s.channels, c, 1, o1) });
            let fp = p / "fpn_convs" / i / "conv";
            let o3 = ConvOptions {
                padding: Padding::Explicit(1),
                bias: true,
                init: xavier_uniform(c, c, 3),
                ..Default::default()
            };
            fpn_convs.push(ConvModule { conv: Conv2d::new(&fp, c, c, 3, o3) });
        }
        let mut stride = in_shapes[0].stride;
        let out_shapes = (0..cfg.num_outs)
            .map(|i| {
                if i > 0 {
                    stride *= 2;
                }
                ShapeSpec { channels: c, stride }
            })
            .collect();
        Ok(Self { lateral_convs, fpn_convs, out_shapes })
    }

    /// Channels and stride of each output, high to low resolution.
    pub fn out_shapes(&self) -> &[ShapeSpec] {
        &self.out_shapes
    }

    /// Runs the FPN on the backbone outputs (high to low resolution).
    ///
    /// # Shapes
    /// `feats[i]`: `[N, C_i, H_i, W_i]`; output `i`: `[N, out_channels, H_i, W_i]` for the input
    /// levels, then each extra level is `⌈H/2⌉ × ⌈W/2⌉` of the previous.
    ///
    /// # Panics
    /// If `feats` has a different number of levels or channels than `in_shapes`.
    pub fn forward(&self, feats: &[Tensor]) -> Vec<Tensor> {
        assert_eq!(feats.len(), self.lateral_convs.len(), "FPN: wrong number of input levels");
        let mut laterals: Vec<Tensor> =
            self.lateral_convs.iter().zip(feats).map(|(l, f)| l.conv.forward(f)).collect();
        for i in (1..laterals.len()).rev() {
            let size = laterals[i - 1].size();
            let up = laterals[i].upsample_nearest2d([size[2], size[3]], None, None);
            laterals[i - 1] = &laterals[i - 1] + up;
        }
        let mut outs: Vec<Tensor> =
            self.fpn_convs.iter().zip(&laterals).map(|(c, l)| c.conv.forward(l)).collect();
        while outs.len() < self.out_shapes.len() {
            let last = outs.last().expect("at least one level");
            outs.push(last.max_pool2d([1, 1], [2, 2], [0, 0], [1, 1], false));
        }
        outs
    }

    /// [`Fpn::forward`] on [`FeatureMaps`], with the output strides attached.
    pub fn forward_maps(&self, feats: &FeatureMaps) -> FeatureMaps {
        let tensors: Vec<Tensor> = feats.levels.iter().map(|l| l.tensor.shallow_clone()).collect();
        FeatureMaps::new(self.forward(&tensors), &self.out_shapes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn shapes(strides: &[u32]) -> Vec<ShapeSpec> {
        strides.iter().map(|&stride| ShapeSpec { channels: 8, stride }).collect()
    }

    #[test]
    fn outputs_halve_in_size_and_double_in_stride() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = FpnConfig { out_channels: 16, num_outs: 5 };
        let fpn = Fpn::new(&vs.root(), &cfg, &shapes(&[2, 4, 8, 16])).unwrap();
        let feats: Vec<Tensor> = [33, 17, 9, 5]
            .iter()
            .map(|&s| Tensor::randn([1, 8, s, s + 1], (Kind::Float, Device::Cpu)))
            .collect();
        let outs = fpn.forward(&feats);
        let sizes: Vec<Vec<i64>> = outs.iter().map(|o| o.size()).collect();
        assert_eq!(sizes[0], [1, 16, 33, 34]);
        assert_eq!(sizes[3], [1, 16, 5, 6]);
        assert_eq!(sizes[4], [1, 16, 3, 3]);
        let strides: Vec<u32> = fpn.out_shapes().iter().map(|s| s.stride).collect();
        assert_eq!(strides, [2, 4, 8, 16, 32]);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(names.len(), 16);
        assert_eq!(names[0], "fpn_convs.0.conv.bias");
        assert!(names.contains(&"lateral_convs.3.conv.weight".to_string()));
    }

    #[test]
    fn rejects_strides_that_do_not_double() {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = Fpn::new(&vs.root(), &FpnConfig::default(), &shapes(&[4, 16])).unwrap_err();
        assert!(err.to_string().contains("(8, 16)"), "{err}");
        let cfg = FpnConfig { num_outs: 1, ..Default::default() };
        assert!(Fpn::new(&vs.root(), &cfg, &shapes(&[4, 8])).is_err());
    }

    #[test]
    fn top_level_gets_no_top_down_input() {
        // With one level the FPN is just the two convolutions.
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = FpnConfig { out_channels: 4, num_outs: 1 };
        let fpn = Fpn::new(&vs.root(), &cfg, &shapes(&[8])).unwrap();
        let x = Tensor::randn([1, 8, 5, 5], (Kind::Float, Device::Cpu));
        let y = fpn.forward(std::slice::from_ref(&x));
        let want = fpn.fpn_convs[0].conv.forward(&fpn.lateral_convs[0].conv.forward(&x));
        assert!(y[0].allclose(&want, 1e-6, 1e-6, false));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use tch::{Device, Kind};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// For any input size, every output keeps its lateral's size and extra levels halve
        /// (rounding up) the previous one.
        #[test]
        fn output_sizes_follow_the_inputs(h in 1i64..40, w in 1i64..40, levels in 1usize..5, extra in 0usize..3) {
            let vs = nn::VarStore::new(Device::Cpu);
            let shapes: Vec<ShapeSpec> =
                (0..levels).map(|i| ShapeSpec { channels: 3, stride: 4 << i }).collect();
            let cfg = FpnConfig { out_channels: 4, num_outs: levels + extra };
            let fpn = Fpn::new(&vs.root(), &cfg, &shapes).unwrap();
            let mut sizes = vec![(h, w)];
            for _ in 1..levels {
                let (a, b) = *sizes.last().unwrap();
                sizes.push(((a + 1) / 2, (b + 1) / 2));
            }
            let feats: Vec<Tensor> = sizes
                .iter()
                .map(|&(a, b)| Tensor::randn([1, 3, a, b], (Kind::Float, Device::Cpu)))
                .collect();
            let outs = fpn.forward(&feats);
            prop_assert_eq!(outs.len(), levels + extra);
            for _ in 0..extra {
                let (a, b) = *sizes.last().unwrap();
                sizes.push(((a + 1) / 2, (b + 1) / 2));
            }
            for (o, &(a, b)) in outs.iter().zip(&sizes) {
                prop_assert_eq!(o.size(), vec![1, 4, a, b]);
            }
        }
    }
}
