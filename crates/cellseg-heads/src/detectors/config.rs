//! [`DetectorConfig`]: everything that defines a detector's architecture — the `[model]` table of
//! the example configs, `configs/maskrcnn.toml`, and the `model.toml` of a run folder.

use std::path::Path;

use cellseg_backbones::{BackboneConfig, FpnConfig, TinyConfig, TinyConvNet};
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::config::HeadsConfig;
use crate::config::{BoxLoss, CascadeConfig, HtcConfig};
use crate::detectors::TwoStageDetector;
use crate::detectors::cascade::CascadeRcnn;
use crate::detectors::mask_rcnn::MaskRcnn;
use crate::{Error, Result};

/// The detector architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Mask R-CNN (`configs/maskrcnn.toml`).
    MaskRcnn,
    /// Cascade Mask R-CNN (`configs/cascade.toml`; stages from `[heads.cascade]`).
    Cascade,
    /// Hybrid Task Cascade (`configs/htc.toml`; `[heads.cascade]` and `[heads.htc]`).
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

    /// The architecture's name in prose (`Mask R-CNN`, `Cascade Mask R-CNN`, `Hybrid Task
    /// Cascade (HTC)`).
    pub fn title(self) -> &'static str {
        match self {
            Self::MaskRcnn => "Mask R-CNN",
            Self::Cascade => "Cascade Mask R-CNN",
            Self::Htc => "Hybrid Task Cascade (HTC)",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;

    /// Parses a config name (`mask_rcnn`, `cascade`, `htc`).
    fn from_str(s: &str) -> Result<Self> {
        [Self::MaskRcnn, Self::Cascade, Self::Htc].into_iter().find(|a| a.name() == s).ok_or_else(
            || Error::Config {
                key: "arch".into(),
                reason: format!("unknown architecture `{s}` (mask_rcnn, cascade, htc)"),
            },
        )
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
    /// A small Mask R-CNN on the `TinyConvNet` trunk (widths 16 / 32 / 32 / 32 at strides 2–16,
    /// 32 FPN channels, 8–128 px anchors, 64-wide box head, two 32-wide mask convs, 200 / 100
    /// proposals, test score 0.3, 100 detections) with `num_classes` classes: it learns synthetic
    /// cells in a few hundred CPU steps, for tests and small demos. [`Self::to_arch`] makes it a
    /// cascade or HTC.
    pub fn tiny(num_classes: i64) -> Self {
        let mut h = HeadsConfig { num_classes, ..HeadsConfig::default() };
        h.rpn.feat_channels = 32;
        h.rpn.anchors.scales = vec![4.0];
        h.rpn.sampler.num = 128;
        h.rpn.train_proposals.nms_pre = 200;
        h.rpn.train_proposals.max_per_img = 100;
        h.rpn.test_proposals.nms_pre = 200;
        h.rpn.test_proposals.max_per_img = 100;
        h.bbox_head.fc_channels = 64;
        h.bbox_head.sampler.num = 64;
        h.mask_head.conv_channels = 32;
        h.mask_head.num_convs = 2;
        h.test.score_thr = 0.3;
        h.test.max_per_img = 100;
        Self {
            arch: Arch::MaskRcnn,
            trunk: Trunk::Tiny,
            tiny: TinyConfig { widths: [16, 32, 32, 32], ..TinyConfig::default() },
            neck: FpnConfig { out_channels: 32, num_outs: 5 },
            heads: h,
            ..Self::default()
        }
    }

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
        if self.arch != Arch::MaskRcnn {
            self.heads.validate_cascade(self.arch == Arch::Htc)?;
        }
        if self.trunk == Trunk::Backbone {
            self.backbone.validate()?;
        }
        Ok(())
    }

    /// This config as a detector of `arch`: unchanged when it already is one; a Mask R-CNN config
    /// (e.g. an example's default) is converted with the seed's settings of that architecture,
    /// keeping its trunk, neck, widths, class count, anchors and test settings (SEED.md §2.5 /
    /// §2.6):
    /// - Cascade: RPN SmoothL1 β 1/9, 2000 training proposals, class-agnostic SmoothL1 (β 1)
    ///   stages, the three seed stages of [`crate::config::CascadeConfig::default`] without
    ///   low-quality matches;
    /// - HTC: as Cascade, plus RPN `allowed_border = 0`, low-quality matches left on (mmdet's
    ///   default, as the seed did) and the semantic head of [`crate::config::HtcConfig::default`]
    ///   on the FPN's channels and the fusion level's stride.
    ///
    /// `configs/cascade.toml` and `configs/htc.toml` equal the default Mask R-CNN converted so.
    ///
    /// # Errors
    /// [`Error::Config`] (key `arch`) when converting between cascade and HTC or to Mask R-CNN,
    /// which would silently drop or invent settings.
    pub fn to_arch(&self, arch: Arch) -> Result<Self> {
        if self.arch == arch {
            return Ok(self.clone());
        }
        if self.arch != Arch::MaskRcnn || arch == Arch::MaskRcnn {
            return Err(Error::Config {
                key: "arch".into(),
                reason: format!(
                    "the config builds `{}`; only a `mask_rcnn` config converts to `{}` (write \
                     the {} settings out instead)",
                    self.arch.name(),
                    arch.name(),
                    arch.name()
                ),
            });
        }
        let mut c = self.clone();
        c.arch = arch;
        let h = &mut c.heads;
        h.rpn.loss_bbox = BoxLoss::SmoothL1 { beta: 1.0 / 9.0 };
        h.rpn.train_proposals.max_per_img = 2000;
        h.bbox_head.reg_class_agnostic = true;
        h.bbox_head.loss_bbox = BoxLoss::SmoothL1 { beta: 1.0 };
        h.cascade = CascadeConfig::default();
        let htc = arch == Arch::Htc;
        h.cascade.match_low_quality = htc;
        h.bbox_head.assigner.match_low_quality = htc;
        if htc {
            h.rpn.allowed_border = 0.0;
            h.htc = HtcConfig::default();
            let sem = &mut h.htc.semantic_head;
            sem.conv_channels = c.neck.out_channels;
            if let Some(&s) = h.rpn.anchors.strides.get(sem.fusion_level) {
                sem.roi.featmap_strides = vec![s];
            }
        }
        Ok(c)
    }

    /// Builds the detector under `p` (use the VarStore root to get mmdet's keys: `backbone.*`,
    /// `neck.*`, `rpn_head.*`, `roi_head.*`), randomly initialised.
    ///
    /// # Errors
    /// Invalid configs, naming the key.
    pub fn build(&self, p: &nn::Path) -> Result<Box<dyn TwoStageDetector>> {
        self.validate()?;
        let trunk: Box<dyn cellseg_backbones::Backbone> = match self.trunk {
            Trunk::Tiny => Box::new(TinyConvNet::new(&(p / "backbone"), &self.tiny)?),
            Trunk::Backbone => Box::new(self.backbone.build(&(p / "backbone"))?),
        };
        Ok(match self.arch {
            Arch::MaskRcnn => Box::new(MaskRcnn::with_backbone(p, trunk, &self.neck, &self.heads)?),
            arch @ (Arch::Cascade | Arch::Htc) => {
                Box::new(CascadeRcnn::new(p, trunk, &self.neck, &self.heads, arch)?)
            }
        })
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
    fn cascade_and_htc_config_files_are_the_seed_mask_rcnn_converted() {
        for arch in [Arch::Cascade, Arch::Htc] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../configs/{}.toml", arch.name()));
            let file = DetectorConfig::from_toml(&path).unwrap();
            assert_eq!(file, DetectorConfig::default().to_arch(arch).unwrap(), "{arch:?}");
            assert_eq!(file.to_arch(arch).unwrap(), file);
        }
        let htc = DetectorConfig::default().to_arch(Arch::Htc).unwrap();
        let err = htc.to_arch(Arch::Cascade).unwrap_err().to_string();
        assert!(err.contains("`arch`") && err.contains("htc"), "{err}");
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
    fn every_arch_builds_with_mmdet_keys() {
        for arch in [Arch::MaskRcnn, Arch::Cascade, Arch::Htc] {
            let mut cfg = DetectorConfig { arch, trunk: Trunk::Tiny, ..DetectorConfig::default() };
            cfg.neck.out_channels = 16;
            cfg.heads.htc.semantic_head.conv_channels = 16;
            cfg.heads.rpn.feat_channels = 8;
            cfg.heads.bbox_head.fc_channels = 8;
            cfg.heads.mask_head.conv_channels = 8;
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let model = cfg.build(&vs.root()).unwrap();
            assert_eq!(model.arch(), arch);
            assert_eq!(model.needs_instance_masks(), arch == Arch::Htc, "{arch:?}");
            let keys: Vec<String> = vs.variables().into_keys().collect();
            let has = |k: &str| keys.iter().any(|x| x == k);
            match arch {
                Arch::MaskRcnn => assert!(has("roi_head.bbox_head.fc_cls.weight")),
                Arch::Cascade | Arch::Htc => {
                    for i in 0..3 {
                        assert!(has(&format!("roi_head.bbox_head.{i}.fc_reg.weight")), "{arch:?}");
                        assert!(has(&format!("roi_head.mask_head.{i}.conv_logits.weight")));
                        let res = format!("roi_head.mask_head.{i}.conv_res.conv.weight");
                        assert_eq!(has(&res), arch == Arch::Htc && i > 0, "{res}");
                    }
                    assert_eq!(has("roi_head.semantic_head.conv_logits.weight"), arch == Arch::Htc);
                }
            }
        }
    }

    #[test]
    fn cascade_stage_errors_name_the_key() {
        let mut cfg = DetectorConfig { arch: Arch::Cascade, ..DetectorConfig::default() };
        cfg.heads.cascade.stages[1].iou_thr = 1.5;
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().contains("cascade.stages[1].iou_thr"), "{err}");
        cfg.heads.cascade.stages.clear();
        assert!(cfg.validate().unwrap_err().to_string().contains("cascade.stages"));
        // Mask R-CNN ignores the cascade table.
        cfg.arch = Arch::MaskRcnn;
        cfg.validate().unwrap();
        let mut cfg =
            DetectorConfig { arch: Arch::Htc, trunk: Trunk::Tiny, ..DetectorConfig::default() };
        cfg.heads.htc.semantic_head.roi.featmap_strides = vec![8];
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let err = cfg.build(&vs.root()).unwrap_err();
        assert!(err.to_string().contains("semantic_head.roi.featmap_strides"), "{err}");
    }
}
