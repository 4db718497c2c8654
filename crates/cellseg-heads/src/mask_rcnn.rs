//! The Mask R-CNN detector: backbone + FPN (`cellseg-backbones`) + [`RpnHead`] + [`RoiHead`].
//!
//! Every stage is reachable: [`MaskRcnn::features`], [`MaskRcnn::rpn_outputs`],
//! [`MaskRcnn::proposals`], [`MaskRcnn::box_predictions`], [`MaskRcnn::mask_logits`],
//! [`MaskRcnn::losses`], [`MaskRcnn::predict`]. Variable names are mmdet's state_dict keys
//! (`backbone.*`, `neck.*`, `rpn_head.*`, `roi_head.*`).

use std::path::Path;

use cellseg_backbones::{Backbone, BackboneConfig, Fpn, FpnConfig};
use cellseg_core::{Detections, ImageSize, Instances};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::box_head::BoxPredictions;
use crate::config::HeadsConfig;
use crate::convert::{instances_to_tensors, to_detections};
use crate::roi_heads::{RawDetections, RoiHead, proposals_to_rois};
use crate::rpn::{Proposals, RpnHead, RpnOutputs};
use crate::{Error, Result};

/// Full configuration of a Mask R-CNN (`configs/maskrcnn.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskRcnnConfig {
    /// File format version (1).
    pub version: u32,
    /// Trunk.
    pub backbone: BackboneConfig,
    /// FPN.
    pub neck: FpnConfig,
    /// RPN and RoI heads.
    pub heads: HeadsConfig,
}

impl Default for MaskRcnnConfig {
    fn default() -> Self {
        Self {
            version: 1,
            backbone: BackboneConfig::default(),
            neck: FpnConfig::default(),
            heads: HeadsConfig::default(),
        }
    }
}

impl MaskRcnnConfig {
    /// Loads and validates a TOML file.
    ///
    /// # Errors
    /// Parse errors name the file, line and key; semantic errors name the key.
    pub fn from_toml(path: impl AsRef<Path>) -> Result<Self> {
        let cfg: Self = cellseg_core::config::load_toml(path)?;
        cfg.heads.validate()?;
        cfg.backbone.validate()?;
        Ok(cfg)
    }
}

/// All losses of one training step (mmdet names in the docs).
#[derive(Debug)]
pub struct Losses {
    /// `loss_rpn_cls`.
    pub rpn_cls: Tensor,
    /// `loss_rpn_bbox`.
    pub rpn_reg: Tensor,
    /// `loss_cls`.
    pub box_cls: Tensor,
    /// `loss_bbox`.
    pub box_reg: Tensor,
    /// `loss_mask`.
    pub mask: Tensor,
}

impl Losses {
    /// Sum of all losses (mmdet `_parse_losses`).
    pub fn total(&self) -> Tensor {
        &self.rpn_cls + &self.rpn_reg + &self.box_cls + &self.box_reg + &self.mask
    }

    /// `(name, value)` pairs as plain numbers, for logging.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let f =
            |t: &Tensor| f64::try_from(t.detach().to_device(tch::Device::Cpu)).unwrap_or(f64::NAN);
        vec![
            ("loss_rpn_cls", f(&self.rpn_cls)),
            ("loss_rpn_bbox", f(&self.rpn_reg)),
            ("loss_cls", f(&self.box_cls)),
            ("loss_bbox", f(&self.box_reg)),
            ("loss_mask", f(&self.mask)),
        ]
    }
}

/// Mask R-CNN.
#[derive(Debug)]
pub struct MaskRcnn {
    backbone: Box<dyn Backbone>,
    neck: Fpn,
    rpn_head: RpnHead,
    roi_head: RoiHead,
    cfg: HeadsConfig,
}

impl MaskRcnn {
    /// Builds the detector under `p` (use the VarStore root to get mmdet keys).
    ///
    /// # Errors
    /// Invalid configs (the FPN strides must equal the anchor strides, and the RoI strides must be
    /// their prefix) and backbone construction errors.
    pub fn new(p: &nn::Path, cfg: &MaskRcnnConfig) -> Result<Self> {
        let backbone = cfg.backbone.build(&(p / "backbone"))?;
        Self::with_backbone(p, Box::new(backbone), &cfg.neck, &cfg.heads)
    }

