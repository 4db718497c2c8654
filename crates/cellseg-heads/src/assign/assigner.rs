//! Pairwise IoU and the MaxIoU assigner (mmdet 2.17 `max_iou_assigner.py`), computed in chunks of
//! ground truths so that hundreds of GTs against ~380k anchors stay within a fixed memory budget.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// MaxIoU assigner (mmdet `MaxIoUAssigner`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssignerConfig {
    /// Boxes with max IoU `>= pos_iou_thr` are positive.
    pub pos_iou_thr: f64,
    /// Boxes with max IoU in `[0, neg_iou_thr)` are negative.
    pub neg_iou_thr: f64,
    /// Minimum IoU for a low-quality match.
    pub min_pos_iou: f64,
    /// Enable low-quality matching (each GT gets its best boxes).
    pub match_low_quality: bool,
    /// Assign every box that ties a GT's best IoU (mmdet default true).
    pub gt_max_assign_all: bool,
    /// Upper bound on `num_gt * num_boxes` elements of one IoU chunk (memory cap).
    pub chunk_elements: usize,
}

impl Default for AssignerConfig {
    fn default() -> Self {
        Self {
            pos_iou_thr: 0.7,
            neg_iou_thr: 0.3,
            min_pos_iou: 0.3,
            match_low_quality: true,
            gt_max_assign_all: true,
            chunk_elements: 1 << 22,
        }
    }
}

/// IoU of every box in `a` `[..., N, 4]` with every box in `b` `[..., M, 4]`: `[..., N, M]`,
/// `overlap / max(union, 1e-6)`. Leading (batch) dimensions must match; the arithmetic of a pair
/// does not depend on them.
pub fn pairwise_iou(a: &Tensor, b: &Tensor) -> Tensor {
    let area_a = (a.select(-1, 2) - a.select(-1, 0)) * (a.select(-1, 3) - a.select(-1, 1));
    let area_b = (b.select(-1, 2) - b.select(-1, 0)) * (b.select(-1, 3) - b.select(-1, 1));
    let lt = a.slice(-1, 0, 2, 1).unsqueeze(-2).maximum(&b.slice(-1, 0, 2, 1).unsqueeze(-3));
    let rb = a.slice(-1, 2, 4, 1).unsqueeze(-2).minimum(&b.slice(-1, 2, 4, 1).unsqueeze(-3));
    let wh = (rb - lt).clamp_min(0.0);
    let inter = wh.select(-1, 0) * wh.select(-1, 1);
    let union = (area_a.unsqueeze(-1) + area_b.unsqueeze(-2) - &inter).clamp_min(1e-6);
    inter / union
}

/// The result of an assignment.
#[derive(Debug)]
pub struct AssignResult {
    /// `[N]` int64: 0 = negative, -1 = ignored, `i + 1` = assigned to GT `i`.
    pub gt_inds: Tensor,
    /// `[N]` float: the best IoU of each box with any GT (0 without GTs).
    pub max_overlaps: Tensor,
    /// `[N]` int64: the label of the assigned GT, -1 where none.
    pub labels: Tensor,
    /// Number of ground truths.
    pub num_gts: i64,
}

/// MaxIoU assigner.
#[derive(Debug, Clone)]
pub struct MaxIouAssigner {
    cfg: AssignerConfig,
}

