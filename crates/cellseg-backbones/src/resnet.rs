//! ResNet and ResNeXt trunks, mmdet `style='pytorch'` (= torchvision: the stride sits on the 3×3
//! convolution), returning the four stage outputs C2..C5.
//!
//! # References
//! He et al., "Deep Residual Learning for Image Recognition" (2016); Xie et al., "Aggregated
//! Residual Transformations for Deep Neural Networks" (2017). Semantics follow torchvision 0.26
//! `models/resnet.py` and mmdet 2.17 `models/backbones/{resnet,resnext}.py`.

use tch::{Tensor, nn};

use crate::backbone::{Backbone, BackboneConfig, ShapeSpec};
use crate::conv::{Conv2d, ConvOptions, Padding};
use crate::norm::{BatchNorm2d, Norm};

/// Depth and grouping of a ResNet / ResNeXt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetVariant {
    /// 50, 101 or 152 (see [`ResNetVariant::blocks`]).
    pub depth: u32,
    /// Groups of the 3×3 convolutions (1 for ResNet, 32 or 64 for ResNeXt).
    pub groups: i64,
    /// Width per group (64 for ResNet, 4 or 8 for ResNeXt).
    pub width_per_group: i64,
}

impl ResNetVariant {
    /// Bottleneck blocks per stage: `[3, 4, 6, 3]` for depth 50, `[3, 4, 23, 3]` for 101,
    /// `[3, 8, 36, 3]` for 152.
    ///
    /// # Panics
    /// For other depths.
    pub fn blocks(&self) -> [usize; 4] {
        match self.depth {
            50 => [3, 4, 6, 3],
            101 => [3, 4, 23, 3],
            152 => [3, 8, 36, 3],
            d => panic!("ResNet depth {d} is not built (50, 101 or 152)"),
        }
    }

    /// Width of the grouped 3×3 convolution of a stage with `planes` (64, 128, 256, 512):
    /// `floor(planes · width_per_group / 64) · groups` (torchvision and mmdet agree).
    pub fn width(&self, planes: i64) -> i64 {
        planes * self.width_per_group / 64 * self.groups
    }
}

const EXPANSION: i64 = 4;
const BN_EPS: f64 = 1e-5;

/// torchvision `Sequential(conv1x1, BatchNorm2d)` shortcut: keys `0.weight`, `1.*`.
#[derive(Debug)]
struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

/// torchvision / mmdet `Bottleneck`.
///
/// # Checkpoint keys
/// `conv{1,2,3}.weight`, `bn{1,2,3}.*`, `downsample.0.weight`, `downsample.1.*`.
#[derive(Debug)]
pub struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    downsample: Option<Downsample>,
}

impl Bottleneck {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &nn::Path,
        c_in: i64,
        planes: i64,
        stride: i64,
        v: ResNetVariant,
        norm: Norm,
        frozen: bool,
        zero_init_residual: bool,
    ) -> Self {
        let width = v.width(planes);
        let c_out = planes * EXPANSION;
        let o = ConvOptions { trainable: !frozen, ..Default::default() };
        let conv1 = Conv2d::new(&(p / "conv1"), c_in, width, 1, o);
        let bn1 = BatchNorm2d::new(&(p / "bn1"), width, BN_EPS, norm, frozen);
        let o3 = ConvOptions { stride, padding: Padding::Explicit(1), groups: v.groups, ..o };
        let conv2 = Conv2d::new(&(p / "conv2"), width, width, 3, o3);
        let bn2 = BatchNorm2d::new(&(p / "bn2"), width, BN_EPS, norm, frozen);
        let conv3 = Conv2d::new(&(p / "conv3"), width, c_out, 1, o);
        let mut bn3 = BatchNorm2d::new(&(p / "bn3"), c_out, BN_EPS, norm, frozen);
        if zero_init_residual {
            bn3.zero_scale();
        }
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = p / "downsample";
            Downsample {
                conv: Conv2d::new(&(&d / 0), c_in, c_out, 1, ConvOptions { stride, ..o }),
                bn: BatchNorm2d::new(&(&d / 1), c_out, BN_EPS, norm, frozen),
            }
        });
        Self { conv1, bn1, conv2, bn2, conv3, bn3, downsample }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        // In-place activations and residual add, as torchvision (`ReLU(inplace=True)`, `+=`).
        let y = self.bn1.forward(&self.conv1.forward(x), train).relu_();
        let y = self.bn2.forward(&self.conv2.forward(&y), train).relu_();
        let mut y = self.bn3.forward(&self.conv3.forward(&y), train);
        let shortcut = match &self.downsample {
            Some(d) => d.bn.forward(&d.conv.forward(x), train),
            None => x.shallow_clone(),
        };
        y += shortcut;
        y.relu_()
    }
}

