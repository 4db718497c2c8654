//! The [`Backbone`] trait, [`ShapeSpec`], [`FeatureMaps`], and the config that picks a trunk.

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::efficientnet::{EfficientNet, EfficientNetVariant};
use crate::norm::Norm;
use crate::resnet::{ResNet, ResNetVariant};
use crate::{Error, Result};

/// What one feature level promises: its channels and its stride in input pixels.
///
/// detectron2's `ShapeSpec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShapeSpec {
    /// Number of channels.
    pub channels: i64,
    /// Input pixels per feature pixel (2, 4, 8, … ; the seed's stride-1 stem halves them).
    pub stride: u32,
}

/// One feature map with its stride.
#[derive(Debug)]
pub struct FeatureLevel {
    /// Input pixels per feature pixel.
    pub stride: u32,
    /// The map, `[N, C, H, W]` f32.
    pub tensor: Tensor,
}

/// Feature maps ordered from high to low resolution (strides increasing), keyed by stride rather
/// than "C2"/"P2" names because the seed's stride-1 stem shifts every level by one octave.
#[derive(Debug, Default)]
pub struct FeatureMaps {
    /// The levels, strides increasing.
    pub levels: Vec<FeatureLevel>,
}

impl FeatureMaps {
    /// Pairs `tensors` with the strides of `shapes` (same length and order).
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn new(tensors: Vec<Tensor>, shapes: &[ShapeSpec]) -> Self {
        assert_eq!(tensors.len(), shapes.len(), "FeatureMaps: tensors and shapes differ in length");
        let levels = tensors
            .into_iter()
            .zip(shapes)
            .map(|(tensor, s)| FeatureLevel { stride: s.stride, tensor })
            .collect();
        Self { levels }
    }

    /// The tensors, high to low resolution.
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.levels.iter().map(|l| &l.tensor).collect()
    }

    /// The strides, increasing.
    pub fn strides(&self) -> Vec<u32> {
        self.levels.iter().map(|l| l.stride).collect()
    }

    /// The level with this stride, if any.
    pub fn get(&self, stride: u32) -> Option<&Tensor> {
        self.levels.iter().find(|l| l.stride == stride).map(|l| &l.tensor)
    }

    /// Number of levels.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// `true` when there is no level.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Takes the tensors out, high to low resolution.
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.levels.into_iter().map(|l| l.tensor).collect()
    }
}

/// A trunk that turns images into multi-scale feature maps.
pub trait Backbone: std::fmt::Debug + Send {
    /// Channels and stride of each output, high to low resolution.
    fn out_shapes(&self) -> Vec<ShapeSpec>;

    /// Runs the trunk on `images` and returns one map per entry of [`Backbone::out_shapes`].
    ///
    /// `train` selects training behaviour (batch-norm statistics per [`Norm`], stochastic
    /// depth); frozen parts ignore it.
    ///
    /// # Shapes
    /// `images`: `[N, 3, H, W]` f32, normalised. Output `i`: `[N, C_i, ⌈H/s_i⌉, ⌈W/s_i⌉]` for
    /// EfficientNet; ResNet rounds like PyTorch's convolutions (`floor((H-1)/2)+1` per halving).
    ///
    /// # Panics
    /// If `images` does not have 3 channels (libtorch shape error).
    fn forward(&self, images: &Tensor, train: bool) -> Vec<Tensor>;

    /// [`Backbone::forward`] with the strides attached.
    fn features(&self, images: &Tensor, train: bool) -> FeatureMaps {
        FeatureMaps::new(self.forward(images, train), &self.out_shapes())
    }
}

/// The trunks this crate builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    /// ResNet-50 (torchvision `resnet50`, mmdet `ResNet(depth=50)`).
    Resnet50,
    /// ResNet-101.
    Resnet101,
    /// ResNeXt-101 32x4d (mmdet `open-mmlab://resnext101_32x4d`; not in torchvision).
    #[serde(rename = "resnext101_32x4d")]
    Resnext101_32x4d,
    /// ResNeXt-101 64x4d (torchvision `resnext101_64x4d`).
    #[serde(rename = "resnext101_64x4d")]
    Resnext101_64x4d,
    /// ResNeXt-101 32x8d (torchvision `resnext101_32x8d`).
    #[serde(rename = "resnext101_32x8d")]
    Resnext101_32x8d,
    /// timm `tf_efficientnet_b3_ns`.
    TfEfficientnetB3,
    /// timm `tf_efficientnet_b4_ns`.
    TfEfficientnetB4,
    /// timm `tf_efficientnet_b5_ns`.
    TfEfficientnetB5,
    /// timm `tf_efficientnet_b6_ns`.
    TfEfficientnetB6,
    /// timm `tf_efficientnet_b7_ns`.
    TfEfficientnetB7,
}

