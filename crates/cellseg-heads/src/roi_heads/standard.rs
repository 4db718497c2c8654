//! Standard RoI head (mmdet `StandardRoIHead`): one [`RoiStage`] — box branch and mask branch —
//! trained on the RPN's proposals.
//!
//! # Checkpoint keys
//! `roi_head.bbox_head.*` ([`crate::heads::box_head::BoxHead`]), `roi_head.mask_head.*`
//! ([`crate::heads::mask_head::MaskHead`]).

use tch::{Tensor, nn};

use crate::assign::roi_sampler::SampledRois;
use crate::heads::box_head::{BoxHeadConfig, BoxPredictions};
use crate::heads::mask_head::MaskHeadConfig;
use crate::roi_heads::stage::RoiStage;

/// Losses of the RoI head.
#[derive(Debug)]
pub struct RoiLosses {
    /// `loss_cls`.
    pub cls: Tensor,
    /// `loss_bbox`.
    pub reg: Tensor,
    /// `loss_mask`: BCE, mean over positives × M × M.
    pub mask: Tensor,
}

/// Box and mask branches of a Mask R-CNN.
#[derive(Debug)]
pub struct StandardRoiHead {
    stage: RoiStage,
}

impl StandardRoiHead {
    /// Builds the branches under `p` (`roi_head`), for `in_channels`-channel features.
    pub fn new(
        p: &nn::Path,
        bbox: &BoxHeadConfig,
        mask: &MaskHeadConfig,
        in_channels: i64,
        num_classes: i64,
    ) -> Self {
        Self {
            stage: RoiStage::new(
                &(p / "bbox_head"),
                &(p / "mask_head"),
                bbox,
                mask,
                in_channels,
                num_classes,
                false,
            ),
        }
    }

    /// The single stage.
    pub fn stage(&self) -> &RoiStage {
        &self.stage
    }

    /// Class logits and deltas of `rois` `[R, 5]`.
    pub fn box_predictions(&self, feats: &[Tensor], rois: &Tensor) -> BoxPredictions {
        self.stage.box_forward(feats, rois)
    }

    /// Mask logits `[R, C, 28, 28]` of `rois` `[R, 5]`.
    pub fn mask_logits(&self, feats: &[Tensor], rois: &Tensor) -> Tensor {
        self.stage.mask_forward(feats, rois).logits
    }

    /// Losses of both branches on `sampled` RoIs.
    pub fn losses(&self, feats: &[Tensor], sampled: &SampledRois) -> RoiLosses {
        let pred = self.stage.box_forward(feats, &sampled.rois);
        let b = self.stage.box_loss(&pred, sampled);
        RoiLosses { cls: b.cls, reg: b.reg, mask: self.stage.mask_loss(feats, sampled) }
    }
}
