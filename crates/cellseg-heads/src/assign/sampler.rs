//! `RandomSampler` (mmdet 2.17 `core/bbox/samplers/{base,random}_sampler.py`).
//!
//! Positives (`gt_inds > 0`) are subsampled to `int(num * pos_fraction)` with a random permutation,
//! negatives (`gt_inds == 0`) fill up to `num`; both index lists come back sorted (mmdet's
//! `.unique()`). The GT-as-proposal prepending is done by the caller (see
//! [`crate::roi_heads`]), which keeps the assignment of the original proposals as mmdet does.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Random sampler (mmdet `RandomSampler`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Samples per image.
    pub num: usize,
    /// Fraction of positives.
    pub pos_fraction: f64,
    /// Prepend the GT boxes to the proposals (RCNN: true, RPN: false).
    pub add_gt_as_proposals: bool,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self { num: 256, pos_fraction: 0.5, add_gt_as_proposals: false }
    }
}

/// Indices chosen by the sampler.
#[derive(Debug)]
pub struct SampleResult {
    /// `[P]` int64, sorted: positive boxes.
    pub pos_inds: Tensor,
    /// `[Q]` int64, sorted: negative boxes.
    pub neg_inds: Tensor,
}

/// Random sampler; randomness comes from libtorch's generator (`tch::manual_seed`).
#[derive(Debug, Clone)]
pub struct RandomSampler {
    cfg: SamplerConfig,
}

impl RandomSampler {
    /// A sampler for `cfg`.
    pub fn new(cfg: &SamplerConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// Samples from `gt_inds` `[N]` (int64, as in [`crate::assign::assigner::AssignResult::gt_inds`]).
    ///
    /// One host synchronisation (the two counts); callers with several images should gather
    /// [`candidate_counts`] of all of them, copy them at once and call [`Self::sample_counted`].
    pub fn sample(&self, gt_inds: &Tensor) -> SampleResult {
        let c = Vec::<i64>::try_from(crate::transfers::download(&candidate_counts(gt_inds)))
            .expect("candidate counts are int64");
        self.sample_counted(gt_inds, c[0], c[1])
    }

    /// [`Self::sample`] when the numbers of positives (`gt_inds > 0`) and negatives
    /// (`gt_inds == 0`) are already known on the host: no host synchronisation. The candidate
    /// index lists come from [`positions`] (equal to `nonzero`), and the random draws are the
    /// same as [`Self::sample`].
    pub fn sample_counted(&self, gt_inds: &Tensor, num_pos: i64, num_neg: i64) -> SampleResult {
        let budget = (self.cfg.num as f64 * self.cfg.pos_fraction) as i64;
        let pos = choose(&positions(&gt_inds.gt(0), num_pos), budget);
        let num_neg_wanted = self.cfg.num as i64 - pos.size()[0];
        let neg = choose(&positions(&gt_inds.eq(0), num_neg), num_neg_wanted);
        SampleResult { pos_inds: pos, neg_inds: neg }
    }
}

/// Ascending positions `[count]` (int64) of the true entries of the bool `mask` `[N]`, i.e.
/// `mask.nonzero()`, when their number `count` is known on the host: every true entry is
/// scattered to its rank (cumulative sum), the false ones to a spare last slot that is dropped.
/// No host synchronisation, O(N).
pub fn positions(mask: &Tensor, count: i64) -> Tensor {
    let n = mask.size()[0];
    let dev = mask.device();
    let rank = mask.cumsum(0, Kind::Int64) - 1;
    let slot = rank.where_scalarother(mask, count);
    Tensor::zeros([count + 1], (Kind::Int64, dev))
        .scatter(0, &slot, &Tensor::arange(n, (Kind::Int64, dev)))
        .narrow(0, 0, count)
}

/// `[2]` int64 on the device of `gt_inds`: the numbers of positives and negatives (no sync).
pub fn candidate_counts(gt_inds: &Tensor) -> Tensor {
    Tensor::stack(
        &[
            gt_inds.gt(0).sum_dim_intlist(0, false, Kind::Int64),
            gt_inds.eq(0).sum_dim_intlist(0, false, Kind::Int64),
        ],
        0,
    )
}

/// `(positives, negatives)` of every `gt_inds` (see [`candidate_counts`]), in one
/// device-to-host copy.
pub fn host_counts<'a>(gt_inds: impl Iterator<Item = &'a Tensor>) -> Vec<(i64, i64)> {
    let c: Vec<Tensor> = gt_inds.map(candidate_counts).collect();
    if c.is_empty() {
        return Vec::new();
    }
    let v = Vec::<i64>::try_from(crate::transfers::download(&Tensor::cat(&c, 0)))
        .expect("candidate counts are int64");
    v.chunks(2).map(|p| (p[0], p[1])).collect()
}

/// At most `k` of `inds`, drawn at random, sorted.
fn choose(inds: &Tensor, k: i64) -> Tensor {
    let n = inds.size()[0];
    if n <= k {
        return inds.shallow_clone();
    }
    let perm = Tensor::randperm(n, (Kind::Int64, inds.device())).slice(0, 0, k, 1);
    inds.index_select(0, &perm).sort(0, false).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn positions_equal_nonzero() {
        tch::manual_seed(1);
        for n in [0i64, 1, 7, 1000] {
            let m = Tensor::rand([n], (Kind::Float, Device::Cpu)).gt(0.6);
            let want = Vec::<i64>::try_from(m.nonzero().view([-1])).unwrap();
            let got = Vec::<i64>::try_from(positions(&m, want.len() as i64)).unwrap();
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn respects_budget_and_sorts() {
        tch::manual_seed(0);
        let g = Tensor::from_slice(&[1i64, 0, 0, 2, -1, 0, 3, 3, 0, 0]).to_device(Device::Cpu);
        let s = RandomSampler::new(&SamplerConfig {
            num: 4,
            pos_fraction: 0.5,
            add_gt_as_proposals: false,
        })
        .sample(&g);
        let p = Vec::<i64>::try_from(&s.pos_inds).unwrap();
        let q = Vec::<i64>::try_from(&s.neg_inds).unwrap();
        assert_eq!((p.len(), q.len()), (2, 2));
        assert!(p.windows(2).all(|w| w[0] < w[1]) && q.windows(2).all(|w| w[0] < w[1]));
        assert!(p.iter().all(|&i| [0, 3, 6, 7].contains(&i)));
        assert!(q.iter().all(|&i| [1, 2, 5, 8, 9].contains(&i)));
    }
}
