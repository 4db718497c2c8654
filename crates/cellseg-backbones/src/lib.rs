//! ResNet / ResNeXt / EfficientNet trunks and the FPN neck of the seed's detectors, with variable
//! names equal to the PyTorch `state_dict` keys, and a strict safetensors checkpoint loader.
//!
//! Needs libtorch (tch).
//!
//! # Brief overview
//! - [`Backbone`]: `out_shapes()` ([`ShapeSpec`]: channels, stride) and
//!   `forward(&images, train) -> Vec<Tensor>`, high to low resolution; [`FeatureMaps`] pairs the
//!   maps with their strides.
//! - [`ResNet`] (ResNet-50/101, ResNeXt-101 32x4d / 64x4d / 32x8d, torchvision names, C2..C5) and
//!   [`EfficientNet`] (timm `tf_efficientnet_b3..b7_ns`, TF "same" padding, blocks 1/2/4/6).
//! - [`BackboneConfig`] (`configs/backbones/*.toml`): the trunk, the seed's stride-1 stem switch
//!   (features at strides 2/4/8/16), [`Norm`] (train / `norm_eval` / frozen BN), `frozen_stages`.
//! - [`Fpn`] ([`FpnConfig`]): mmdet's FPN, `lateral_convs.{i}.conv`, `fpn_convs.{i}.conv`.
//! - [`checkpoint`]: strict loading (every missing / unexpected / wrongly shaped key in one
//!   error) into any `VarStore`, optionally under a prefix; mmdet key mapping; atomic saving.
//!
//! Weights come from `tools/export_weights.py` (torchvision / timm / mmdet `.pth` →
//! safetensors); nothing here downloads them.
//!
//! # Example
//! ```no_run
//! use cellseg_backbones::{Backbone, BackboneConfig, BackboneKind, Fpn, FpnConfig, checkpoint};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let cfg = BackboneConfig::new(BackboneKind::Resnet50); // stride-1 stem, norm_eval
//! let backbone = cfg.build(&(vs.root() / "backbone"))?;
//! let fpn = Fpn::new(&(vs.root() / "neck"), &FpnConfig::default(), &backbone.out_shapes())?;
//! // A torchvision resnet50 exported with tools/export_weights.py, loaded into the trunk only.
//! let policy = checkpoint::LoadPolicy::with_prefix("backbone");
//! checkpoint::load(&vs, "resnet50.safetensors", &policy)?;
//! let images = Tensor::zeros([1, 3, 256, 256], (Kind::Float, Device::Cpu));
//! let feats = tch::no_grad(|| fpn.forward(&backbone.forward(&images, false)));
//! assert_eq!(feats[0].size(), [1, 256, 128, 128]); // stride 2
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backbone;
pub mod checkpoint;
pub mod conv;
pub mod efficientnet;
pub mod error;
pub mod fpn;
pub mod norm;
pub mod pth;
pub mod resnet;
pub mod tiny;

pub use backbone::{
    AnyBackbone, Backbone, BackboneConfig, BackboneKind, FeatureLevel, FeatureMaps, ShapeSpec,
};
pub use checkpoint::{KeyMap, LoadPolicy, LoadReport};
pub use efficientnet::{EfficientNet, EfficientNetVariant};
pub use error::{Error, KeyProblems, Result, ShapeMismatch};
pub use fpn::{Fpn, FpnConfig};
pub use norm::{BatchNorm2d, Norm};
pub use resnet::{ResNet, ResNetVariant};
pub use tiny::{TinyConfig, TinyConvNet};