impl BackboneKind {
    /// Every kind, ResNets first.
    pub const ALL: [BackboneKind; 10] = [
        Self::Resnet50,
        Self::Resnet101,
        Self::Resnext101_32x4d,
        Self::Resnext101_64x4d,
        Self::Resnext101_32x8d,
        Self::TfEfficientnetB3,
        Self::TfEfficientnetB4,
        Self::TfEfficientnetB5,
        Self::TfEfficientnetB6,
        Self::TfEfficientnetB7,
    ];

    /// The name used in configs and file names (`resnet50`, `resnext101_32x8d`, `tf_efficientnet_b4`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Resnet50 => "resnet50",
            Self::Resnet101 => "resnet101",
            Self::Resnext101_32x4d => "resnext101_32x4d",
            Self::Resnext101_64x4d => "resnext101_64x4d",
            Self::Resnext101_32x8d => "resnext101_32x8d",
            Self::TfEfficientnetB3 => "tf_efficientnet_b3",
            Self::TfEfficientnetB4 => "tf_efficientnet_b4",
            Self::TfEfficientnetB5 => "tf_efficientnet_b5",
            Self::TfEfficientnetB6 => "tf_efficientnet_b6",
            Self::TfEfficientnetB7 => "tf_efficientnet_b7",
        }
    }

    /// The ResNet variant, when this is a ResNet / ResNeXt.
    pub fn resnet(self) -> Option<ResNetVariant> {
        Some(match self {
            Self::Resnet50 => ResNetVariant { depth: 50, groups: 1, width_per_group: 64 },
            Self::Resnet101 => ResNetVariant { depth: 101, groups: 1, width_per_group: 64 },
            Self::Resnext101_32x4d => ResNetVariant { depth: 101, groups: 32, width_per_group: 4 },
            Self::Resnext101_64x4d => ResNetVariant { depth: 101, groups: 64, width_per_group: 4 },
            Self::Resnext101_32x8d => ResNetVariant { depth: 101, groups: 32, width_per_group: 8 },
            _ => return None,
        })
    }

    /// The EfficientNet variant, when this is an EfficientNet.
    pub fn efficientnet(self) -> Option<EfficientNetVariant> {
        Some(match self {
            Self::TfEfficientnetB3 => EfficientNetVariant::B3,
            Self::TfEfficientnetB4 => EfficientNetVariant::B4,
            Self::TfEfficientnetB5 => EfficientNetVariant::B5,
            Self::TfEfficientnetB6 => EfficientNetVariant::B6,
            Self::TfEfficientnetB7 => EfficientNetVariant::B7,
            _ => return None,
        })
    }
}

/// A trunk and how it trains (`configs/backbones/*.toml`).
///
/// Defaults are the seed's ResNet-50 settings (`SEED.md` §2.1–2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackboneConfig {
    /// File format version; 1.
    pub version: u32,
    /// Which trunk. Default `resnet50`.
    pub kind: BackboneKind,
    /// Stride of the first convolution (ResNet `conv1`, EfficientNet `conv_stem`): 2 as
    /// published, 1 for the seed's trick (`SEED.md` §2.1 step 3) that gives features at strides
    /// 2/4/8/16 instead of 4/8/16/32. Default 1 (the seed's).
    pub stem_stride: i64,
    /// Batch-norm behaviour in training. Default `batch_norm_eval` (mmdet `norm_eval=True`, the
    /// seed's for every ResNet / ResNeXt).
    pub norm: Norm,
    /// mmdet `frozen_stages`: -1 freezes nothing, 0 the stem, `k` the stem and stages 1..=k
    /// (parameters constant, batch norm in eval mode). Default -1 (the seed's, except
    /// ResNeXt-101 32x8d which uses 1).
    pub frozen_stages: i64,
    /// Stochastic depth of the EfficientNet blocks (timm `drop_path_rate`, linear in the block
    /// index); ignored by ResNets. Default 0.2 (the seed's timm call).
    pub drop_path_rate: f64,
    /// mmdet `zero_init_residual`: a new ResNet / ResNeXt starts with the scale (`bn3.weight`)
    /// of the last batch norm of every bottleneck at 0, so that each block starts as its
    /// shortcut. Only the initial values change: weights loaded afterwards (any pretrained
    /// checkpoint, as the seed always loads) replace them. Ignored by EfficientNets (timm has
    /// no such init). Default true (mmdet 2.17 `ResNet`'s default, applied there whenever no
    /// pretrained weights are given); torchvision's `resnet50()` default is false.
    pub zero_init_residual: bool,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self {
            version: 1,
            kind: BackboneKind::Resnet50,
            stem_stride: 1,
            norm: Norm::BatchNormEval,
            frozen_stages: -1,
            drop_path_rate: 0.2,
            zero_init_residual: true,
        }
    }
}