/// ResNet / ResNeXt trunk with torchvision names; returns C2..C5.
///
/// # Checkpoint keys
/// `conv1.weight`, `bn1.*`, `layer{1..4}.{i}.conv{1,2,3}.weight`, `layer{1..4}.{i}.bn{1,2,3}.*`,
/// `layer{1..4}.0.downsample.{0,1}.*` — the torchvision `state_dict` without `fc.*`, and the
/// mmdet checkpoint's `backbone.*` keys without the prefix.
#[derive(Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layer1: Vec<Bottleneck>,
    layer2: Vec<Bottleneck>,
    layer3: Vec<Bottleneck>,
    layer4: Vec<Bottleneck>,
    out_shapes: Vec<ShapeSpec>,
}

impl ResNet {
    /// Builds the trunk under `p` with `cfg.stem_stride`, `cfg.norm`, `cfg.frozen_stages` and
    /// `cfg.zero_init_residual` (the other fields of `cfg` are ignored).
    ///
    /// # Panics
    /// If `cfg.stem_stride` is not 1 or 2 or the depth is not 50/101/152 (checked by
    /// [`BackboneConfig::validate`]).
    pub fn new(p: &nn::Path, v: ResNetVariant, cfg: &BackboneConfig) -> Self {
        assert!(matches!(cfg.stem_stride, 1 | 2), "stem_stride must be 1 or 2");
        let frozen = |stage: i64| stage <= cfg.frozen_stages;
        let o = ConvOptions {
            stride: cfg.stem_stride,
            padding: Padding::Explicit(3),
            trainable: !frozen(0),
            ..Default::default()
        };
        let conv1 = Conv2d::new(&(p / "conv1"), 3, 64, 7, o);
        let bn1 = BatchNorm2d::new(&(p / "bn1"), 64, BN_EPS, cfg.norm, frozen(0));
        let mut c_in = 64;
        let mut stride = 2 * cfg.stem_stride as u32;
        let mut layers: Vec<Vec<Bottleneck>> = Vec::with_capacity(4);
        let mut out_shapes = Vec::with_capacity(4);
        for (i, (&n, planes)) in v.blocks().iter().zip([64, 128, 256, 512]).enumerate() {
            let first_stride = if i == 0 { 1 } else { 2 };
            if i > 0 {
                stride *= 2;
            }
            let lp = p / format!("layer{}", i + 1);
            let is_frozen = frozen(i as i64 + 1);
            let blocks = (0..n)
                .map(|b| {
                    let s = if b == 0 { first_stride } else { 1 };
                    let block = Bottleneck::new(
                        &(&lp / b),
                        c_in,
                        planes,
                        s,
                        v,
                        cfg.norm,
                        is_frozen,
                        cfg.zero_init_residual,
                    );
                    c_in = planes * EXPANSION;
                    block
                })
                .collect();
            layers.push(blocks);
            out_shapes.push(ShapeSpec { channels: c_in, stride });
        }
        let mut it = layers.into_iter();
        let mut next = || it.next().expect("four stages are built above");
        Self {
            conv1,
            bn1,
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            out_shapes,
        }
    }
}

impl Backbone for ResNet {
    fn out_shapes(&self) -> Vec<ShapeSpec> {
        self.out_shapes.clone()
    }

    fn forward(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        let x = self.bn1.forward(&self.conv1.forward(images), train).relu_();
        let mut x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        let mut outs = Vec::with_capacity(4);
        for layer in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            for block in layer {
                x = block.forward(&x, train);
            }
            outs.push(x.shallow_clone());
        }
        outs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackboneKind;
    use tch::{Device, Kind};

