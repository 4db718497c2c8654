//! [`DetectorConfig`]: everything that defines a detector's architecture — the `[model]` table of
//! the example configs, `configs/maskrcnn.toml`, and the `model.toml` of a run folder.

use std::path::Path;

use cellseg_backbones::{BackboneConfig, FpnConfig, TinyConfig, TinyConvNet};
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::config::HeadsConfig;
use crate::detectors::TwoStageDetector;
use crate::detectors::mask_rcnn::MaskRcnn;
use crate::{Error, Result};

/// The detector architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Mask R-CNN (`configs/maskrcnn.toml`).
    MaskRcnn,
    /// Cascade Mask R-CNN (3 stages).
    Cascade,
    /// Hybrid Task Cascade.
    Htc,
}

impl Arch {
    /// The name used in configs (`mask_rcnn`, `cascade`, `htc`).
    pub fn name(self) -> &'static str {
        match self {
            Self::MaskRcnn => "mask_rcnn",
            Self::Cascade => "cascade",
            Self::Htc => "htc",
        }
    }
}

/// The trunk a detector is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trunk {
    /// [`TinyConvNet`] (`DetectorConfig::tiny`): CPU demos and tests.
    Tiny,
    /// A ResNet / ResNeXt / EfficientNet of cellseg-backbones (`DetectorConfig::backbone`).
    Backbone,
}

/// Everything that defines a detector's architecture. Defaults: the seed's Mask R-CNN
/// (`configs/maskrcnn.toml`: ResNet-50, stride-1 stem, FPN 256, mmdet 2.17 heads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Which detector (default [`Arch::MaskRcnn`]).
    pub arch: Arch,
    /// Which trunk to build (default [`Trunk::Backbone`]).
    pub trunk: Trunk,
    /// Widths of the tiny trunk (used when `trunk = "tiny"`).
    pub tiny: TinyConfig,
    /// The backbone (used when `trunk = "backbone"`).
    pub backbone: BackboneConfig,
    /// FPN.
    pub neck: FpnConfig,
    /// RPN and RoI heads.
    pub heads: HeadsConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            arch: Arch::MaskRcnn,
            trunk: Trunk::Backbone,
            tiny: TinyConfig::default(),
            backbone: BackboneConfig::default(),
            neck: FpnConfig::default(),
            heads: HeadsConfig::default(),
        }
    }
}

impl DetectorConfig {
    /// Loads and validates a TOML file.
    ///
    /// # Errors
    /// Parse errors name the file, line and key; semantic errors name the key.
    pub fn from_toml(path: impl AsRef<Path>) -> Result<Self> {
        let cfg: Self = cellseg_core::config::load_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the heads' and the used trunk's settings.
    ///
    /// # Errors
    /// [`Error::Config`] (or the backbone's error) naming the key.
    pub fn validate(&self) -> Result<()> {
        self.heads.validate()?;
        if self.trunk == Trunk::Backbone {
            self.backbone.validate()?;
        }
        Ok(())
    }

    /// Builds the detector under `p` (use the VarStore root to get mmdet's keys: `backbone.*`,
    /// `neck.*`, `rpn_head.*`, `roi_head.*`), randomly initialised.
    ///
    /// # Errors
    /// Invalid configs, and [`Error::NotBuilt`] for an architecture this version cannot build.
    pub fn build(&self, p: &nn::Path) -> Result<Box<dyn TwoStageDetector>> {
        self.validate()?;
        match self.arch {
            Arch::MaskRcnn => {}
            arch @ (Arch::Cascade | Arch::Htc) => {
                return Err(Error::NotBuilt { arch: arch.name() });
            }
        }
        let trunk: Box<dyn cellseg_backbones::Backbone> = match self.trunk {
            Trunk::Tiny => Box::new(TinyConvNet::new(&(p / "backbone"), &self.tiny)?),
            Trunk::Backbone => Box::new(self.backbone.build(&(p / "backbone"))?),
        };
        Ok(Box::new(MaskRcnn::with_backbone(p, trunk, &self.neck, &self.heads)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_config_file_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/maskrcnn.toml");
        let cfg = DetectorConfig::from_toml(&path).unwrap();
        assert_eq!(cfg, DetectorConfig::default());
        assert_eq!(cfg.heads.rpn.anchors.strides, [2, 4, 8, 16, 32]);
        assert_eq!(cfg.heads.test.max_per_img, 1000);
    }

    #[test]
    fn misspelt_key_is_an_error_naming_it() {
        let err = cellseg_core::config::parse_toml::<DetectorConfig>(
            "[heads]\nnum_clases = 3\n",
            "x.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("num_clases"), "{err}");
        let err = cellseg_core::config::parse_toml::<DetectorConfig>("arch = \"yolo\"\n", "x.toml")
            .unwrap_err();
        assert!(err.to_string().contains("yolo"), "{err}");
    }

    #[test]
    fn cascade_and_htc_are_not_built_yet() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        for arch in [Arch::Cascade, Arch::Htc] {
            let cfg = DetectorConfig { arch, trunk: Trunk::Tiny, ..DetectorConfig::default() };
            let err = cfg.build(&vs.root()).unwrap_err();
            assert!(err.to_string().contains(arch.name()), "{err}");
        }
    }
}