    /// Builds the detector around any `backbone` (built under `p / "backbone"` by the caller).
    ///
    /// # Errors
    /// As [`MaskRcnn::new`].
    pub fn with_backbone(
        p: &nn::Path,
        backbone: Box<dyn Backbone>,
        neck: &FpnConfig,
        heads: &HeadsConfig,
    ) -> Result<Self> {
        heads.validate()?;
        let neck = Fpn::new(&(p / "neck"), neck, &backbone.out_shapes())?;
        let strides: Vec<u32> = neck.out_shapes().iter().map(|s| s.stride).collect();
        if strides != heads.rpn.anchors.strides {
            return Err(Error::Config {
                key: "heads.rpn.anchors.strides".into(),
                reason: format!(
                    "must equal the FPN strides {strides:?}, got {:?}",
                    heads.rpn.anchors.strides
                ),
            });
        }
        for (key, r) in [
            ("heads.bbox_head.roi.featmap_strides", &heads.bbox_head.roi),
            ("heads.mask_head.roi.featmap_strides", &heads.mask_head.roi),
        ] {
            if !strides.starts_with(&r.featmap_strides) {
                return Err(Error::Config {
                    key: key.into(),
                    reason: format!("must be a prefix of the FPN strides {strides:?}"),
                });
            }
        }
        let c = neck.out_shapes()[0].channels;
        let mut rpn_cfg = heads.rpn.clone();
        rpn_cfg.in_channels = c;
        Ok(Self {
            backbone,
            rpn_head: RpnHead::new(&(p / "rpn_head"), &rpn_cfg),
            roi_head: RoiHead::new(&(p / "roi_head"), heads, c),
            neck,
            cfg: heads.clone(),
        })
    }

    /// The heads configuration.
    pub fn config(&self) -> &HeadsConfig {
        &self.cfg
    }

    /// The RPN head.
    pub fn rpn_head(&self) -> &RpnHead {
        &self.rpn_head
    }

    /// The RoI head.
    pub fn roi_head(&self) -> &RoiHead {
        &self.roi_head
    }

    /// FPN features (inference mode) of normalised, padded images `[B, 3, H, W]`, high → low resolution.
    pub fn features(&self, images: &Tensor) -> Vec<Tensor> {
        self.features_t(images, false)
    }

    fn features_t(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        self.neck.forward(&self.backbone.forward(images, train))
    }

    /// RPN logits and deltas of the FPN levels.
    pub fn rpn_outputs(&self, feats: &[Tensor]) -> RpnOutputs {
        self.rpn_head.forward(feats)
    }

    /// Test-time proposals of every image (`image_sizes[b]` = unpadded `(h, w)`).
    pub fn proposals(&self, out: &RpnOutputs, image_sizes: &[(i64, i64)]) -> Vec<Proposals> {
        self.rpn_head.proposals(out, image_sizes, &self.cfg.rpn.test_proposals)
    }

    /// Class logits `[R, C+1]` and deltas `[R, 4C]` of per-image boxes (concatenated in image order).
    pub fn box_predictions(&self, feats: &[Tensor], boxes: &[Tensor]) -> BoxPredictions {
        let rois = proposals_to_rois(boxes, feats[0].device());
        self.roi_head.box_predictions(feats, &rois)
    }

    /// Mask logits `[R, C, 28, 28]` of per-image boxes (concatenated in image order).
    pub fn mask_logits(&self, feats: &[Tensor], boxes: &[Tensor]) -> Tensor {
        let rois = proposals_to_rois(boxes, feats[0].device());
        self.roi_head.mask_logits(feats, &rois)
    }

    /// Training losses of a batch: `images` `[B, 3, H, W]` (normalised, padded) and one
    /// [`Instances`] per image (its `image_size` is the unpadded size).
    ///
    /// Ground truths whose box has no area (`x2 <= x1` or `y2 <= y1`, e.g. the `(0,0,0,0)` box of
    /// an emptied mask) are ignored, as mmdet's datasets drop them: their box targets would be
    /// `log(0/0)` and make the losses NaN.
    ///
    /// # Errors
    /// [`Error::Mismatch`] when the batch size and the number of targets differ.
    pub fn losses(&self, images: &Tensor, targets: &[Instances]) -> Result<Losses> {
        let b = images.size()[0] as usize;
        if b != targets.len() {
            return Err(Error::Mismatch {
                what: "images vs targets",
                left: b,
                right: targets.len(),
            });
        }
        let with_area: Vec<Instances>;
        let targets = if targets.iter().all(|t| t.boxes.iter().all(|b| b.is_nonempty())) {
            targets
        } else {
            with_area = targets.iter().map(drop_empty_boxes).collect();
            &with_area
        };
        let dev = images.device();
        let t0 = std::time::Instant::now();
        let feats = self.features_t(images, true);
        let out = self.rpn_head.forward(&feats);
        let t1 = t0.elapsed();
        let gts: Vec<Tensor> = targets.iter().map(|t| instances_to_tensors(t, dev).0).collect();
        let rpn = self.rpn_head.losses(&out, &gts);
        let t2 = t0.elapsed();
        let sizes: Vec<(i64, i64)> = targets
            .iter()
            .map(|t| (t.image_size.height as i64, t.image_size.width as i64))
            .collect();
        let props = self.rpn_head.proposals(&out, &sizes, &self.cfg.rpn.train_proposals);
        let t3 = t0.elapsed();
        let boxes: Vec<Tensor> = props.into_iter().map(|p| p.boxes.detach()).collect();
        let sampled = self.roi_head.sample(&boxes, targets, dev);
        let t4 = t0.elapsed();
        let roi = self.roi_head.losses(&feats, &sampled);
        let t5 = t0.elapsed();
        tracing::debug!(?t1, ?t2, ?t3, ?t4, ?t5, "losses timing (cumulative)");
        Ok(Losses {
            rpn_cls: rpn.cls,
            rpn_reg: rpn.reg,
            box_cls: roi.cls,
            box_reg: roi.reg,
            mask: roi.mask,
        })
    }

