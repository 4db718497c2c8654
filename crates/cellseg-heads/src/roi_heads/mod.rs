//! RoI heads: the stage loops above the RPN (mmdet `models/roi_heads`).
//!
//! - [`stage::RoiStage`]: one box branch + one mask branch with their extractors and training
//!   targets — the unit a cascade repeats.
//! - [`standard::StandardRoiHead`]: Mask R-CNN's single stage.
//! - [`cascade::CascadeRoiHead`]: Cascade Mask R-CNN's stage loop, and with
//!   [`cascade::HtcConfig`] the Hybrid Task Cascade's (semantic fusion, interleaved training, mask
//!   information flow).
//!
//! Shared by every RoI head: test-time [`multiclass_nms`] ([`RcnnTestConfig`]), the
//! [`RawDetections`] it returns, and the tensor plumbing of RoIs ([`proposals_to_rois`]).

pub mod cascade;
pub mod stage;
pub mod standard;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::ops::nms::batched_nms;

/// Test-time settings of the RoI heads (seed `test_cfg.rcnn`; masks stay soft: binarisation is
/// cellseg-postproc's `mask_threshold`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RcnnTestConfig {
    /// Keep class scores `> score_thr` (seed 0.25; mmdet default 0.05).
    pub score_thr: f64,
    /// Per-class NMS IoU (seed 0.3; mmdet default 0.5).
    pub nms_iou: f64,
    /// Detections per image (seed 1000; mmdet default 100).
    pub max_per_img: usize,
    /// Drop detections whose box is not larger than this in both sides (torchvision: 1e-2;
    /// mmdet: none = -1).
    pub min_bbox_size: f64,
}

impl Default for RcnnTestConfig {
    fn default() -> Self {
        Self { score_thr: 0.25, nms_iou: 0.3, max_per_img: 1000, min_bbox_size: -1.0 }
    }
}

/// Detections of one image before mask pasting.
#[derive(Debug)]
pub struct RawDetections {
    /// `[K, 4]` boxes, clipped to the image.
    pub boxes: Tensor,
    /// `[K]` class scores.
    pub scores: Tensor,
    /// `[K]` int64 labels in `0..C`.
    pub labels: Tensor,
}

/// mmdet `multiclass_nms` on one image: `boxes` `[N, C, 4]` and foreground `scores` `[N, C]` →
/// the (box, class) pairs with `score > score_thr` (and, when `min_bbox_size >= 0`, both sides
/// `>= min_bbox_size`), NMS per class, the best `max_per_img` by score.
pub fn multiclass_nms(boxes: &Tensor, scores: &Tensor, cfg: &RcnnTestConfig) -> RawDetections {
    let _g = tch::no_grad_guard();
    let (n, c) = (scores.size()[0], scores.size()[1]);
    let dev = scores.device();
    let labels = Tensor::arange(c, (Kind::Int64, dev)).view([1, c]).expand([n, c], false);
    let boxes = boxes.reshape([-1, 4]);
    let scores = scores.reshape([-1]);
    let labels = labels.reshape([-1]);
    let mut keep = scores.gt(cfg.score_thr);
    if cfg.min_bbox_size >= 0.0 {
        let w = boxes.select(1, 2) - boxes.select(1, 0);
        let h = boxes.select(1, 3) - boxes.select(1, 1);
        keep = keep.logical_and(&w.ge(cfg.min_bbox_size)).logical_and(&h.ge(cfg.min_bbox_size));
    }
    let keep = crate::transfers::nonzero_positions(&keep);
    let boxes = boxes.index_select(0, &keep);
    let scores = scores.index_select(0, &keep);
    let labels = labels.index_select(0, &keep);
    let k = batched_nms(&boxes, &scores, &labels, cfg.nms_iou);
    let k = k.narrow(0, 0, (cfg.max_per_img as i64).min(k.size()[0]));
    RawDetections {
        boxes: boxes.index_select(0, &k),
        scores: scores.index_select(0, &k),
        labels: labels.index_select(0, &k),
    }
}

/// `[R, 5]` RoIs `(batch, x1, y1, x2, y2)` from per-image boxes `[N_b, 4]` (mmdet `bbox2roi`).
pub fn proposals_to_rois(boxes: &[Tensor], device: Device) -> Tensor {
    let parts: Vec<Tensor> = boxes
        .iter()
        .enumerate()
        .map(|(b, x)| {
            let n = x.size()[0];
            Tensor::cat(
                &[
                    Tensor::full([n, 1], b as i64, (Kind::Float, device)),
                    x.to_kind(Kind::Float).to_device(device),
                ],
                1,
            )
        })
        .collect();
    if parts.is_empty() {
        return Tensor::zeros([0, 5], (Kind::Float, device));
    }
    Tensor::cat(&parts, 0)
}