impl MaxIouAssigner {
    /// An assigner for `cfg`.
    pub fn new(cfg: &AssignerConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// Assigns `boxes` `[N, 4]` to `gt_boxes` `[G, 4]` with `gt_labels` `[G]` (int64).
    ///
    /// The IoU matrix is never materialised whole: GTs are processed `chunk` at a time, with
    /// `chunk * N <= cfg.chunk_elements`.
    pub fn assign(&self, boxes: &Tensor, gt_boxes: &Tensor, gt_labels: &Tensor) -> AssignResult {
        self.assign_where(boxes, None, gt_boxes, gt_labels)
    }

    /// [`Self::assign`] of the boxes where `valid` `[N]` (bool) is true, the others ignored
    /// (`gt_inds` -1, label -1, max overlap -1): the same as assigning only the valid boxes and
    /// scattering the result back (mmdet's `anchor_inside_flags` + `unmap`), without the
    /// host synchronisation of selecting them. An invalid box's IoU counts as -1, below every
    /// real IoU, so it is never the best box of a GT (the low-quality matches are drawn from the
    /// valid boxes only).
    pub fn assign_where(
        &self,
        boxes: &Tensor,
        valid: Option<&Tensor>,
        gt_boxes: &Tensor,
        gt_labels: &Tensor,
    ) -> AssignResult {
        let n = boxes.size()[0];
        let g = gt_boxes.size()[0];
        let dev = boxes.device();
        let long = (Kind::Int64, dev);
        // The boxes outside `valid` are ignored, whatever the assignment gave them.
        let keep_valid = |res: AssignResult| match valid {
            None => res,
            Some(valid) => AssignResult {
                gt_inds: res.gt_inds.where_self(valid, &Tensor::full([n], -1, long)),
                max_overlaps: res
                    .max_overlaps
                    .where_self(valid, &Tensor::full([n], -1.0, (Kind::Float, dev))),
                labels: res.labels.where_self(valid, &Tensor::full([n], -1, long)),
                num_gts: res.num_gts,
            },
        };
        if g == 0 || n == 0 {
            return keep_valid(AssignResult {
                gt_inds: Tensor::zeros([n], long),
                max_overlaps: Tensor::zeros([n], (Kind::Float, dev)),
                labels: Tensor::full([n], -1, long),
                num_gts: g,
            });
        }
        let chunk = (self.cfg.chunk_elements as i64 / n.max(1)).clamp(1, g);
        let mut best = Tensor::full([n], -1.0, (Kind::Float, dev));
        let mut best_idx = Tensor::zeros([n], long);
        let mut low_quality = Tensor::zeros([n], long);
        let mut start = 0;
        while start < g {
            let end = (start + chunk).min(g);
            let mut ov = pairwise_iou(&gt_boxes.slice(0, start, end, 1), boxes); // [k, N]
            if let Some(valid) = valid {
                ov = ov.masked_fill(&valid.logical_not().unsqueeze(0), -1.0);
            }
            let (cmax, carg) = ov.max_dim(0, false);
            // Strictly greater keeps the earlier GT on ties, like a full-matrix argmax.
            let better = cmax.gt_tensor(&best);
            best = cmax.where_self(&better, &best);
            best_idx = (carg + start).where_self(&better, &best_idx);
            if self.cfg.match_low_quality {
                let (gt_max, gt_arg) = ov.max_dim(1, true); // [k, 1]
                let eligible = gt_max.ge(self.cfg.min_pos_iou);
                let hit = if self.cfg.gt_max_assign_all {
                    ov.eq_tensor(&gt_max).logical_and(&eligible)
                } else {
                    let k = end - start;
                    let one = Tensor::zeros([k, n], (Kind::Bool, dev));
                    let _ = one.scatter_value(1, &gt_arg, 1i64);
                    one.logical_and(&eligible)
                };
                // The last GT (in order) that hits a box wins, as in mmdet's sequential loop.
                let ids = Tensor::arange_start(start + 1, end + 1, long).unsqueeze(1);
                let last = (hit.to_kind(Kind::Int64) * ids).amax(0, false);
                low_quality = last.where_self(&last.gt(0), &low_quality);
            }
            start = end;
        }
        let mut gt_inds = Tensor::full([n], -1, long);
        let neg = best.ge(0.0).logical_and(&best.lt(self.cfg.neg_iou_thr));
        gt_inds = Tensor::zeros([n], long).where_self(&neg, &gt_inds);
        let pos = best.ge(self.cfg.pos_iou_thr);
        gt_inds = (&best_idx + 1).where_self(&pos, &gt_inds);
        if self.cfg.match_low_quality {
            gt_inds = low_quality.where_self(&low_quality.gt(0), &gt_inds);
        }
        let labels = gt_labels
            .index_select(0, &(&gt_inds - 1).clamp_min(0))
            .where_self(&gt_inds.gt(0), &Tensor::full([n], -1, long));
        keep_valid(AssignResult { gt_inds, max_overlaps: best, labels, num_gts: g })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).view([-1, 4])
    }