    #[test]
    fn resnext_widths_match_torchvision() {
        let v = BackboneKind::Resnext101_32x8d.resnet().unwrap();
        assert_eq!([64, 128, 256, 512].map(|p| v.width(p)), [256, 512, 1024, 2048]);
        let v = BackboneKind::Resnext101_32x4d.resnet().unwrap();
        assert_eq!(v.width(64), 128);
        let v = BackboneKind::Resnet50.resnet().unwrap();
        assert_eq!(v.width(64), 64);
    }

    #[test]
    fn stem_stride_one_halves_every_stride() {
        let vs = nn::VarStore::new(Device::Cpu);
        for (s, want) in [(2, [4, 8, 16, 32]), (1, [2, 4, 8, 16])] {
            let cfg = BackboneConfig { stem_stride: s, ..Default::default() };
            let m = ResNet::new(&(vs.root() / s), BackboneKind::Resnet50.resnet().unwrap(), &cfg);
            let x = Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu));
            let outs = tch::no_grad(|| m.forward(&x, false));
            for ((o, spec), w) in outs.iter().zip(m.out_shapes()).zip(want) {
                assert_eq!(spec.stride, w);
                assert_eq!(o.size(), [1, spec.channels, 32 / w as i64, 32 / w as i64]);
            }
        }
    }

    #[test]
    fn zero_init_residual_starts_every_bottleneck_as_its_shortcut() {
        let v = BackboneKind::Resnet50.resnet().unwrap();
        let x = Tensor::randn([1, 256, 8, 8], (Kind::Float, Device::Cpu));
        for zero in [true, false] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = BackboneConfig { zero_init_residual: zero, ..Default::default() };
            let m = ResNet::new(&vs.root(), v, &cfg);
            let vars = vs.variables();
            let bn3: Vec<_> = vars.iter().filter(|(k, _)| k.ends_with("bn3.weight")).collect();
            assert_eq!(bn3.len(), 16);
            for (k, w) in bn3 {
                let want = if zero { 0.0 } else { 1.0 };
                assert!(w.eq(want).all().int64_value(&[]) == 1, "{k}");
            }
            // layer1.1 has no downsample: with the zero scale it is relu(x).
            let block = &m.layer1[1];
            let y = tch::no_grad(|| block.forward(&x, false));
            assert_eq!(y.equal(&x.relu()), zero);
        }
    }

    #[test]
    fn frozen_stages_leave_their_parameters_untrainable() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = BackboneConfig { frozen_stages: 1, ..Default::default() };
        let _m = ResNet::new(&vs.root(), BackboneKind::Resnet50.resnet().unwrap(), &cfg);
        let vars = vs.variables();
        for (name, t) in &vars {
            let frozen =
                name.starts_with("conv1") || name.starts_with("bn1") || name.starts_with("layer1");
            if !frozen && (name.ends_with("weight") || name.ends_with(".bias")) {
                assert!(t.requires_grad(), "{name} should train");
            } else {
                assert!(!t.requires_grad(), "{name} should be frozen");
            }
        }
    }

    #[test]
    fn gradients_reach_trainable_stages_only() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = BackboneConfig { frozen_stages: 1, norm: Norm::BatchNorm, ..Default::default() };
        let m = ResNet::new(&vs.root(), BackboneKind::Resnet50.resnet().unwrap(), &cfg);
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let outs = m.forward(&x, true);
        let loss =
            outs.iter().map(|o| o.mean(Kind::Float)).fold(Tensor::from(0.0f32), |a, b| a + b);
        loss.backward();
        let vars = vs.variables();
        assert!(vars["layer2.0.conv1.weight"].grad().defined());
        assert!(vars["layer4.2.bn3.weight"].grad().defined());
        assert!(!vars["conv1.weight"].grad().defined());
        assert!(!vars["layer1.0.conv2.weight"].grad().defined());
        // Training-mode batch norm updated the running statistics of trainable stages only.
        assert_eq!(vars["layer2.0.bn1.num_batches_tracked"].int64_value(&[]), 1);
        assert_eq!(vars["layer1.0.bn1.num_batches_tracked"].int64_value(&[]), 0);
    }
}
