//! The seed's cell-type vote.

use cellseg_core::CellType;

/// The most frequent label (`argmax(bincount(labels))`; ties go to the smallest label), `None` for
/// no label.
///
/// The seed (`post_process.py::process_results`) votes over **all** box labels of an image, before
/// any threshold, and uses the winner to pick the per-type thresholds (SEED.md §9 item 5).
pub fn majority_label(labels: &[usize]) -> Option<usize> {
    let max = *labels.iter().max()?;
    let mut counts = vec![0usize; max + 1];
    for &l in labels {
        counts[l] += 1;
    }
    // `max_by_key` keeps the last maximum; scan in reverse so the smallest label wins ties.
    counts.iter().enumerate().rev().max_by_key(|&(_, &c)| c).map(|(l, _)| l)
}

/// The Sartorius cell type that wins the vote: `None` without labels, `Some(Err(label))` when the
/// winning label is not a cell type.
pub fn cell_type_vote(labels: &[usize]) -> Option<Result<CellType, usize>> {
    majority_label(labels).map(|l| CellType::from_label(l).ok_or(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vote_breaks_ties_towards_the_smaller_label() {
        assert_eq!(majority_label(&[2, 1, 2, 1]), Some(1));
        assert_eq!(majority_label(&[2, 2, 0]), Some(2));
        assert_eq!(majority_label(&[]), None);
        assert_eq!(cell_type_vote(&[1, 1, 0]), Some(Ok(CellType::Astro)));
        assert_eq!(cell_type_vote(&[5]), Some(Err(5)));
    }
}
