//! The Mask R-CNN detector: backbone + FPN (`cellseg-backbones`) + [`RpnHead`] +
//! [`StandardRoiHead`], implementing [`TwoStageDetector`].
//!
//! Every stage is reachable: the interface's stages plus [`MaskRcnn::box_predictions`] (raw
//! logits and deltas) and [`MaskRcnn::mask_logits`]. Variable names are mmdet's state_dict keys
//! (`backbone.*`, `neck.*`, `rpn_head.*`, `roi_head.*`).

use cellseg_backbones::{Backbone, Fpn, FpnConfig};
use cellseg_core::Instances;
use tch::{Tensor, nn};

use crate::Result;
use crate::assign::roi_sampler::BatchTargets;
use crate::config::HeadsConfig;
use crate::detectors::two_stage::{build_neck, checked_targets, rpn_train};
use crate::detectors::{Arch, BoxScores, Features, Losses, TwoStageDetector};
use crate::heads::box_head::BoxPredictions;
use crate::heads::mask_head::select_class;
use crate::heads::rpn::{ProposalConfig, RpnHead};
use crate::libtorch::guarded;
use crate::roi_heads::standard::StandardRoiHead;
use crate::roi_heads::{RcnnTestConfig, proposals_to_rois};

/// Mask R-CNN.
#[derive(Debug)]
pub struct MaskRcnn {
    backbone: Box<dyn Backbone>,
    neck: Fpn,
    rpn_head: RpnHead,
    roi_head: StandardRoiHead,
    cfg: HeadsConfig,
}

impl MaskRcnn {
    /// Builds the detector around any `backbone` (built under `p / "backbone"` by the caller);
    /// use the VarStore root as `p` to get mmdet's keys.
    ///
    /// # Errors
    /// Invalid configs: the FPN strides must equal the anchor strides, and the RoI strides must
    /// be their prefix.
    pub fn with_backbone(
        p: &nn::Path,
        backbone: Box<dyn Backbone>,
        neck: &FpnConfig,
        heads: &HeadsConfig,
    ) -> Result<Self> {
        heads.validate()?;
        let (neck, rpn_head) = build_neck(p, backbone.as_ref(), neck, heads)?;
        let c = rpn_head.config().in_channels;
        Ok(Self {
            backbone,
            rpn_head,
            roi_head: StandardRoiHead::new(
                &(p / "roi_head"),
                &heads.bbox_head,
                &heads.mask_head,
                c,
                heads.num_classes,
            ),
            neck,
            cfg: heads.clone(),
        })
    }

    /// The heads configuration.
    pub fn config(&self) -> &HeadsConfig {
        &self.cfg
    }

    /// The RoI head.
    pub fn roi_head(&self) -> &StandardRoiHead {
        &self.roi_head
    }

    fn features_t(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        self.neck.forward(&self.backbone.forward(images, train))
    }

    /// Class logits `[R, C+1]` and deltas `[R, 4C]` of per-image boxes (concatenated in image order).
    pub fn box_predictions(&self, feats: &Features, boxes: &[Tensor]) -> BoxPredictions {
        let rois = proposals_to_rois(boxes, feats.device());
        self.roi_head.box_predictions(&feats.levels, &rois)
    }

    /// Mask logits `[R, C, 28, 28]` of per-image boxes (concatenated in image order).
    pub fn mask_logits(&self, feats: &Features, boxes: &[Tensor]) -> Tensor {
        let rois = proposals_to_rois(boxes, feats.device());
        self.roi_head.mask_logits(&feats.levels, &rois)
    }
}

impl TwoStageDetector for MaskRcnn {
    fn arch(&self) -> Arch {
        Arch::MaskRcnn
    }

    fn num_classes(&self) -> i64 {
        self.cfg.num_classes
    }

    fn rpn_head(&self) -> &RpnHead {
        &self.rpn_head
    }

    fn test_proposals(&self) -> &ProposalConfig {
        &self.cfg.rpn.test_proposals
    }

    fn rcnn_test(&self) -> &RcnnTestConfig {
        &self.cfg.test
    }

    fn features(&self, images: &Tensor) -> Result<Features> {
        self.check_input(images)?;
        guarded("features", images, || {
            Ok(Features { levels: self.features_t(images, false), semantic: None })
        })
    }

    /// Softmax of the box head's logits; the class-specific boxes decoded from the RoIs.
    fn box_scores(
        &self,
        feats: &Features,
        boxes: &[Tensor],
        image_sizes: &[(i64, i64)],
    ) -> Result<BoxScores> {
        let _g = tch::no_grad_guard();
        guarded("box scores", &feats.first_level(), || {
            let rois = proposals_to_rois(boxes, feats.device());
            let pred = self.roi_head.box_predictions(&feats.levels, &rois);
            Ok(BoxScores {
                scores: pred.cls.softmax(-1, tch::Kind::Float),
                boxes: self.roi_head.stage().bbox_head().decode(&rois, &pred.reg, image_sizes),
            })
        })
    }

    /// Sigmoid of the label's channel of the mask head's logits.
    fn mask_probs(&self, feats: &Features, boxes: &[Tensor], labels: &[Tensor]) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        guarded("mask probabilities", &feats.first_level(), || {
            let logits = self.mask_logits(feats, boxes);
            let labels = Tensor::cat(labels, 0).to_device(logits.device());
            Ok(select_class(&logits, &labels).sigmoid())
        })
    }

    /// `loss_rpn_cls`, `loss_rpn_bbox`, `loss_cls`, `loss_bbox`, `loss_mask`.
    ///
    /// Ground truths whose box has no area (`x2 <= x1` or `y2 <= y1`, e.g. the `(0,0,0,0)` box of
    /// an emptied mask) are ignored, as mmdet's datasets drop them: their box targets would be
    /// `log(0/0)` and make the losses NaN.
    ///
    /// # Errors
    /// [`crate::Error::Mismatch`] when the batch size and the number of targets differ.
    fn losses(&self, images: &Tensor, targets: &[Instances]) -> Result<Losses> {
        self.check_input(images)?;
        let targets = checked_targets(images, targets, self.num_classes())?;
        guarded("mask_rcnn losses", images, || {
            let dev = images.device();
            let feats = self.features_t(images, true);
            let gts = BatchTargets::new(&targets, dev);
            let rpn = rpn_train(&self.rpn_head, &feats, &gts, &self.cfg.rpn.train_proposals);
            let canvas = (images.size()[2], images.size()[3]);
            let sampled = self.roi_head.stage().sample(&rpn.proposals, &gts, canvas);
            let roi = self.roi_head.losses(&feats, &sampled);
            let mut l = Losses::new();
            l.push("loss_rpn_cls", rpn.losses.cls);
            l.push("loss_rpn_bbox", rpn.losses.reg);
            l.push("loss_cls", roi.cls);
            l.push("loss_bbox", roi.reg);
            l.push("loss_mask", roi.mask);
            Ok(l)
        })
    }
}
