//! Confidence thresholds and small-mask removal.

use cellseg_core::CroppedMask;
use serde::{Deserialize, Serialize};

use crate::{Result, error::check_range, nms::order_by_score};

/// How masks that are too small are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmallMaskRule {
    /// The seed's `remove_small_masks`: when some area is `≤ min_size` (and `min_size > 0`), remove
    /// only the mask(s) tied at the **smallest** area; all other masks stay, however small. Kept to
    /// reproduce the seed's scores (SEED.md §9 item 10).
    SeedSmallest,
    /// A real minimum-area filter: remove every mask whose area is `< min_size`. The seed's tuner
    /// (`remove_small_masks_multisize`) removes areas `≤ min_size`, i.e. this rule at `min_size + 1`.
    MinArea,
}

/// Positions (in input order) of the detections whose score is `≥ threshold`.
///
/// On scores sorted by decreasing value this is the seed's prefix cut (`argmax(scores < thr)`).
///
/// # Errors
/// [`crate::Error::NanScore`] for a NaN score, [`crate::Error::ThresholdOutOfRange`] when
/// `threshold` is NaN or outside `[0, 1]`.
pub fn keep_confident(scores: &[f32], threshold: f64) -> Result<Vec<usize>> {
    check_range("confidence_threshold", threshold, 0.0, 1.0)?;
    order_by_score(scores)?;
    Ok((0..scores.len()).filter(|&i| f64::from(scores[i]) >= threshold).collect())
}

/// Positions of the masks whose area is `≥ min_area` (the real minimum-area filter).
pub fn remove_small(masks: &[CroppedMask], min_area: usize) -> Vec<usize> {
    let areas: Vec<usize> = masks.iter().map(CroppedMask::area).collect();
    remove_small_by_area(&areas, min_area)
}

/// Positions kept by the seed's `remove_small_masks(min_size)`: all of them when `min_size == 0`,
/// when there is no mask, or when every area is `> min_size`; otherwise every mask except those tied
/// at the smallest area.
pub fn remove_smallest_seed(masks: &[CroppedMask], min_size: usize) -> Vec<usize> {
    let areas: Vec<usize> = masks.iter().map(CroppedMask::area).collect();
    remove_smallest_by_area(&areas, min_size)
}

pub(crate) fn remove_small_by_area(areas: &[usize], min_area: usize) -> Vec<usize> {
    (0..areas.len()).filter(|&i| areas[i] >= min_area).collect()
}

pub(crate) fn remove_smallest_by_area(areas: &[usize], min_size: usize) -> Vec<usize> {
    let Some(&smallest) = areas.iter().min() else { return Vec::new() };
    if min_size == 0 || smallest > min_size {
        return (0..areas.len()).collect();
    }
    (0..areas.len()).filter(|&i| areas[i] > smallest).collect()
}

/// Applies `rule` at `min_size` to areas.
pub(crate) fn apply_rule(rule: SmallMaskRule, areas: &[usize], min_size: usize) -> Vec<usize> {
    match rule {
        SmallMaskRule::SeedSmallest => remove_smallest_by_area(areas, min_size),
        SmallMaskRule::MinArea => remove_small_by_area(areas, min_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_rule_drops_only_the_smallest() {
        assert_eq!(remove_smallest_by_area(&[5, 3, 80, 3, 10], 70), vec![0, 2, 4]);
        assert_eq!(remove_smallest_by_area(&[75, 80], 70), vec![0, 1]);
        assert_eq!(remove_smallest_by_area(&[5, 3], 0), vec![0, 1]);
        assert!(remove_smallest_by_area(&[], 70).is_empty());
    }

    #[test]
    fn min_area_rule_drops_all_small() {
        assert_eq!(remove_small_by_area(&[5, 3, 80, 70, 10], 70), vec![2, 3]);
    }

    #[test]
    fn confidence_cut_is_inclusive() {
        assert_eq!(keep_confident(&[0.9, 0.5, 0.3], 0.5).unwrap(), vec![0, 1]);
        assert!(keep_confident(&[0.9, f32::NAN], 0.5).is_err());
        assert!(keep_confident(&[0.9], 1.1).is_err());
    }

    proptest! {
        #[test]
        fn remove_small_leaves_all_areas_at_least_min(areas in proptest::collection::vec(0usize..200, 0..30), min in 0usize..150) {
            let keep = remove_small_by_area(&areas, min);
            prop_assert!(keep.iter().all(|&i| areas[i] >= min));
            prop_assert_eq!(keep.len(), areas.iter().filter(|&&a| a >= min).count());
            let seed = remove_smallest_by_area(&areas, min);
            if let Some(&s) = areas.iter().min() {
                let expect = if min > 0 && s <= min { areas.iter().filter(|&&a| a > s).count() } else { areas.len() };
                prop_assert_eq!(seed.len(), expect);
            }
        }
    }
}
