//! Greedy box non-maximum suppression, single-class and class-aware.
//!
//! Semantics of mmcv 1.3.17 `ops/nms.py` (REFERENCE.md §1.13), which the seed's ensemble uses for
//! its class-agnostic RCNN NMS: boxes are visited by decreasing score, a box is kept unless an
//! already kept box overlaps it with IoU **strictly greater** than the threshold, and the result is
//! sorted by score. IoU is computed in `f32` as mmcv's CPU kernel does (`inter / (area_i + area_j -
//! inter)`, widths without `+1`).

use cellseg_core::BoxXyxy;

use crate::{Error, Result, error::check_range};

/// Indices ordered by decreasing score; ties keep the input order.
///
/// # Errors
/// [`Error::NanScore`] when a score is NaN.
pub fn order_by_score(scores: &[f32]) -> Result<Vec<usize>> {
    if let Some(index) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::NanScore { index });
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    Ok(idx)
}

fn check_lengths(boxes: usize, scores: usize) -> Result<()> {
    if boxes == scores {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what: "nms",
            left_name: "boxes",
            left: boxes,
            right_name: "scores",
            right: scores,
        })
    }
}

/// mmcv's box IoU in `f32` (NaN for two empty boxes, which then never suppress).
fn iou_f32(a: &BoxXyxy, area_a: f32, b: &BoxXyxy, area_b: f32) -> f32 {
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = w * h;
    inter / (area_a + area_b - inter)
}

/// Single-class greedy NMS: the indices of the kept boxes, by decreasing score.
///
/// # Errors
/// [`Error::LengthMismatch`] when `boxes` and `scores` differ in length, [`Error::NanScore`] for a
/// NaN score, [`Error::ThresholdOutOfRange`] when `iou_threshold` is NaN or outside `[0, 1]`.
pub fn nms(boxes: &[BoxXyxy], scores: &[f32], iou_threshold: f64) -> Result<Vec<usize>> {
    check_lengths(boxes.len(), scores.len())?;
    check_range("iou_threshold", iou_threshold, 0.0, 1.0)?;
    let order = order_by_score(scores)?;
    Ok(greedy(boxes, &order, iou_threshold as f32))
}

/// Class-aware greedy NMS: boxes only suppress boxes of their own label. The kept indices are
/// returned by decreasing score (across classes).
///
/// mmcv's `batched_nms` reaches the same result with its coordinate-offset trick; running one NMS
/// per class avoids the float rounding that the offset adds to large coordinates.
///
/// # Errors
/// As [`nms`], plus [`Error::LengthMismatch`] when `labels` differs in length.
pub fn batched_nms(
    boxes: &[BoxXyxy],
    scores: &[f32],
    labels: &[usize],
    iou_threshold: f64,
) -> Result<Vec<usize>> {
    check_lengths(boxes.len(), scores.len())?;
    if labels.len() != boxes.len() {
        return Err(Error::LengthMismatch {
            what: "batched_nms",
            left_name: "boxes",
            left: boxes.len(),
            right_name: "labels",
            right: labels.len(),
        });
    }
    check_range("iou_threshold", iou_threshold, 0.0, 1.0)?;
    let order = order_by_score(scores)?;
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut keep = Vec::new();
    for class in classes {
        let sub: Vec<usize> = order.iter().copied().filter(|&i| labels[i] == class).collect();
        keep.extend(greedy(boxes, &sub, iou_threshold as f32));
    }
    // Back to the global score order (stable on ties, like `order`).
    let rank: Vec<usize> = {
        let mut r = vec![0; boxes.len()];
        for (pos, &i) in order.iter().enumerate() {
            r[i] = pos;
        }
        r
    };
    keep.sort_by_key(|&i| rank[i]);
    Ok(keep)
}

