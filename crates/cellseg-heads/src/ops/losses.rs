//! Loss primitives with mmdet's reduction (`sum(loss * weight) / avg_factor`).

use serde::{Deserialize, Serialize};
use tch::{Reduction, Tensor};

/// Regression loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BoxLoss {
    /// `|x|` (mmdet Mask R-CNN config).
    L1,
    /// Smooth L1 with `beta` (torchvision: 1/9; cascade stages: 1).
    SmoothL1 {
        /// Transition point.
        beta: f64,
    },
}

/// Regression loss of `pred` against `target` (same shape), summed, divided by `avg_factor`.
/// An empty input gives `pred.sum() * 0` (keeps the graph, as mmdet does).
pub fn box_loss(kind: BoxLoss, pred: &Tensor, target: &Tensor, avg_factor: f64) -> Tensor {
    if pred.numel() == 0 {
        return pred.sum(pred.kind()) * 0.0;
    }
    let s = match kind {
        BoxLoss::L1 => pred.l1_loss(target, Reduction::Sum),
        BoxLoss::SmoothL1 { beta } => {
            if beta <= 0.0 {
                pred.l1_loss(target, Reduction::Sum)
            } else {
                pred.smooth_l1_loss(target, Reduction::Sum, beta)
            }
        }
    };
    s / avg_factor.max(1.0)
}

/// Sigmoid BCE of logits against 0/1 targets, summed, divided by `avg_factor`.
pub fn bce_sum(logits: &Tensor, targets: &Tensor, avg_factor: f64) -> Tensor {
    if logits.numel() == 0 {
        return logits.sum(logits.kind()) * 0.0;
    }
    logits.binary_cross_entropy_with_logits::<Tensor>(targets, None, None, Reduction::Sum)
        / avg_factor.max(1.0)
}

/// Softmax cross-entropy of `logits` `[N, K]` against `labels` `[N]`, summed / `avg_factor`.
pub fn ce_sum(logits: &Tensor, labels: &Tensor, avg_factor: f64) -> Tensor {
    if logits.size()[0] == 0 {
        return logits.sum(logits.kind()) * 0.0;
    }
    logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::Sum, -100, 0.0)
        / avg_factor.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn reductions() {
        let p = Tensor::from_slice(&[0.0f32, 1.0, 3.0]);
        let t = Tensor::from_slice(&[0.5f32, 1.0, 1.0]);
        let l1 = f64::try_from(box_loss(BoxLoss::L1, &p, &t, 2.0)).unwrap();
        assert!((l1 - 1.25).abs() < 1e-6);
        // smooth L1 beta 1: 0.5*0.25 + 0 + (2 - 0.5) = 1.625, / 1
        let sl1 = f64::try_from(box_loss(BoxLoss::SmoothL1 { beta: 1.0 }, &p, &t, 1.0)).unwrap();
        assert!((sl1 - 1.625).abs() < 1e-6);
        let e = Tensor::zeros([0, 4], (Kind::Float, Device::Cpu));
        assert_eq!(f64::try_from(box_loss(BoxLoss::L1, &e, &e, 0.0)).unwrap(), 0.0);
        let ce = ce_sum(
            &Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)),
            &Tensor::from_slice(&[0i64, 3]),
            2.0,
        );
        assert!((f64::try_from(ce).unwrap() - 4f64.ln()).abs() < 1e-6);
    }
}