    /// Raw detections (boxes, scores, labels) of every image, before masks.
    pub fn detect(&self, feats: &[Tensor], image_sizes: &[(i64, i64)]) -> Vec<RawDetections> {
        let out = self.rpn_outputs(feats);
        let props = self.proposals(&out, image_sizes);
        let boxes: Vec<Tensor> = props.into_iter().map(|p| p.boxes).collect();
        self.roi_head.detect(feats, &boxes, image_sizes)
    }

    /// Mask probabilities `[K, 28, 28]` of raw detections (sigmoid of the predicted class channel).
    pub fn mask_probs(&self, feats: &[Tensor], dets: &[RawDetections]) -> Vec<Tensor> {
        let _g = tch::no_grad_guard();
        let boxes: Vec<Tensor> = dets.iter().map(|d| d.boxes.shallow_clone()).collect();
        let logits = self.mask_logits(feats, &boxes);
        let mut out = Vec::new();
        let mut s = 0;
        for d in dets {
            let k = d.boxes.size()[0];
            let l = logits.slice(0, s, s + k, 1);
            let m = l.size()[2];
            let idx = d.labels.view([-1, 1, 1, 1]).expand([-1, 1, m, m], false);
            out.push(l.gather(1, &idx, false).squeeze_dim(1).sigmoid());
            s += k;
        }
        out
    }

    /// Detections with pasted binary masks for normalised, padded `images`; `sizes[b]` is the
    /// unpadded size of image b.
    ///
    /// # Errors
    /// [`Error::Mismatch`] when `sizes` and the batch differ.
    pub fn predict(&self, images: &Tensor, sizes: &[ImageSize]) -> Result<Vec<Detections>> {
        let _g = tch::no_grad_guard();
        let b = images.size()[0] as usize;
        if b != sizes.len() {
            return Err(Error::Mismatch { what: "images vs sizes", left: b, right: sizes.len() });
        }
        let feats = self.features(images);
        let hw: Vec<(i64, i64)> = sizes.iter().map(|s| (s.height as i64, s.width as i64)).collect();
        let dets = self.detect(&feats, &hw);
        let probs = self.mask_probs(&feats, &dets);
        let thr = if self.cfg.test.mask_thr_binary < 0.0 {
            0.5
        } else {
            self.cfg.test.mask_thr_binary as f32
        };
        dets.iter()
            .zip(&probs)
            .zip(sizes)
            .map(|((d, p), &s)| to_detections(d, Some(&p.to_kind(Kind::Float)), s, thr))
            .collect()
    }
}

/// `inst` without the instances whose box has no area.
fn drop_empty_boxes(inst: &Instances) -> Instances {
    let keep: Vec<usize> = (0..inst.len()).filter(|&i| inst.boxes[i].is_nonempty()).collect();
    if keep.len() < inst.len() {
        tracing::debug!(
            dropped = inst.len() - keep.len(),
            "ground truths with an empty box ignored"
        );
    }
    inst.select(&keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_config_file_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/maskrcnn.toml");
        let cfg = MaskRcnnConfig::from_toml(&path).unwrap();
        assert_eq!(cfg, MaskRcnnConfig::default());
        assert_eq!(cfg.heads.rpn.anchors.strides, [2, 4, 8, 16, 32]);
        assert_eq!(cfg.heads.test.max_per_img, 1000);
    }

    #[test]
    fn misspelt_key_is_an_error_naming_it() {
        let err = cellseg_core::config::parse_toml::<MaskRcnnConfig>(
            "[heads]\nnum_clases = 3\n",
            "x.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("num_clases"), "{err}");
    }
}
