//! Cascade Mask R-CNN and the Hybrid Task Cascade (mmdet `CascadeRCNN`, `HybridTaskCascade`):
//! backbone + FPN + [`RpnHead`] + [`CascadeRoiHead`], implementing [`TwoStageDetector`].
//!
//! One struct serves both, as in mmdet (`HybridTaskCascade` is a `CascadeRCNN` whose RoI head has
//! a semantic branch): [`CascadeRcnn::new`] with [`Arch::Htc`] adds HTC's semantic head, its
//! fusion into the RoI features, the interleaved training and the mask information flow
//! (`[heads.htc]`). Variable names are mmdet's state_dict keys (`backbone.*`, `neck.*`,
//! `rpn_head.*`, `roi_head.bbox_head.{i}.*`, `roi_head.mask_head.{i}.*`,
//! `roi_head.semantic_head.*`).

use cellseg_backbones::{Backbone, Fpn, FpnConfig};
use cellseg_core::Instances;
use tch::{Kind, Tensor, nn};

use crate::assign::roi_sampler::BatchTargets;
use crate::config::HeadsConfig;
use crate::detectors::two_stage::{build_neck, checked_targets, rpn_train, unpadded_sizes};
use crate::detectors::{Arch, BoxScores, Features, Losses, TwoStageDetector};
use crate::heads::rpn::{ProposalConfig, RpnHead};
use crate::libtorch::guarded;
use crate::roi_heads::cascade::CascadeRoiHead;
use crate::roi_heads::{RcnnTestConfig, proposals_to_rois};
use crate::{Error, Result};

/// Cascade Mask R-CNN (`arch = "cascade"`) or HTC (`arch = "htc"`).
#[derive(Debug)]
pub struct CascadeRcnn {
    backbone: Box<dyn Backbone>,
    neck: Fpn,
    rpn_head: RpnHead,
    roi_head: CascadeRoiHead,
    cfg: HeadsConfig,
    arch: Arch,
}

impl CascadeRcnn {
    /// Builds the detector around any `backbone` (built under `p / "backbone"` by the caller);
    /// use the VarStore root as `p` to get mmdet's keys. `arch` is [`Arch::Cascade`] or
    /// [`Arch::Htc`].
    ///
    /// # Errors
    /// Invalid configs (naming the key): the strides as for Mask R-CNN, the cascade stages, and
    /// for HTC a fusion level the FPN lacks, a semantic RoI stride other than that level's, or
    /// semantic channels other than the FPN's; [`Error::Config`] for `arch = mask_rcnn`.
    pub fn new(
        p: &nn::Path,
        backbone: Box<dyn Backbone>,
        neck: &FpnConfig,
        heads: &HeadsConfig,
        arch: Arch,
    ) -> Result<Self> {
        if arch == Arch::MaskRcnn {
            return Err(Error::Config {
                key: "arch".into(),
                reason: "CascadeRcnn builds `cascade` or `htc`; `mask_rcnn` is MaskRcnn".into(),
            });
        }
        let htc = arch == Arch::Htc;
        heads.validate()?;
        heads.validate_cascade(htc)?;
        let (neck, rpn_head) = build_neck(p, backbone.as_ref(), neck, heads)?;
        let shapes = neck.out_shapes();
        let c = shapes[0].channels;
        if htc {
            let sem = &heads.htc.semantic_head;
            let Some(level) = shapes.get(sem.fusion_level) else {
                return Err(Error::Config {
                    key: "heads.htc.semantic_head.fusion_level".into(),
                    reason: format!(
                        "the FPN has {} levels, got level {}",
                        shapes.len(),
                        sem.fusion_level
                    ),
                });
            };
            if sem.roi.featmap_strides != [level.stride] {
                return Err(Error::Config {
                    key: "heads.htc.semantic_head.roi.featmap_strides".into(),
                    reason: format!(
                        "must be [{}], the stride of fusion level {}; got {:?}",
                        level.stride, sem.fusion_level, sem.roi.featmap_strides
                    ),
                });
            }
            if sem.conv_channels != c {
                return Err(Error::Config {
                    key: "heads.htc.semantic_head.conv_channels".into(),
                    reason: format!(
                        "the semantic features are added to the RoI features, so they need the \
                         FPN's {c} channels; got {}",
                        sem.conv_channels
                    ),
                });
            }
        }
        let roi_head = CascadeRoiHead::new(
            &(p / "roi_head"),
            heads,
            htc.then_some(&heads.htc),
            c,
            shapes.len(),
        );
        Ok(Self { backbone, neck, rpn_head, roi_head, cfg: heads.clone(), arch })
    }