impl BackboneConfig {
    /// A config for `kind` with the other fields at their defaults.
    pub fn new(kind: BackboneKind) -> Self {
        Self { kind, ..Self::default() }
    }

    /// Loads and validates a TOML file.
    ///
    /// # Errors
    /// [`Error::Core`] for I/O and parse errors (naming the file and key), [`Error::InvalidConfig`]
    /// for out-of-range values.
    pub fn from_toml(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let cfg: Self = cellseg_core::config::load_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the ranges of the values.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.version != 1 {
            return Err(Error::InvalidConfig {
                key: "version",
                value: self.version.to_string(),
                reason: "only version 1 exists",
            });
        }
        if !matches!(self.stem_stride, 1 | 2) {
            return Err(Error::InvalidConfig {
                key: "stem_stride",
                value: self.stem_stride.to_string(),
                reason: "must be 1 or 2",
            });
        }
        if !(-1..=4).contains(&self.frozen_stages) {
            return Err(Error::InvalidConfig {
                key: "frozen_stages",
                value: self.frozen_stages.to_string(),
                reason: "must be in -1..=4",
            });
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(Error::InvalidConfig {
                key: "drop_path_rate",
                value: self.drop_path_rate.to_string(),
                reason: "must be in [0, 1)",
            });
        }
        Ok(())
    }

    /// Builds the trunk under `p` (its variables are named like the torchvision / timm
    /// `state_dict` below `p`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when [`BackboneConfig::validate`] fails.
    pub fn build(&self, p: &nn::Path) -> Result<AnyBackbone> {
        self.validate()?;
        if let Some(v) = self.kind.resnet() {
            Ok(AnyBackbone::ResNet(ResNet::new(p, v, self)))
        } else if let Some(v) = self.kind.efficientnet() {
            Ok(AnyBackbone::EfficientNet(EfficientNet::new(p, v, self)))
        } else {
            unreachable!("every BackboneKind is a ResNet or an EfficientNet")
        }
    }
}

/// Any trunk of this crate (what [`BackboneConfig::build`] returns).
#[derive(Debug)]
pub enum AnyBackbone {
    /// ResNet / ResNeXt.
    ResNet(ResNet),
    /// TF EfficientNet.
    EfficientNet(EfficientNet),
}

impl Backbone for AnyBackbone {
    fn out_shapes(&self) -> Vec<ShapeSpec> {
        match self {
            Self::ResNet(m) => m.out_shapes(),
            Self::EfficientNet(m) => m.out_shapes(),
        }
    }

    fn forward(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        match self {
            Self::ResNet(m) => m.forward(images, train),
            Self::EfficientNet(m) => m.forward(images, train),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_the_seeds_resnet50() {
        let cfg: BackboneConfig = cellseg_core::config::parse_toml("", "x.toml").unwrap();
        assert_eq!(cfg, BackboneConfig::default());
        assert_eq!(cfg.stem_stride, 1);
        assert_eq!(cfg.norm, Norm::BatchNormEval);
    }

    #[test]
    fn config_rejects_unknown_keys_and_bad_values() {
        let err = cellseg_core::config::parse_toml::<BackboneConfig>("stem_strid = 1", "b.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("stem_strid") && err.contains("b.toml"), "{err}");
        let cfg = BackboneConfig { stem_stride: 3, ..Default::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("stem_stride"));
        let cfg = BackboneConfig { frozen_stages: 5, ..Default::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("frozen_stages"));
    }

    #[test]
    fn kind_names_round_trip_through_toml() {
        for kind in BackboneKind::ALL {
            let text = format!("kind = \"{}\"", kind.name());
            let cfg: BackboneConfig = cellseg_core::config::parse_toml(&text, "k.toml").unwrap();
            assert_eq!(cfg.kind, kind);
        }
    }
}
