//! `RandomSampler` (mmdet 2.17 `core/bbox/samplers/{base,random}_sampler.py`).
//!
//! Positives (`gt_inds > 0`) are subsampled to `int(num * pos_fraction)` with a random permutation,
//! negatives (`gt_inds == 0`) fill up to `num`; both index lists come back sorted (mmdet's
//! `.unique()`). The GT-as-proposal prepending is done by the caller (see
//! [`crate::roi_heads`]), which keeps the assignment of the original proposals as mmdet does.

use tch::{Kind, Tensor};

use crate::config::SamplerConfig;

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

    /// Samples from `gt_inds` `[N]` (int64, as in [`crate::assigner::AssignResult::gt_inds`]).
    pub fn sample(&self, gt_inds: &Tensor) -> SampleResult {
        let num_pos = (self.cfg.num as f64 * self.cfg.pos_fraction) as i64;
        let pos = choose(&gt_inds.gt(0).nonzero().view([-1]), num_pos);
        let num_neg = self.cfg.num as i64 - pos.size()[0];
        let neg = choose(&gt_inds.eq(0).nonzero().view([-1]), num_neg);
        SampleResult { pos_inds: pos, neg_inds: neg }
    }
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