/// Greedy suppression over `order` (already sorted by score).
fn greedy(boxes: &[BoxXyxy], order: &[usize], thr: f32) -> Vec<usize> {
    let areas: Vec<f32> = boxes.iter().map(|b| (b.x2 - b.x1) * (b.y2 - b.y1)).collect();
    let mut suppressed = vec![false; order.len()];
    let mut keep = Vec::new();
    for (a, &i) in order.iter().enumerate() {
        if suppressed[a] {
            continue;
        }
        keep.push(i);
        for (b, &j) in order.iter().enumerate().skip(a + 1) {
            if !suppressed[b] && iou_f32(&boxes[i], areas[i], &boxes[j], areas[j]) > thr {
                suppressed[b] = true;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(x1: f32, y1: f32, x2: f32, y2: f32) -> BoxXyxy {
        BoxXyxy::new(x1, y1, x2, y2)
    }

    #[test]
    fn nms_keeps_highest_score_in_each_cluster() {
        let boxes = [b(0., 0., 10., 10.), b(1., 0., 11., 10.), b(20., 20., 30., 30.)];
        let keep = nms(&boxes, &[0.5, 0.9, 0.7], 0.5).unwrap();
        assert_eq!(keep, vec![1, 2]);
    }

    #[test]
    fn suppression_is_strict() {
        // [0,2]x[0,1] vs [1,3]x[0,1]: IoU 1/3, kept just above it; identical boxes: IoU 1 is not > 1.
        let boxes = [b(0., 0., 2., 1.), b(1., 0., 3., 1.)];
        assert_eq!(nms(&boxes, &[0.9, 0.8], 1.0 / 3.0 + 1e-6).unwrap(), vec![0, 1]);
        let same = [b(0., 0., 2., 2.), b(0., 0., 2., 2.)];
        assert_eq!(nms(&same, &[0.9, 0.8], 1.0).unwrap(), vec![0, 1]);
        assert_eq!(nms(&same, &[0.9, 0.8], 0.99).unwrap(), vec![0]);
    }

    #[test]
    fn class_aware_nms_keeps_overlaps_of_other_classes() {
        let boxes = [b(0., 0., 10., 10.), b(0., 0., 10., 10.), b(0., 0., 10., 10.)];
        let keep = batched_nms(&boxes, &[0.3, 0.9, 0.5], &[0, 1, 0], 0.5).unwrap();
        assert_eq!(keep, vec![1, 2]);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let boxes = [b(0., 0., 1., 1.)];
        assert!(matches!(nms(&boxes, &[f32::NAN], 0.5), Err(Error::NanScore { index: 0 })));
        assert!(matches!(nms(&boxes, &[], 0.5), Err(Error::LengthMismatch { .. })));
        assert!(matches!(nms(&boxes, &[0.1], -0.1), Err(Error::ThresholdOutOfRange { .. })));
        assert!(nms(&[], &[], 0.5).unwrap().is_empty());
    }

    fn arb_boxes() -> impl Strategy<Value = (Vec<BoxXyxy>, Vec<f32>, Vec<usize>)> {
        (0usize..40).prop_flat_map(|n| {
            (
                proptest::collection::vec(
                    (0f32..50.0, 0f32..50.0, 0.5f32..20.0, 0.5f32..20.0)
                        .prop_map(|(x, y, w, h)| BoxXyxy::from_xywh(x, y, w, h)),
                    n,
                ),
                proptest::collection::vec(0f32..1.0, n),
                proptest::collection::vec(0usize..3, n),
            )
        })
    }

    proptest! {
        #[test]
        fn nms_output_is_a_sorted_idempotent_subset((boxes, scores, labels) in arb_boxes(), thr in 0.0f64..1.0) {
            for keep in [nms(&boxes, &scores, thr).unwrap(), batched_nms(&boxes, &scores, &labels, thr).unwrap()] {
                prop_assert!(keep.iter().all(|&i| i < boxes.len()));
                prop_assert!(keep.windows(2).all(|w| scores[w[0]] >= scores[w[1]]));
                let mut uniq = keep.clone();
                uniq.sort_unstable();
                uniq.dedup();
                prop_assert_eq!(uniq.len(), keep.len());
                if !boxes.is_empty() {
                    let top = order_by_score(&scores).unwrap()[0];
                    prop_assert!(keep.contains(&top));
                }
            }
            let keep = nms(&boxes, &scores, thr).unwrap();
            let kb: Vec<BoxXyxy> = keep.iter().map(|&i| boxes[i]).collect();
            let ks: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
            let again = nms(&kb, &ks, thr).unwrap();
            prop_assert_eq!(again, (0..kb.len()).collect::<Vec<_>>());
            for (a, &i) in keep.iter().enumerate() {
                for &j in &keep[a + 1..] {
                    let (ai, aj) = (boxes[i].area(), boxes[j].area());
                    prop_assert!(iou_f32(&boxes[i], ai, &boxes[j], aj) <= thr as f32);
                }
            }
        }
    }
}
