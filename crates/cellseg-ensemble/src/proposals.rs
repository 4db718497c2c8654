//! Merge point 1: proposals (the seed's `EnsembleModel.get_proposals`, SEED.md §4.2 step 2).
//!
//! The RPN logits and deltas of the used members on the identity view are averaged per FPN
//! level (raw values, before the sigmoid), the cell type is guessed from how many locations of
//! each level are confident, and the merged outputs are decoded once, with that cell type's
//! [`crate::ProposalSettings`], by a member's RPN head (its anchors).

use cellseg_core::CellType;
use cellseg_heads::heads::rpn::RpnOutputs;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// The mean over members of the RPN outputs of every level (all members share the anchors, so
/// the outputs line up element by element).
///
/// # Errors
/// [`Error::Mismatch`] when there is no output, or the members' levels or shapes differ.
pub fn merge_rpn_outputs(outs: &[RpnOutputs]) -> Result<RpnOutputs> {
    let first = outs.first().ok_or_else(|| Error::Mismatch("no RPN outputs to merge".into()))?;
    let mean = |pick: fn(&RpnOutputs) -> &Vec<Tensor>, what: &str| -> Result<Vec<Tensor>> {
        (0..pick(first).len())
            .map(|l| {
                let lv: Vec<&Tensor> = outs.iter().filter_map(|o| pick(o).get(l)).collect();
                if lv.len() != outs.len() || lv.iter().any(|t| t.size() != lv[0].size()) {
                    let shapes: Vec<Vec<i64>> = lv.iter().map(|t| t.size()).collect();
                    return Err(Error::Mismatch(format!(
                        "RPN {what} of level {l} differ between members: {shapes:?}"
                    )));
                }
                Ok(Tensor::stack(&lv, 0).mean_dim(0, false, Kind::Float))
            })
            .collect()
    };
    if outs.iter().any(|o| o.cls.len() != first.cls.len()) {
        return Err(Error::Mismatch("members have different numbers of FPN levels".into()));
    }
    Ok(RpnOutputs { cls: mean(|o| &o.cls, "logits")?, reg: mean(|o| &o.reg, "deltas")? })
}

/// The seed's cell-type guess from the merged RPN logits: per level, count the locations whose
/// best anchor has `sigmoid(logit) > score`; many confident locations on the two coarsest levels
/// (large anchors) mean astrocytes, few confident locations overall mean cortical neurons, the
/// rest is SH-SY5Y.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CellTypeHeuristic {
    /// Objectness of a confident location. Seed 0.7.
    pub score: f64,
    /// Astro when the two coarsest levels have more confident locations than this. Seed 10.
    pub astro_coarse_above: i64,
    /// Cort when all levels together have fewer than this… Seed 4500.
    pub cort_total_below: i64,
    /// …and level 1 (stride 4) fewer than this. Seed 750.
    pub cort_level1_below: i64,
}

impl Default for CellTypeHeuristic {
    fn default() -> Self {
        Self { score: 0.7, astro_coarse_above: 10, cort_total_below: 4500, cort_level1_below: 750 }
    }
}

impl CellTypeHeuristic {
    /// Confident locations per level of image 0 of `out`.
    pub fn level_counts(&self, out: &RpnOutputs) -> Vec<i64> {
        out.cls
            .iter()
            .map(|c| {
                let best = c.get(0).sigmoid().amax([0], false);
                best.gt(self.score).sum(Kind::Int64).int64_value(&[])
            })
            .collect()
    }

    /// The cell type of `level_counts` (at least two levels).
    pub fn cell_type(&self, level_counts: &[i64]) -> CellType {
        let n = level_counts.len();
        let coarse: i64 = level_counts[n.saturating_sub(2)..].iter().sum();
        let total: i64 = level_counts.iter().sum();
        let level1 = level_counts.get(1).copied().unwrap_or(0);
        if coarse > self.astro_coarse_above {
            CellType::Astro
        } else if total < self.cort_total_below && level1 < self.cort_level1_below {
            CellType::Cort
        } else {
            CellType::Shsy5y
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if (0.0..=1.0).contains(&self.score) {
            Ok(())
        } else {
            Err(Error::Config {
                path: None,
                reason: format!("heuristic.score = {}: must be in [0, 1]", self.score),
            })
        }
    }
}

/// The heuristic's verdict and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellTypeGuess {
    /// Confident locations per FPN level.
    pub level_counts: Vec<i64>,
    /// The guessed type.
    pub cell_type: CellType,
}

/// The majority label of `labels` as a cell type (the seed's `argmax(bincount(labels))`, ties to
/// the smaller label); `None` without labels or when the majority label is not a cell type.
pub fn majority_cell_type(labels: &[usize]) -> Option<CellType> {
    let max = *labels.iter().max()?;
    let mut counts = vec![0usize; max + 1];
    for &l in labels {
        counts[l] += 1;
    }
    let best = counts.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?.0;
    CellType::from_label(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn heuristic_thresholds_are_the_seeds() {
        let h = CellTypeHeuristic::default();
        assert_eq!(h.cell_type(&[0, 0, 0, 6, 5]), CellType::Astro);
        assert_eq!(h.cell_type(&[0, 0, 0, 5, 5]), CellType::Cort);
        assert_eq!(h.cell_type(&[3000, 749, 500, 5, 5]), CellType::Cort);
        assert_eq!(h.cell_type(&[3000, 750, 0, 0, 0]), CellType::Shsy5y);
        assert_eq!(h.cell_type(&[3000, 1000, 500, 0, 0]), CellType::Shsy5y);
    }

    #[test]
    fn level_counts_take_the_best_anchor() {
        // 3 anchors on a 1×2 grid: location 0 has one confident anchor, location 1 none.
        let c = Tensor::from_slice(&[2.0f32, -3.0, -3.0, -3.0, 0.0, 0.0]).view([1, 3, 1, 2]);
        let out = RpnOutputs { cls: vec![c.shallow_clone(), c], reg: vec![] };
        assert_eq!(CellTypeHeuristic::default().level_counts(&out), [1, 1]);
    }

    #[test]
    fn merge_is_the_mean_and_refuses_mismatches() {
        let o = |v: f32| RpnOutputs {
            cls: vec![Tensor::full([1, 3, 2, 2], v as f64, (Kind::Float, Device::Cpu))],
            reg: vec![Tensor::full([1, 12, 2, 2], -v as f64, (Kind::Float, Device::Cpu))],
        };
        let m = merge_rpn_outputs(&[o(1.0), o(3.0)]).unwrap();
        assert_eq!(f64::try_from(m.cls[0].mean(Kind::Float)).unwrap(), 2.0);
        assert_eq!(f64::try_from(m.reg[0].mean(Kind::Float)).unwrap(), -2.0);
        let mut bad = o(1.0);
        bad.cls[0] = Tensor::zeros([1, 3, 2, 3], (Kind::Float, Device::Cpu));
        let e = merge_rpn_outputs(&[o(1.0), bad]).unwrap_err().to_string();
        assert!(e.contains("level 0") && e.contains("[1, 3, 2, 3]"), "{e}");
        assert!(merge_rpn_outputs(&[]).is_err());
    }

    #[test]
    fn majority_ties_go_to_the_smaller_label() {
        assert_eq!(majority_cell_type(&[2, 1, 2, 1]), Some(CellType::Astro));
        assert_eq!(majority_cell_type(&[2, 2, 0]), Some(CellType::Cort));
        assert_eq!(majority_cell_type(&[]), None);
        assert_eq!(majority_cell_type(&[5, 5]), None);
    }
}
