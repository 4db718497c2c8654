//! Named losses and how they become one scalar: a plain sum, or the seed's loss-weight decay.

use tch::Tensor;

/// The named losses of one forward pass: the detectors' own type, so that a detector's losses
/// reach the engine as they are.
pub use cellseg_heads::Losses;

/// The seed's loss weights for one epoch (`training/custom_loss.py::custom_parse_losses`,
/// SEED.md §3.4), keyed by the substring they match.
///
/// With `M = epochs + 1` and `e` the 1-based epoch: `loss_mask` 1; `loss_cls` `(M+2-e)/(M+1)`;
/// `loss_bbox`, `loss_rpn_cls`, `loss_rpn_bbox` `(M+1-⌊e/2⌋)/(M+1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecayWeights {
    /// Weight of `loss_mask`.
    pub mask: f64,
    /// Weight of `loss_cls`.
    pub cls: f64,
    /// Weight of `loss_bbox`, `loss_rpn_cls` and `loss_rpn_bbox`.
    pub bbox: f64,
}

impl DecayWeights {
    /// The weights of 1-based `epoch` in a run of `epochs` epochs.
    pub fn for_epoch(epoch: u32, epochs: u32) -> Self {
        // The seed calls custom_parse_losses(losses, epoch, epochs + 1).
        let m = f64::from(epochs) + 1.0;
        let e = f64::from(epoch);
        Self {
            mask: 1.0,
            cls: (m + 2.0 - e) / (m + 1.0),
            bbox: (m + 1.0 - f64::from(epoch / 2)) / (m + 1.0),
        }
    }

    /// The weight of loss `name`: the key contained in `name` when exactly one is (the seed's
    /// rule), else `None` and the loss is dropped (e.g. HTC's `loss_semantic_seg`, SEED.md §9.11).
    pub fn weight_of(&self, name: &str) -> Option<f64> {
        let keys = [
            ("loss_mask", self.mask),
            ("loss_cls", self.cls),
            ("loss_bbox", self.bbox),
            ("loss_rpn_cls", self.bbox),
            ("loss_rpn_bbox", self.bbox),
        ];
        let mut hits = keys.iter().filter(|(k, _)| name.contains(k));
        match (hits.next(), hits.next()) {
            (Some(&(_, w)), None) => Some(w),
            _ => None,
        }
    }
}

/// How the named losses become the scalar that is back-propagated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossWeighting {
    /// mmdet's `_parse_losses`: the sum of the means of every loss whose name contains `loss`.
    Sum,
    /// The seed's decay: `Σ w_k·mean(loss_k) / Σ w_k` over the losses with a weight.
    Decay(DecayWeights),
}

impl LossWeighting {
    /// The weighting for 1-based `epoch` of `epochs` (`decay` from [`crate::LossConfig`]).
    pub fn for_epoch(decay: bool, epoch: u32, epochs: u32) -> Self {
        if decay { Self::Decay(DecayWeights::for_epoch(epoch, epochs)) } else { Self::Sum }
    }

    /// The weight each named loss gets (before the normalisation by their sum), `None` if dropped.
    pub fn weight_of(&self, name: &str) -> Option<f64> {
        match self {
            Self::Sum => name.contains("loss").then_some(1.0),
            Self::Decay(w) => w.weight_of(name),
        }
    }

    /// Combines `losses` into one scalar, or `None` when no loss is used.
    ///
    /// # Shapes
    /// Returns a scalar `[]` tensor on the losses' device.
    pub fn combine(&self, losses: &Losses) -> Option<Tensor> {
        let mut total: Option<Tensor> = None;
        let mut sum_w = 0.0;
        for (name, value) in losses.iter() {
            let Some(w) = self.weight_of(name) else { continue };
            let term = value.mean(None) * w;
            total = Some(match total {
                None => term,
                Some(t) => t + term,
            });
            sum_w += w;
        }
        match self {
            Self::Sum => total,
            Self::Decay(_) => total.map(|t| t / sum_w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-4
    }

    #[test]
    fn decay_weights_match_the_seed_worked_example() {
        // SEED.md §3.4, epochs = 40.
        let w = DecayWeights::for_epoch(1, 40);
        assert_eq!((w.cls, w.bbox, w.mask), (1.0, 1.0, 1.0));
        let w = DecayWeights::for_epoch(20, 40);
        assert!(close(w.cls, 0.548) && close(w.bbox, 0.762), "{w:?}");
        assert_eq!((w.cls, w.bbox), (23.0 / 42.0, 32.0 / 42.0));
        let w = DecayWeights::for_epoch(40, 40);
        assert!(close(w.cls, 0.071) && close(w.bbox, 0.524), "{w:?}");
    }

    #[test]
    fn names_match_by_substring_and_unmatched_are_dropped() {
        let w = DecayWeights::for_epoch(20, 40);
        assert_eq!(w.weight_of("s1.loss_cls"), Some(w.cls));
        assert_eq!(w.weight_of("loss_rpn_cls"), Some(w.bbox));
        assert_eq!(w.weight_of("loss_rpn_bbox"), Some(w.bbox));
        assert_eq!(w.weight_of("loss_mask"), Some(1.0));
        assert_eq!(w.weight_of("loss_semantic_seg"), None);
        assert_eq!(w.weight_of("acc"), None);
    }

    #[test]
    fn decay_is_a_weighted_mean_normalised_by_the_weights() {
        let mut l = Losses::new();
        l.push("loss_cls", Tensor::from_slice(&[1.0f64, 3.0])); // mean 2
        l.push("loss_bbox", Tensor::from(4.0f64));
        l.push("loss_mask", Tensor::from(8.0f64));
        l.push("acc", Tensor::from(100.0f64));
        let w = DecayWeights::for_epoch(20, 40);
        let got = LossWeighting::Decay(w).combine(&l).unwrap().double_value(&[]);
        let want = (2.0 * w.cls + 4.0 * w.bbox + 8.0) / (w.cls + w.bbox + 1.0);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        let sum = LossWeighting::Sum.combine(&l).unwrap().double_value(&[]);
        assert_eq!(sum, 14.0);
    }

    #[test]
    fn no_usable_loss_gives_none() {
        let mut l = Losses::new();
        l.push("acc", Tensor::from(1.0f64));
        assert!(LossWeighting::for_epoch(true, 1, 4).combine(&l).is_none());
        assert!(LossWeighting::Sum.combine(&l).is_none());
    }
}