    /// Reference: mmdet's full-matrix algorithm written naively.
    fn naive(boxes: &[[f32; 4]], gts: &[[f32; 4]], cfg: &AssignerConfig) -> Vec<i64> {
        let iou = |a: &[f32; 4], b: &[f32; 4]| {
            let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
            let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
            let i = iw * ih;
            let u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i;
            i / u.max(1e-6)
        };
        let ov: Vec<Vec<f32>> =
            gts.iter().map(|g| boxes.iter().map(|b| iou(g, b)).collect()).collect();
        let mut out = vec![-1i64; boxes.len()];
        for j in 0..boxes.len() {
            let (mut m, mut a) = (-1f32, 0usize);
            for (i, row) in ov.iter().enumerate() {
                if row[j] > m {
                    m = row[j];
                    a = i;
                }
            }
            if m >= 0.0 && (m as f64) < cfg.neg_iou_thr {
                out[j] = 0;
            }
            if m as f64 >= cfg.pos_iou_thr {
                out[j] = a as i64 + 1;
            }
        }
        for (i, row) in ov.iter().enumerate() {
            let gm = row.iter().cloned().fold(f32::MIN, f32::max);
            if gm as f64 >= cfg.min_pos_iou {
                for j in 0..boxes.len() {
                    if row[j] == gm {
                        out[j] = i as i64 + 1;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn chunked_equals_naive_including_low_quality() {
        tch::manual_seed(3);
        let n = 300;
        let g = 37;
        let mk = |k: i64| {
            let xy = Tensor::rand([k, 2], (Kind::Float, Device::Cpu)) * 100.0;
            let wh = Tensor::rand([k, 2], (Kind::Float, Device::Cpu)) * 30.0 + 2.0;
            Tensor::cat(&[&xy, &(&xy + wh)], 1)
        };
        let boxes = mk(n);
        let gts = mk(g);
        let to_arr = |x: &Tensor| -> Vec<[f32; 4]> {
            Vec::<f32>::try_from(x.reshape([-1]))
                .unwrap()
                .chunks(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect()
        };
        for chunk_elements in [1usize, 1000, 1 << 22] {
            let cfg = AssignerConfig { chunk_elements, ..AssignerConfig::default() };
            let r = MaxIouAssigner::new(&cfg).assign(
                &boxes,
                &gts,
                &Tensor::arange(g, (Kind::Int64, Device::Cpu)),
            );
            let got = Vec::<i64>::try_from(&r.gt_inds).unwrap();
            assert_eq!(got, naive(&to_arr(&boxes), &to_arr(&gts), &cfg), "chunk {chunk_elements}");
        }
    }

    /// `assign_where` equals assigning only the valid boxes and scattering the result back (the
    /// RPN's `allowed_border` path before it lost its `nonzero`), with and without GTs, for both
    /// low-quality modes and small chunks.
    #[test]
    fn masked_assignment_equals_the_assignment_of_the_valid_subset() {
        tch::manual_seed(5);
        let mk = |k: i64| {
            let xy = Tensor::rand([k, 2], (Kind::Float, Device::Cpu)) * 100.0 - 10.0;
            let wh = Tensor::rand([k, 2], (Kind::Float, Device::Cpu)) * 30.0 + 2.0;
            Tensor::cat(&[&xy, &(&xy + wh)], 1)
        };
        let boxes = mk(400);
        let valid = boxes.select(1, 0).ge(0.0).logical_and(&boxes.select(1, 3).lt(90.0));
        let idx = valid.nonzero().view([-1]);
        for g in [0, 1, 23] {
            let gts = mk(g);
            let labels = Tensor::arange(g, (Kind::Int64, Device::Cpu));
            for (gt_max_assign_all, chunk_elements) in
                [(true, 1 << 22), (false, 1 << 22), (true, 500)]
            {
                let cfg = AssignerConfig {
                    gt_max_assign_all,
                    chunk_elements,
                    ..AssignerConfig::default()
                };
                let a = MaxIouAssigner::new(&cfg);
                let sub = a.assign(&boxes.index_select(0, &idx), &gts, &labels);
                let full = |x: &Tensor| {
                    Tensor::full([400], -1, (Kind::Int64, Device::Cpu)).index_copy(0, &idx, x)
                };
                let masked = a.assign_where(&boxes, Some(&valid), &gts, &labels);
                let v = |x: &Tensor| Vec::<i64>::try_from(x).unwrap();
                assert_eq!(v(&masked.gt_inds), v(&full(&sub.gt_inds)), "g {g} {cfg:?}");
                assert_eq!(v(&masked.labels), v(&full(&sub.labels)), "g {g} {cfg:?}");
            }
        }
    }

    #[test]
    fn no_gt_is_all_negative() {
        let r = MaxIouAssigner::new(&AssignerConfig::default()).assign(
            &t(&[0., 0., 4., 4.]),
            &Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
            &Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        );
        assert_eq!(Vec::<i64>::try_from(&r.gt_inds).unwrap(), vec![0]);
    }

    #[test]
    fn iou_values() {
        let a = t(&[0., 0., 10., 10.]);
        let b = t(&[5., 0., 15., 10., 20., 20., 30., 30.]);
        let v = Vec::<f32>::try_from(pairwise_iou(&a, &b).view([-1])).unwrap();
        assert!((v[0] - 1.0 / 3.0).abs() < 1e-6 && v[1] == 0.0);
    }
}
