//! Merge point 3: masks (the seed's `EnsembleModel.get_masks`, SEED.md §4.2 step 4).
//!
//! The final boxes go into every view (mapped, moved by `DELTA`) of every used member, which
//! returns the `M × M` probabilities of each box's label through
//! [`TwoStageDetector::mask_probs`] (a cascade / HTC: the mean of its stages' sigmoids); each is
//! flipped back, all are averaged, and the mean is pasted once into the box window of the image
//! as `floor(prob · 255)` bytes (mmdet `get_seg_masks` with `mask_thr_binary = -1`).

use cellseg_core::ImageSize;
use cellseg_heads::convert::to_soft_detections;
use cellseg_heads::ops::paste::paste_soft;
use cellseg_heads::roi_heads::RawDetections;
use cellseg_heads::{Features, TwoStageDetector};
use cellseg_postproc::SoftDetections;
use tch::{Kind, Tensor};

use crate::Result;
use crate::views::View;

/// The mask probabilities `[K, M, M]` of `boxes` `[K, 4]` (labels `[K]`) that one member predicts
/// in each of `views` (its features of those views, batch index = view index), flipped back.
///
/// # Errors
/// The member's [`TwoStageDetector::mask_probs`] errors (libtorch's, named).
pub fn member_passes(
    model: &dyn TwoStageDetector,
    feats: &Features,
    boxes: &Tensor,
    labels: &Tensor,
    views: &[View],
    size: (i64, i64),
    delta: f64,
) -> Result<Vec<Tensor>> {
    let _g = tch::no_grad_guard();
    let k = boxes.size()[0];
    let rois: Vec<Tensor> =
        views.iter().map(|v| v.shift(&v.boxes(boxes, size), size, delta)).collect();
    let labels: Vec<Tensor> = views.iter().map(|_| labels.shallow_clone()).collect();
    let probs = model.mask_probs(feats, &rois, &labels)?;
    Ok(views
        .iter()
        .enumerate()
        .map(|(i, v)| v.masks_back(&probs.narrow(0, i as i64 * k, k).to_kind(Kind::Float)))
        .collect())
}

/// The arithmetic mean of `passes` (at least one).
pub fn merge(passes: &[Tensor]) -> Tensor {
    Tensor::stack(passes, 0).mean_dim(0, false, Kind::Float)
}

/// `dets` with the merged probabilities `probs` `[K, M, M]` pasted into their box windows of an
/// image of `size`.
///
/// # Errors
/// When the pasted windows and the detections disagree (ruled out by the paste).
pub fn paste(dets: &RawDetections, probs: &Tensor, size: ImageSize) -> Result<SoftDetections> {
    let pasted = paste_soft(probs, &dets.boxes, size);
    Ok(to_soft_detections(dets, pasted, size)?)
}
