//! One RoI stage: a box branch (RoI extractor + [`BoxHead`]) and a mask branch (RoI extractor +
//! [`MaskHead`]) with the stage's training targets ([`RoiSampler`]). Mask R-CNN has one; a cascade
//! has one per stage, built under `roi_head.bbox_head.{i}` / `roi_head.mask_head.{i}`.

use tch::{Tensor, nn};

use crate::assign::roi_sampler::{BatchTargets, MaskTargetConfig, RoiSampler, SampledRois};
use crate::heads::box_head::{BoxHead, BoxHeadConfig, BoxLosses, BoxPredictions};
use crate::heads::mask_head::{MaskHead, MaskHeadConfig, MaskOutput};
use crate::ops::roi_align::RoiExtractor;

/// The box and mask branches of one stage.
#[derive(Debug)]
pub struct RoiStage {
    bbox_roi_extractor: RoiExtractor,
    bbox_head: BoxHead,
    mask_roi_extractor: RoiExtractor,
    mask_head: MaskHead,
    sampler: RoiSampler,
}

impl RoiStage {
    /// Builds the box head under `bbox_path` and the mask head under `mask_path` (with HTC's
    /// `conv_res` when `mask_conv_res`), for `in_channels`-channel features and `num_classes`
    /// classes.
    pub fn new(
        bbox_path: &nn::Path,
        mask_path: &nn::Path,
        bbox: &BoxHeadConfig,
        mask: &MaskHeadConfig,
        in_channels: i64,
        num_classes: i64,
        mask_conv_res: bool,
    ) -> Self {
        let bbox_head = BoxHead::new(bbox_path, bbox, in_channels, num_classes);
        let sampler = RoiSampler::new(
            &bbox.assigner,
            &bbox.sampler,
            bbox_head.coder().clone(),
            MaskTargetConfig {
                size: mask.mask_size,
                aligned: mask.aligned_targets,
                binarize: mask.binarize_targets,
            },
            num_classes,
        );
        Self {
            bbox_roi_extractor: RoiExtractor::new(&bbox.roi),
            mask_roi_extractor: RoiExtractor::new(&mask.roi),
            mask_head: MaskHead::new(
                mask_path,
                mask,
                in_channels,
                num_classes,
                bbox.class_order,
                mask_conv_res,
            ),
            bbox_head,
            sampler,
        }
    }

    /// The box head.
    pub fn bbox_head(&self) -> &BoxHead {
        &self.bbox_head
    }

    /// The mask head.
    pub fn mask_head(&self) -> &MaskHead {
        &self.mask_head
    }

    /// 7×7 RoI features `[R, C, 7, 7]` of `rois` `[R, 5]`.
    pub fn box_roi_features(&self, feats: &[Tensor], rois: &Tensor) -> Tensor {
        self.bbox_roi_extractor.forward(feats, rois)
    }

    /// 14×14 RoI features `[R, C, 14, 14]` of `rois` `[R, 5]`.
    pub fn mask_roi_features(&self, feats: &[Tensor], rois: &Tensor) -> Tensor {
        self.mask_roi_extractor.forward(feats, rois)
    }

    /// Class logits and deltas of `rois` `[R, 5]`.
    pub fn box_forward(&self, feats: &[Tensor], rois: &Tensor) -> BoxPredictions {
        self.bbox_head.forward(&self.box_roi_features(feats, rois))
    }

    /// Mask logits `[R, C, 28, 28]` (and the mask head's features) of `rois` `[R, 5]`.
    pub fn mask_forward(&self, feats: &[Tensor], rois: &Tensor) -> MaskOutput {
        self.mask_head.forward_with_features(&self.mask_roi_features(feats, rois))
    }

    /// The stage's training targets for `proposals[b]` `[N_b, 4]` in a batch padded to `canvas`
    /// (see [`RoiSampler::sample`]).
    pub fn sample(
        &self,
        proposals: &[Tensor],
        targets: &BatchTargets<'_>,
        canvas: (i64, i64),
    ) -> SampledRois {
        self.sampler.sample(proposals, targets, canvas)
    }

    /// [`Self::sample`] without the mask targets (HTC's interleaved first sampling).
    pub fn sample_boxes(
        &self,
        proposals: &[Tensor],
        targets: &BatchTargets<'_>,
        canvas: (i64, i64),
    ) -> SampledRois {
        self.sampler.sample_with(proposals, targets, canvas, false)
    }

    /// Box losses of `pred` (from [`Self::box_forward`] on `sampled.rois`).
    pub fn box_loss(&self, pred: &BoxPredictions, sampled: &SampledRois) -> BoxLosses {
        self.bbox_head.loss(pred, &sampled.labels, &sampled.is_pos, &sampled.bbox_targets)
    }

    /// Mask loss on the positive rows of `sampled`.
    pub fn mask_loss(&self, feats: &[Tensor], sampled: &SampledRois) -> Tensor {
        if sampled.pos_rois.size()[0] == 0 {
            // Keep the features in the graph with a zero loss.
            return feats[0].sum(tch::Kind::Float) * 0.0;
        }
        let logits = self.mask_forward(feats, &sampled.pos_rois).logits;
        MaskHead::loss(&logits, &sampled.pos_labels, &sampled.mask_targets)
    }
}
