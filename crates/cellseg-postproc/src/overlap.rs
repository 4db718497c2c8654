//! Overlap removal: each pixel goes to the most confident mask that covers it.
//!
//! Port of the seed's `post_process.py::remove_overlap_naive`: masks come sorted by decreasing
//! confidence; mask `i` loses every pixel covered by the **original** (unmodified) mask of any `j <
//! i`. The seed restricts the loop to masks with a non-zero IoU with another mask, which changes
//! nothing (a mask that overlaps no other mask loses no pixel). Here the union of the earlier
//! originals is kept in one image-sized byte canvas, so the cost is the total mask area.

use cellseg_core::{CroppedMask, ImageSize};

use crate::{Result, mask_nms::check_sizes};

/// Resolves overlaps among `masks` given in priority order (first = most confident): the result has
/// the same length and order, each mask ⊆ its input, no pixel in two masks, and every pixel of the
/// union stays with the first mask that covered it. Rectangles are kept as given.
///
/// # Errors
/// [`crate::Error::MaskSize`] when the masks belong to images of different sizes.
pub fn resolve(masks: &[CroppedMask]) -> Result<Vec<CroppedMask>> {
    let Some(first) = masks.first() else { return Ok(Vec::new()) };
    let size = first.image_size();
    check_sizes("overlap::resolve", size, masks)?;
    let refs: Vec<&CroppedMask> = masks.iter().collect();
    Ok(resolve_refs(size, &refs))
}

pub(crate) fn resolve_refs(size: ImageSize, masks: &[&CroppedMask]) -> Vec<CroppedMask> {
    let mut claimed = vec![0u8; size.pixels()];
    let mut out = Vec::with_capacity(masks.len());
    for m in masks {
        let (top, left, h, w) = m.rect();
        let src = m.as_slice();
        let mut data = Vec::with_capacity(h * w);
        for r in 0..h {
            let row = &src[r * w..(r + 1) * w];
            let start = (top + r) * size.width + left;
            let taken = &mut claimed[start..start + w];
            for (&v, t) in row.iter().zip(taken.iter_mut()) {
                data.push(v & (*t ^ 1));
                *t |= v;
            }
        }
        out.push(CroppedMask::new(size, top, left, h, w, data).expect("same rectangle"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask_nms::tests::arb_masks;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn resolve_gives_disjoint_subsets_and_loses_no_kept_pixel((masks, _scores) in arb_masks()) {
            let out = resolve(&masks).unwrap();
            prop_assert_eq!(out.len(), masks.len());
            let size = ImageSize::new(24, 24);
            for r in 0..size.height {
                for c in 0..size.width {
                    let owners: Vec<usize> = (0..out.len()).filter(|&k| out[k].get(r, c)).collect();
                    prop_assert!(owners.len() <= 1, "pixel ({}, {}) in {:?}", r, c, owners);
                    // The pixel belongs to the first input mask covering it, if any.
                    let first = (0..masks.len()).find(|&k| masks[k].get(r, c));
                    prop_assert_eq!(owners.first().copied(), first);
                }
            }
            for (a, b) in out.iter().zip(&masks) {
                prop_assert_eq!(a.intersection(b), a.area());
            }
        }
    }

    #[test]
    fn empty_input_gives_empty_output() {
        assert!(resolve(&[]).unwrap().is_empty());
    }
}