    /// The heads configuration.
    pub fn config(&self) -> &HeadsConfig {
        &self.cfg
    }

    /// The RoI head (every stage, and HTC's semantic head).
    pub fn roi_head(&self) -> &CascadeRoiHead {
        &self.roi_head
    }

    fn levels(&self, images: &Tensor, train: bool) -> Vec<Tensor> {
        self.neck.forward(&self.backbone.forward(images, train))
    }
}

impl TwoStageDetector for CascadeRcnn {
    fn arch(&self) -> Arch {
        self.arch
    }

    fn needs_instance_masks(&self) -> bool {
        self.arch == Arch::Htc
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

    /// FPN levels and, for HTC, the semantic head's `semantic_feat`.
    fn features(&self, images: &Tensor) -> Result<Features> {
        self.check_input(images)?;
        guarded("features", images, || {
            let levels = self.levels(images, false);
            let semantic = self.roi_head.semantic(&levels).map(|s| s.features);
            Ok(Features { levels, semantic })
        })
    }

    /// The stage loop: softmax of the stages' mean logits, the last stage's boxes.
    fn box_scores(
        &self,
        feats: &Features,
        boxes: &[Tensor],
        image_sizes: &[(i64, i64)],
    ) -> Result<BoxScores> {
        let _g = tch::no_grad_guard();
        guarded("box scores", &feats.first_level(), || {
            let rois = proposals_to_rois(boxes, feats.device());
            Ok(self.roi_head.box_scores(&feats.levels, feats.semantic.as_ref(), &rois, image_sizes))
        })
    }

    /// The mean of every stage's mask probabilities (HTC: heads chained by the information flow).
    fn mask_probs(&self, feats: &Features, boxes: &[Tensor], labels: &[Tensor]) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        guarded("mask probabilities", &feats.first_level(), || {
            let rois = proposals_to_rois(boxes, feats.device());
            let labels = Tensor::cat(labels, 0).to_device(rois.device()).to_kind(Kind::Int64);
            Ok(self.roi_head.mask_probs(&feats.levels, feats.semantic.as_ref(), &rois, &labels))
        })
    }

    /// `loss_rpn_cls`, `loss_rpn_bbox`, HTC's `loss_semantic_seg`, and `s{i}.loss_cls`,
    /// `s{i}.loss_bbox`, `s{i}.loss_mask` of every stage (weighted by the stage's
    /// `loss_weight`). Ground truths with an empty box are ignored (as for Mask R-CNN).
    ///
    /// # Errors
    /// [`Error::Mismatch`] when the batch and the targets differ in length.
    fn losses(&self, images: &Tensor, targets: &[Instances]) -> Result<Losses> {
        self.check_input(images)?;
        let targets = checked_targets(images, targets, self.num_classes())?;
        guarded("cascade losses", images, || {
            let dev = images.device();
            let levels = self.levels(images, true);
            let semantic = self.roi_head.semantic(&levels);
            let gts = BatchTargets::new(&targets, dev);
            let rpn = rpn_train(&self.rpn_head, &levels, &gts, &self.cfg.rpn.train_proposals);
            let canvas = (images.size()[2], images.size()[3]);
            let roi = self.roi_head.losses(
                &levels,
                semantic.as_ref(),
                rpn.proposals,
                &gts,
                canvas,
                &unpadded_sizes(&targets),
            )?;
            let mut l = Losses::new();
            l.push("loss_rpn_cls", rpn.losses.cls);
            l.push("loss_rpn_bbox", rpn.losses.reg);
            for (name, value) in roi {
                l.push(name, value);
            }
            Ok(l)
        })
    }
}
