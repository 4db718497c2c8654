//! Greedy non-maximum suppression on mask IoU.
//!
//! Port of the seed's `post_process.py::mask_nms`: masks are visited by decreasing score; the first
//! remaining mask is kept when its IoU with itself exceeds the threshold (so an **empty mask is
//! dropped**, its IoU being 0 as in `pycocotools.mask.iou`), and every remaining mask whose IoU with
//! it is **strictly greater** than the threshold is removed. IoU is `intersection / union` in `f64`,
//! exactly pycocotools' value, computed on box-cropped bitmaps.

use cellseg_core::{CroppedMask, ImageSize};

use crate::{Error, Result, error::check_range, nms::order_by_score};

/// Checks that every mask belongs to an image of `size`.
pub(crate) fn check_sizes(
    what: &'static str,
    size: ImageSize,
    masks: &[CroppedMask],
) -> Result<()> {
    match masks.iter().position(|m| m.image_size() != size) {
        None => Ok(()),
        Some(index) => {
            let got = masks[index].image_size();
            Err(Error::MaskSize {
                what,
                index,
                got_h: got.height,
                got_w: got.width,
                want_h: size.height,
                want_w: size.width,
            })
        }
    }
}

/// Mask IoU from the two areas and their intersection (0 when the union is empty).
pub(crate) fn iou_from(inter: usize, area_a: usize, area_b: usize) -> f64 {
    let union = area_a + area_b - inter;
    if union == 0 { 0.0 } else { inter as f64 / union as f64 }
}

/// Greedy mask NMS: the indices of the kept masks, by decreasing score (ties keep input order).
///
/// # Errors
/// [`Error::LengthMismatch`] when `masks` and `scores` differ in length, [`Error::MaskSize`] when the
/// masks belong to images of different sizes, [`Error::NanScore`] for a NaN score,
/// [`Error::ThresholdOutOfRange`] when `iou_threshold` is NaN or outside `[0, 1]`.
pub fn suppress(masks: &[CroppedMask], scores: &[f32], iou_threshold: f64) -> Result<Vec<usize>> {
    if masks.len() != scores.len() {
        return Err(Error::LengthMismatch {
            what: "mask_nms",
            left_name: "masks",
            left: masks.len(),
            right_name: "scores",
            right: scores.len(),
        });
    }
    if let Some(first) = masks.first() {
        check_sizes("mask_nms", first.image_size(), masks)?;
    }
    check_range("iou_threshold", iou_threshold, 0.0, 1.0)?;
    let order = order_by_score(scores)?;
    let sorted: Vec<&CroppedMask> = order.iter().map(|&i| &masks[i]).collect();
    Ok(suppress_sorted(&sorted, iou_threshold).into_iter().map(|k| order[k]).collect())
}

/// Greedy mask NMS over masks already sorted by decreasing score; returns kept positions.
pub(crate) fn suppress_sorted(masks: &[&CroppedMask], iou_threshold: f64) -> Vec<usize> {
    let areas: Vec<usize> = masks.iter().map(|m| m.area()).collect();
    let mut removed = vec![false; masks.len()];
    let mut keep = Vec::new();
    for i in 0..masks.len() {
        if removed[i] {
            continue;
        }
        // The seed keeps `idx` only when `ious[idx] > thr` holds for some mask, itself included:
        // IoU(m, m) is 1 for a non-empty mask and 0 for an empty one.
        let self_iou = if areas[i] > 0 { 1.0 } else { 0.0 };
        if self_iou <= iou_threshold {
            // Its row of IoUs is all ≤ thr (IoU ≤ self IoU), so it removes nothing either.
            continue;
        }
        keep.push(i);
        let (ti, li, hi, wi) = masks[i].rect();
        for j in i + 1..masks.len() {
            if removed[j] || areas[j] == 0 {
                continue;
            }
            let (tj, lj, hj, wj) = masks[j].rect();
            if tj >= ti + hi || ti >= tj + hj || lj >= li + wi || li >= lj + wj {
                continue;
            }
            let inter = masks[i].intersection(masks[j]);
            if iou_from(inter, areas[i], areas[j]) > iou_threshold {
                removed[j] = true;
            }
        }
    }
    keep
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cellseg_core::BitMask;
    use proptest::prelude::*;

    fn square(size: ImageSize, r: usize, c: usize, n: usize) -> CroppedMask {
        let mut m = BitMask::zeros(size);
        for y in r..r + n {
            for x in c..c + n {
                m.set(y, x, true);
            }
        }
        m.to_cropped()
    }

    #[test]
    fn empty_masks_are_dropped_and_overlaps_suppressed() {
        let s = ImageSize::new(20, 20);
        let masks = vec![
            square(s, 0, 0, 4),
            square(s, 0, 1, 4),
            CroppedMask::empty(s),
            square(s, 10, 10, 3),
        ];
        let keep = suppress(&masks, &[0.5, 0.6, 0.99, 0.1], 0.5).unwrap();
        assert_eq!(keep, vec![1, 3]);
    }

    #[test]
    fn threshold_one_keeps_nothing_like_the_seed() {
        let s = ImageSize::new(8, 8);
        assert!(suppress(&[square(s, 0, 0, 2)], &[0.9], 1.0).unwrap().is_empty());
    }

    #[test]
    fn masks_of_other_images_are_rejected() {
        let a = square(ImageSize::new(8, 8), 0, 0, 2);
        let b = square(ImageSize::new(9, 8), 0, 0, 2);
        let err = suppress(&[a, b], &[0.1, 0.2], 0.5).unwrap_err();
        assert!(matches!(err, Error::MaskSize { index: 1, .. }), "{err}");
    }

    pub(crate) fn arb_masks() -> impl Strategy<Value = (Vec<CroppedMask>, Vec<f32>)> {
        let s = ImageSize::new(24, 24);
        (0usize..25).prop_flat_map(move |n| {
            (
                proptest::collection::vec(
                    (0usize..20, 0usize..20, 1usize..8, 1usize..8, any::<u64>()).prop_map(
                        move |(r, c, h, w, bits)| {
                            let (h, w) = (h.min(24 - r), w.min(24 - c));
                            let data: Vec<u8> = (0..h * w)
                                .map(|k| u8::from((bits >> (k % 64)) & 1 == 1 || k % 3 == 0))
                                .collect();
                            CroppedMask::new(s, r, c, h, w, data).unwrap()
                        },
                    ),
                    n,
                ),
                proptest::collection::vec(0f32..1.0, n),
            )
        })
    }

    proptest! {
        #[test]
        fn mask_nms_invariants((masks, scores) in arb_masks(), thr in 0.0f64..0.99) {
            let keep = suppress(&masks, &scores, thr).unwrap();
            prop_assert!(keep.windows(2).all(|w| scores[w[0]] >= scores[w[1]]));
            // The best-scoring non-empty mask is kept.
            let order = order_by_score(&scores).unwrap();
            if let Some(&top) = order.iter().find(|&&i| masks[i].area() > 0) {
                prop_assert_eq!(keep.first(), Some(&top));
            }
            for (a, &i) in keep.iter().enumerate() {
                prop_assert!(masks[i].area() > 0);
                for &j in &keep[a + 1..] {
                    prop_assert!(masks[i].iou(&masks[j]) <= thr);
                }
            }
            let km: Vec<CroppedMask> = keep.iter().map(|&i| masks[i].clone()).collect();
            let ks: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
            prop_assert_eq!(suppress(&km, &ks, thr).unwrap(), (0..km.len()).collect::<Vec<_>>());
        }
    }
}
