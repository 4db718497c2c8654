//! Merge point 2: boxes (the seed's `EnsembleModel.get_bboxes`, SEED.md §4.2 step 3).
//!
//! Every used member sees the shared proposals in every view (mapped into the view and moved by
//! `DELTA`), returns class probabilities and decoded boxes through
//! [`TwoStageDetector::box_scores`] (a cascade runs its stage loop and averages its stages'
//! logits), and the boxes come back to the original image. Boxes and the probabilities of the
//! first `num_classes` classes are averaged over all (member × view) passes, one-to-one because
//! every pass used the same proposals; then the merged boxes are suppressed per
//! [`BoxSettings`].

use cellseg_core::CellType;
use cellseg_heads::roi_heads::{RawDetections, multiclass_nms};
use cellseg_heads::{Features, TwoStageDetector};
use tch::{Kind, Tensor};

use crate::Result;
use crate::config::{BoxNms, BoxSettings};
use crate::views::View;

/// One (member × view) pass, in the original image's coordinates.
#[derive(Debug)]
pub struct BoxPass {
    /// `[N, 4]` the box of each proposal's most probable class (the seed's `RCNNEnsemble`; the
    /// same box for every class of a class-agnostic head).
    pub boxes: Tensor,
    /// `[N, C, 4]` the box of every class; only computed for `nms = "per_class"`, the one mode
    /// that reads them.
    pub class_boxes: Option<Tensor>,
    /// `[N, C]` softmax probabilities of the first C classes.
    pub scores: Tensor,
}

/// The mean of all passes.
#[derive(Debug)]
pub struct MergedBoxes {
    /// `[N, 4]` mean of [`BoxPass::boxes`].
    pub boxes: Tensor,
    /// `[N, C, 4]` mean of [`BoxPass::class_boxes`] (when the passes have them).
    pub class_boxes: Option<Tensor>,
    /// `[N, C]` mean of [`BoxPass::scores`].
    pub scores: Tensor,
}

/// The passes of one member over `views`: `feats` holds the member's features of the views in
/// that order (batch index = view index), `proposals` `[N, 4]` are in the original image of
/// unpadded size `size`. `with_class_boxes` also maps back the box of every class (for
/// `nms = "per_class"`); otherwise only each proposal's best-class box is mapped.
///
/// # Errors
/// The member's [`TwoStageDetector::box_scores`] errors (libtorch's, named).
#[allow(clippy::too_many_arguments)]
pub fn member_passes(
    model: &dyn TwoStageDetector,
    feats: &Features,
    proposals: &Tensor,
    views: &[View],
    size: (i64, i64),
    delta: f64,
    num_classes: i64,
    with_class_boxes: bool,
) -> Result<Vec<BoxPass>> {
    let _g = tch::no_grad_guard();
    let n = proposals.size()[0];
    let rois: Vec<Tensor> =
        views.iter().map(|v| v.shift(&v.boxes(proposals, size), size, delta)).collect();
    let out = model.box_scores(feats, &rois, &vec![size; views.len()])?;
    Ok(views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = i as i64 * n;
            let scores = out.scores.narrow(0, at, n).narrow(1, 0, num_classes);
            let view_boxes = out.boxes.narrow(0, at, n).narrow(1, 0, num_classes);
            let best = scores.argmax(1, false);
            // Mapping a box back is per box, so picking the best class first gives the same bits.
            let boxes = if n == 0 {
                Tensor::zeros([0, 4], (Kind::Float, proposals.device()))
            } else {
                let index = best.view([n, 1, 1]).expand([n, 1, 4], false);
                v.boxes(&view_boxes.gather(1, &index, false).squeeze_dim(1), size)
            };
            let class_boxes = with_class_boxes.then(|| v.boxes(&view_boxes, size));
            BoxPass { boxes, class_boxes, scores }
        })
        .collect())
}

/// The arithmetic mean of `passes` (at least one, all over the same proposals).
pub fn merge(passes: &[BoxPass]) -> MergedBoxes {
    let mean = |f: fn(&BoxPass) -> &Tensor| {
        let v: Vec<&Tensor> = passes.iter().map(f).collect();
        Tensor::stack(&v, 0).mean_dim(0, false, Kind::Float)
    };
    let class_boxes = passes.iter().map(|p| p.class_boxes.as_ref()).collect::<Option<Vec<_>>>();
    MergedBoxes {
        boxes: mean(|p| &p.boxes),
        class_boxes: class_boxes.map(|v| Tensor::stack(&v, 0).mean_dim(0, false, Kind::Float)),
        scores: mean(|p| &p.scores),
    }
}

/// The detections kept from `merged` with the settings of `cell_type`, best first.
///
/// `class_agnostic` (the seed): label and score = the best merged class, one NMS, then `score >
/// score_thr`; `per_class`: mmdet's `multiclass_nms` on the merged class boxes; `none`: sorted by
/// score, then the threshold.
pub fn select(merged: &MergedBoxes, settings: &BoxSettings, cell_type: CellType) -> RawDetections {
    let _g = tch::no_grad_guard();
    let cfg = settings.for_type(cell_type);
    if settings.nms == BoxNms::PerClass {
        let class_boxes = merged.class_boxes.as_ref().expect("per_class passes hold class boxes");
        return multiclass_nms(class_boxes, &merged.scores, &cfg);
    }
    let (scores, labels) = merged.scores.max_dim(1, false);
    let mut keep = Tensor::arange(scores.size()[0], (Kind::Int64, scores.device()));
    if cfg.min_bbox_size >= 0.0 {
        let b = &merged.boxes;
        let w = b.select(1, 2) - b.select(1, 0);
        let h = b.select(1, 3) - b.select(1, 1);
        keep = w.ge(cfg.min_bbox_size).logical_and(&h.ge(cfg.min_bbox_size)).nonzero().view([-1]);
    }
    let boxes = merged.boxes.index_select(0, &keep);
    let (scores, labels) = (scores.index_select(0, &keep), labels.index_select(0, &keep));
    let order = match settings.nms {
        BoxNms::ClassAgnostic => cellseg_heads::ops::nms::nms(&boxes, &scores, cfg.nms_iou),
        _ => scores.sort_stable(true, 0, true).1,
    };
    let scores = scores.index_select(0, &order);
    let above = scores.gt(cfg.score_thr).nonzero().view([-1]);
    let cap = i64::try_from(cfg.max_per_img).unwrap_or(i64::MAX).min(above.size()[0]);
    let above = above.narrow(0, 0, cap);
    let order = order.index_select(0, &above);
    RawDetections {
        boxes: boxes.index_select(0, &order),
        scores: scores.index_select(0, &above),
        labels: labels.index_select(0, &order),
    }
}
