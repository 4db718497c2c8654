//! RPN head (mmdet `RPNHead`): 3×3 conv + ReLU, 1×1 objectness (sigmoid, one channel per anchor)
//! and 1×1 deltas; proposal generation and the RPN targets and losses.
//!
//! # Checkpoint keys
//! `rpn_head.rpn_conv.{weight,bias}`, `rpn_head.rpn_cls.{weight,bias}`, `rpn_head.rpn_reg.{weight,bias}`.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

use tch::{Device, Kind, Tensor, nn, nn::Module};

use crate::assign::assigner::AssignerConfig;
use crate::assign::assigner::MaxIouAssigner;
use crate::assign::sampler::SamplerConfig;
use crate::assign::sampler::{RandomSampler, host_counts};
use crate::ops::anchors::{AnchorConfig, AnchorGenerator};
use crate::ops::box_coder::BoxCoder;
use crate::ops::box_coder::BoxCoderConfig;
use crate::ops::losses::BoxLoss;
use crate::ops::losses::{bce_sum, box_loss};
use crate::ops::nms::{SPLIT_THR, greedy_keep, greedy_scan_masked, overlap_bits};

/// Proposal generation (mmdet `rpn_proposal` / `test_cfg.rpn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProposalConfig {
    /// Top-scoring anchors kept per level before NMS (0 = all).
    pub nms_pre: usize,
    /// Proposals kept per image after NMS.
    pub max_per_img: usize,
    /// NMS IoU threshold (suppress when IoU > thr).
    pub nms_iou: f64,
    /// Keep boxes with `w > min_bbox_size` and `h > min_bbox_size` (strict, mmdet).
    pub min_bbox_size: f64,
    /// After the NMS, keep only proposals with objectness `> score_thr` (the seed's ensemble:
    /// 0.9 / 0.9 / 0.95 per cell type, SEED.md §4.2; not in mmdet, whose default is none).
    pub score_thr: Option<f64>,
}

impl Default for ProposalConfig {
    fn default() -> Self {
        Self { nms_pre: 2000, max_per_img: 1000, nms_iou: 0.7, min_bbox_size: 0.0, score_thr: None }
    }
}

/// RPN head and its training / test settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpnConfig {
    /// Input (= FPN) channels.
    pub in_channels: i64,
    /// Channels of the 3×3 conv.
    pub feat_channels: i64,
    /// Anchors.
    pub anchors: AnchorConfig,
    /// Box coder (stds 1).
    pub coder: BoxCoderConfig,
    /// Assigner (0.7 / 0.3 / 0.3).
    pub assigner: AssignerConfig,
    /// Sampler (256 at 0.5).
    pub sampler: SamplerConfig,
    /// Anchors that cross the unpadded image border by more than this many pixels take no
    /// part in training (mmdet `train_cfg.rpn.allowed_border`); negative: every anchor (seed
    /// Mask R-CNN and Cascade: -1; seed HTC: 0).
    pub allowed_border: f64,
    /// Regression loss.
    pub loss_bbox: BoxLoss,
    /// Training proposals.
    pub train_proposals: ProposalConfig,
    /// Test proposals.
    pub test_proposals: ProposalConfig,
}

impl Default for RpnConfig {
    fn default() -> Self {
        Self {
            in_channels: 256,
            feat_channels: 256,
            anchors: AnchorConfig::default(),
            coder: BoxCoderConfig::default(),
            assigner: AssignerConfig::default(),
            sampler: SamplerConfig::default(),
            allowed_border: -1.0,
            loss_bbox: BoxLoss::L1,
            train_proposals: ProposalConfig::default(),
            test_proposals: ProposalConfig { nms_pre: 2000, ..ProposalConfig::default() },
        }
    }
}

/// Raw RPN outputs, one tensor per level.
#[derive(Debug)]
pub struct RpnOutputs {
    /// `[B, A, H_l, W_l]` objectness logits per level.
    pub cls: Vec<Tensor>,
    /// `[B, 4A, H_l, W_l]` deltas per level (channel `a * 4 + k` = coordinate k of anchor a).
    pub reg: Vec<Tensor>,
}

/// Proposals of one image.
#[derive(Debug)]
pub struct Proposals {
    /// `[N, 4]` float32 xyxy input pixels, sorted by score (descending).
    pub boxes: Tensor,
    /// `[N]` float32 objectness probabilities.
    pub scores: Tensor,
}

/// RPN losses.
#[derive(Debug)]
pub struct RpnLosses {
    /// Objectness BCE.
    pub cls: Tensor,
    /// Box regression.
    pub reg: Tensor,
}

/// The RPN head.
#[derive(Debug)]
pub struct RpnHead {
    rpn_conv: nn::Conv2D,
    rpn_cls: nn::Conv2D,
    rpn_reg: nn::Conv2D,
    anchors: AnchorGenerator,
    coder: BoxCoder,
    assigner: MaxIouAssigner,
    sampler: RandomSampler,
    cfg: RpnConfig,
    /// Anchors of the last feature sizes and device seen by [`RpnHead::level_anchors`]: building
    /// them copies the base anchors host-to-device (a synchronisation per level), and a training
    /// step asks twice (losses and proposals) with the same sizes.
    anchor_cache: Mutex<Option<AnchorCache>>,
}

/// Anchors of one set of feature sizes on one device.
#[derive(Debug)]
struct AnchorCache {
    sizes: Vec<(i64, i64)>,
    device: Device,
    anchors: Vec<Tensor>,
}

/// Clips `boxes` `[B, K, 4]` in place to `[0, w] × [0, h]` of `sizes[b] = (h, w)` (one pair of
/// launches when all images share a size).
fn clip_per_image(boxes: &Tensor, sizes: &[(i64, i64)]) {
    let clip = |t: &Tensor, (h, w): (i64, i64)| {
        let _ = t.slice(-1, 0, 4, 2).clamp_(0.0, w as f64);
        let _ = t.slice(-1, 1, 4, 2).clamp_(0.0, h as f64);
    };
    if sizes.iter().all(|&s| s == sizes[0]) {
        clip(boxes, sizes[0]);
    } else {
        for (b, &s) in sizes.iter().enumerate() {
            clip(&boxes.get(b as i64), s);
        }
    }
}

fn normal_conv(p: nn::Path, i: i64, o: i64, k: i64, pad: i64) -> nn::Conv2D {
    let c = nn::ConvConfig {
        padding: pad,
        ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.01 },
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::conv2d(p, i, o, k, c)
}

impl RpnHead {
    /// The device of the head's weights (the model's).
    pub fn device(&self) -> tch::Device {
        self.rpn_conv.ws.device()
    }

    /// The dtype of the head's weights (the model's).
    pub fn weight_kind(&self) -> Kind {
        self.rpn_conv.ws.kind()
    }

    /// Builds the head under `p` (mmdet init: normal std 0.01, bias 0).
    pub fn new(p: &nn::Path, cfg: &RpnConfig) -> Self {
        let anchors = AnchorGenerator::new(&cfg.anchors);
        let a = anchors.num_base_anchors();
        Self {
            rpn_conv: normal_conv(p / "rpn_conv", cfg.in_channels, cfg.feat_channels, 3, 1),
            rpn_cls: normal_conv(p / "rpn_cls", cfg.feat_channels, a, 1, 0),
            rpn_reg: normal_conv(p / "rpn_reg", cfg.feat_channels, 4 * a, 1, 0),
            anchors,
            coder: BoxCoder::new(&cfg.coder),
            assigner: MaxIouAssigner::new(&cfg.assigner),
            sampler: RandomSampler::new(&cfg.sampler),
            cfg: cfg.clone(),
            anchor_cache: Mutex::new(None),
        }
    }

    /// The head's settings.
    pub fn config(&self) -> &RpnConfig {
        &self.cfg
    }

    /// The anchor generator.
    pub fn anchor_generator(&self) -> &AnchorGenerator {
        &self.anchors
    }

    /// Runs the head on the RPN levels (`feats.len()` must equal the number of anchor strides).
    pub fn forward(&self, feats: &[Tensor]) -> RpnOutputs {
        let mut cls = Vec::with_capacity(feats.len());
        let mut reg = Vec::with_capacity(feats.len());
        for f in feats {
            let x = self.rpn_conv.forward(f).relu();
            cls.push(self.rpn_cls.forward(&x));
            reg.push(self.rpn_reg.forward(&x));
        }
        RpnOutputs { cls, reg }
    }

    /// Anchors of every level for `out` (`[H_l * W_l * A, 4]`). The tensors are shared with a
    /// cache (the last sizes and device), so callers must not modify them in place.
    pub fn level_anchors(&self, out: &RpnOutputs) -> Vec<Tensor> {
        let sizes: Vec<(i64, i64)> = out.cls.iter().map(|c| (c.size()[2], c.size()[3])).collect();
        let device = out.cls[0].device();
        let mut cache = self.anchor_cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.as_ref() {
            Some(c) if c.sizes == sizes && c.device == device => {}
            _ => {
                let anchors = self.anchors.all_anchors(&sizes, device);
                *cache = Some(AnchorCache { sizes, device, anchors });
            }
        }
        let cached = cache.as_ref().expect("the cache was filled above");
        cached.anchors.iter().map(Tensor::shallow_clone).collect()
    }

    /// Proposals of every image (mmdet `_get_bboxes_single`): per level the top `nms_pre` scores,
    /// decode + clip to `image_sizes[b] = (h, w)`, drop boxes with `w, h <= min_bbox_size`, NMS per
    /// level, then (the seed's ensemble) `score > score_thr`, keep `max_per_img`. The result
    /// carries no gradient.
    ///
    /// All images are processed together: top-k per level on `[B, N_l]`, one decode for every
    /// image and level, and the NMS of every (image, level) pair packed on the device
    /// ([`overlap_bits`]) and copied to the host in ONE transfer together with the min-size
    /// filter; the greedy scans run on the host and the kept indices go back in one copy. So the
    /// whole batch costs two host synchronisations instead of several per image and level.
    ///
    /// The result equals per-image [`crate::ops::nms::batched_nms`] with level ids, including its
    /// choice between the offset trick (at most `SPLIT_THR` = 4000 boxes left; the shift changes
    /// the IoU rounding) and one NMS per level. Boxes of different levels never suppress each
    /// other, and both paths end with a stable sort by score, so the kept sets and their order
    /// are the same.
    pub fn proposals(
        &self,
        out: &RpnOutputs,
        image_sizes: &[(i64, i64)],
        cfg: &ProposalConfig,
    ) -> Vec<Proposals> {
        let _guard = tch::no_grad_guard();
        let bsz = image_sizes.len() as i64;
        if bsz == 0 {
            return Vec::new();
        }
        let anchors = self.level_anchors(out);
        let dev = out.cls[0].device();
        // 1. Per level, the top `nms_pre` (or all, sorted) of every image at once.
        let mut scores = Vec::new();
        let mut level_anchors = Vec::new();
        let mut deltas = Vec::new();
        let mut level_ids = Vec::new();
        let mut lens = Vec::new();
        for (l, (c, r)) in out.cls.iter().zip(&out.reg).enumerate() {
            let s = c.narrow(0, 0, bsz).permute([0, 2, 3, 1]).reshape([bsz, -1]).sigmoid();
            let d = r.narrow(0, 0, bsz).permute([0, 2, 3, 1]).reshape([bsz, -1, 4]);
            let n = s.size()[1];
            let (s, idx) = if cfg.nms_pre > 0 && n > cfg.nms_pre as i64 {
                s.topk(cfg.nms_pre as i64, 1, true, true)
            } else {
                s.sort(1, true)
            };
            let k = s.size()[1];
            level_anchors.push(anchors[l].index_select(0, &idx.reshape([-1])).view([bsz, k, 4]));
            deltas.push(d.gather(1, &idx.unsqueeze(2).expand([bsz, k, 4], false), false));
            level_ids.push(Tensor::full([k], l as i64, (Kind::Float, dev)));
            lens.push(k);
            scores.push(s);
        }
        let scores = Tensor::cat(&scores, 1); // [B, K], descending within each level
        let kt = scores.size()[1];
        // 2. One decode for all images and levels, then the clip to each image.
        let boxes = self
            .coder
            .decode(
                &Tensor::cat(&level_anchors, 1).view([-1, 4]),
                &Tensor::cat(&deltas, 1).view([-1, 4]),
                None,
            )
            .view([bsz, kt, 4]);
        clip_per_image(&boxes, image_sizes);
        // 3. Min-size filter (a mask; the host applies it during the greedy scans).
        let valid = if cfg.min_bbox_size >= 0.0 {
            let w = boxes.select(2, 2) - boxes.select(2, 0);
            let h = boxes.select(2, 3) - boxes.select(2, 1);
            w.gt(cfg.min_bbox_size).logical_and(&h.gt(cfg.min_bbox_size))
        } else {
            Tensor::ones([bsz, kt], (Kind::Bool, dev))
        };
        // 4. The boxes `batched_nms` would compare: levels shifted apart when the image has at
        // most SPLIT_THR boxes left, else the boxes themselves.
        let nms_boxes = {
            let vb = valid.unsqueeze(2);
            let lo = boxes.where_scalarother(&vb, f64::INFINITY).amin([1, 2], false);
            let hi = boxes.where_scalarother(&vb, f64::NEG_INFINITY).amax([1, 2], false);
            let span = hi - &lo + 1.0;
            let ids = Tensor::cat(&level_ids, 0);
            let shifted = (&boxes - lo.view([bsz, 1, 1]))
                + (ids.unsqueeze(0) * span.unsqueeze(1)).unsqueeze(2);
            let small = valid.sum_dim_intlist(1, false, Kind::Int64).le(SPLIT_THR);
            shifted.where_self(&small.view([bsz, 1, 1]), &boxes)
        };
        // 5-6. Greedy NMS per (image, level) on the host. The score threshold applies after
        // the NMS (a box at or below it can only suppress boxes scored no higher, which it drops
        // too), so it only filters the kept positions (flat in [B * K], ascending per image).
        let above = cfg.score_thr.map(|t| scores.gt(t));
        let (keep_all, counts) = if dev == Device::Cpu {
            scan_on_host(&nms_boxes, &valid, above.as_ref(), &lens, cfg.nms_iou)
        } else {
            scan_packed_bits(&nms_boxes, &valid, above.as_ref(), &lens, cfg.nms_iou)
        };
        let keep_all = crate::transfers::upload(&Tensor::from_slice(&keep_all), dev);
        // 7. Per image: sorted by score (stable: ties in level, then rank order), top max_per_img.
        let flat_boxes = boxes.view([-1, 4]);
        let flat_scores = scores.view([-1]);
        let mut start = 0;
        counts
            .into_iter()
            .map(|c| {
                let keep = keep_all.narrow(0, start, c);
                start += c;
                let (_, o) = flat_scores.index_select(0, &keep).sort_stable(true, 0, true);
                let keep = keep.index_select(0, &o).narrow(0, 0, c.min(cfg.max_per_img as i64));
                Proposals {
                    boxes: flat_boxes.index_select(0, &keep),
                    scores: flat_scores.index_select(0, &keep),
                }
            })
            .collect()
    }

    /// `gt_inds` `[A]` of all `anchors` when only those inside the image of `(h, w)` grown by
    /// `allowed_border` are assigned; the others are ignored (-1). No host synchronisation.
    fn assign_inside(
        &self,
        anchors: &Tensor,
        gt: &Tensor,
        labels: &Tensor,
        (h, w): (i64, i64),
    ) -> Tensor {
        let b = self.cfg.allowed_border;
        let inside = anchors
            .select(1, 0)
            .ge(-b)
            .logical_and(&anchors.select(1, 1).ge(-b))
            .logical_and(&anchors.select(1, 2).lt(w as f64 + b))
            .logical_and(&anchors.select(1, 3).lt(h as f64 + b));
        self.assigner.assign_where(anchors, Some(&inside), gt, labels).gt_inds
    }

    /// RPN losses against `gt_boxes[b]` `[G_b, 4]` of images of unpadded sizes
    /// `image_sizes[b] = (h, w)` (mmdet: assign 0.7/0.3 with low-quality matches, sample 256 at
    /// 0.5, BCE over sampled anchors and box loss over positives, both divided by the number of
    /// sampled anchors of the batch, each image counting at least 1 positive and 1 negative).
    ///
    /// With `allowed_border >= 0` only the anchors inside the image grown by that margin are
    /// assigned (mmdet `anchor_inside_flags`: `x1, y1 >= -b`, `x2 < w + b`, `y2 < h + b`), so the
    /// low-quality matches too are drawn from them (masked on the device, no synchronisation).
    pub fn losses(
        &self,
        out: &RpnOutputs,
        gt_boxes: &[Tensor],
        image_sizes: &[(i64, i64)],
    ) -> RpnLosses {
        let anchors = Tensor::cat(&self.level_anchors(out), 0);
        let bsz = out.cls[0].size()[0];
        let cls: Vec<Tensor> =
            out.cls.iter().map(|c| c.permute([0, 2, 3, 1]).reshape([bsz, -1])).collect();
        let reg: Vec<Tensor> =
            out.reg.iter().map(|r| r.permute([0, 2, 3, 1]).reshape([bsz, -1, 4])).collect();
        let cls = Tensor::cat(&cls, 1);
        let reg = Tensor::cat(&reg, 1);
        let mut cls_pred = Vec::new();
        let mut cls_tgt = Vec::new();
        let mut reg_pred = Vec::new();
        let mut reg_tgt = Vec::new();
        let mut avg = 0f64;
        // Assign every image first, so that the sampler's candidate counts of the whole batch
        // come to the host in one copy (instead of two `nonzero` per image).
        let assigned: Vec<(Tensor, Tensor)> = {
            let _g = tch::no_grad_guard();
            gt_boxes
                .iter()
                .enumerate()
                .map(|(b, gt)| {
                    let gt = gt.to_kind(Kind::Float).to_device(anchors.device());
                    let labels = Tensor::zeros([gt.size()[0]], (Kind::Int64, anchors.device()));
                    let gt_inds = match image_sizes.get(b) {
                        Some(&size) if self.cfg.allowed_border >= 0.0 => {
                            self.assign_inside(&anchors, &gt, &labels, size)
                        }
                        _ => self.assigner.assign(&anchors, &gt, &labels).gt_inds,
                    };
                    (gt, gt_inds)
                })
                .collect()
        };
        let counts = host_counts(assigned.iter().map(|a| &a.1));
        for (b, (gt, gt_inds)) in assigned.iter().enumerate() {
            let (pos, neg, tgt) = {
                let _g = tch::no_grad_guard();
                let s = self.sampler.sample_counted(gt_inds, counts[b].0, counts[b].1);
                let pos_gt = (gt_inds.index_select(0, &s.pos_inds) - 1).clamp_min(0);
                let tgt = if s.pos_inds.size()[0] > 0 {
                    self.coder
                        .encode(&anchors.index_select(0, &s.pos_inds), &gt.index_select(0, &pos_gt))
                } else {
                    Tensor::zeros([0, 4], (Kind::Float, anchors.device()))
                };
                (s.pos_inds, s.neg_inds, tgt)
            };
            let (np, nn_) = (pos.size()[0], neg.size()[0]);
            avg += (np.max(1) + nn_.max(1)) as f64;
            let cb = cls.get(b as i64);
            cls_pred.push(cb.index_select(0, &pos));
            cls_pred.push(cb.index_select(0, &neg));
            cls_tgt.push(Tensor::ones([np], (Kind::Float, cls.device())));
            cls_tgt.push(Tensor::zeros([nn_], (Kind::Float, cls.device())));
            reg_pred.push(reg.get(b as i64).index_select(0, &pos));
            reg_tgt.push(tgt);
        }
        let cls_loss = bce_sum(&Tensor::cat(&cls_pred, 0), &Tensor::cat(&cls_tgt, 0), avg);
        let reg_loss = box_loss(
            self.cfg.loss_bbox,
            &Tensor::cat(&reg_pred, 0),
            &Tensor::cat(&reg_tgt, 0),
            avg,
        );
        RpnLosses { cls: cls_loss, reg: reg_loss }
    }
}

/// Kept positions of every (image, level) NMS of `nms_boxes` `[B, K, 4]` (levels of `lens`
/// boxes, masked by `valid`, filtered by `above`), and the count per image: packed overlap bits
/// computed on the device, one host copy, greedy scans on the host.
fn scan_packed_bits(
    nms_boxes: &Tensor,
    valid: &Tensor,
    above: Option<&Tensor>,
    lens: &[i64],
    iou: f64,
) -> (Vec<i64>, Vec<i64>) {
    let bsz = nms_boxes.size()[0];
    let kt = nms_boxes.size()[1] as usize;
    let mut payload = Vec::new();
    let mut off = 0;
    for &k in lens {
        if k > 0 {
            payload.push(overlap_bits(&nms_boxes.narrow(1, off, k), iou).view([bsz, -1]));
        }
        off += k;
    }
    payload.push(valid.to_kind(Kind::Int64));
    if let Some(a) = above {
        payload.push(a.to_kind(Kind::Int64));
    }
    let host =
        Vec::<i64>::try_from(crate::transfers::download(&Tensor::cat(&payload, 1)).reshape([-1]))
            .expect("overlap bits are int64");
    // Row of image b: the bits of every level, then `valid`, then `above`.
    let row = host.len() / bsz as usize;
    let tail = if above.is_some() { 2 * kt } else { kt };
    let mut word_at = vec![0usize];
    for &k in lens {
        word_at.push(word_at.last().copied().unwrap_or(0) + k as usize * (k as usize).div_ceil(64));
    }
    let r = |b: usize| &host[b * row..(b + 1) * row];
    let above_thr = |b: usize, i: usize| above.is_none() || r(b)[row - kt + i] != 0;
    kept_positions(bsz as usize, kt, lens, above_thr, |b, level, base, k| {
        let ok = &r(b)[row - tail..row - tail + kt];
        greedy_keep(&r(b)[word_at[level]..word_at[level + 1]], k, |i| ok[base + i] == 0)
    })
}

/// [`scan_packed_bits`] for CPU tensors: one copy of the boxes and masks, then greedy scans that
/// compute only the IoUs they need ([`greedy_scan_masked`]); the same kept positions.
fn scan_on_host(
    nms_boxes: &Tensor,
    valid: &Tensor,
    above: Option<&Tensor>,
    lens: &[i64],
    iou: f64,
) -> (Vec<i64>, Vec<i64>) {
    // Counted as the one download of the device path it stands for.
    crate::transfers::note_sync();
    let bsz = nms_boxes.size()[0] as usize;
    let kt = nms_boxes.size()[1] as usize;
    let boxes =
        Vec::<f32>::try_from(nms_boxes.to_kind(Kind::Float).reshape([-1])).expect("float32 boxes");
    let valid = Vec::<bool>::try_from(valid.reshape([-1])).expect("bool mask");
    let above = above.map(|a| Vec::<bool>::try_from(a.reshape([-1])).expect("bool mask"));
    let above_thr = |b: usize, i: usize| above.as_ref().is_none_or(|a| a[b * kt + i]);
    kept_positions(bsz, kt, lens, above_thr, |b, _, base, k| {
        let lo = b * kt + base;
        greedy_scan_masked(&boxes[lo * 4..(lo + k) * 4], iou, &valid[lo..lo + k])
    })
}

/// The loop both scans share: for every image `b` and level (`lens` boxes each, at `base` in the
/// image's `kt`), `scan(b, level, base, k)` gives the kept positions within the level; those with
/// `above(b, base + i)` become flat positions `b * kt + base + i`. Returns them (ascending per
/// image) and the count per image.
fn kept_positions(
    bsz: usize,
    kt: usize,
    lens: &[i64],
    above: impl Fn(usize, usize) -> bool,
    mut scan: impl FnMut(usize, usize, usize, usize) -> Vec<usize>,
) -> (Vec<i64>, Vec<i64>) {
    let mut keep_all: Vec<i64> = Vec::new();
    let mut counts = Vec::with_capacity(bsz);
    for b in 0..bsz {
        let before = keep_all.len();
        let mut base = 0usize;
        for (level, &k) in lens.iter().enumerate() {
            let k = k as usize;
            let kept = scan(b, level, base, k);
            keep_all.extend(
                kept.into_iter()
                    .filter(|&i| above(b, base + i))
                    .map(|i| (b * kt + base + i) as i64),
            );
            base += k;
        }
        counts.push((keep_all.len() - before) as i64);
    }
    (keep_all, counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    /// Random RPN outputs for `b` images of `side × side` (anchor strides 2–32).
    fn outputs(head: &RpnHead, b: i64, side: i64) -> RpnOutputs {
        let a = head.anchor_generator().num_base_anchors();
        let mut cls = Vec::new();
        let mut reg = Vec::new();
        for s in [2, 4, 8, 16, 32] {
            let n = side / s;
            // Rounded logits make equal scores (ties) common.
            cls.push((Tensor::randn([b, a, n, n], (Kind::Float, Device::Cpu)) * 3.0).round());
            reg.push(Tensor::randn([b, 4 * a, n, n], (Kind::Float, Device::Cpu)) * 0.5);
        }
        RpnOutputs { cls, reg }
    }

    #[test]
    fn the_host_scan_keeps_what_the_packed_bits_keep() {
        tch::manual_seed(5);
        let lens = [300i64, 0, 120, 7];
        let kt: i64 = lens.iter().sum();
        let xy = Tensor::rand([2, kt, 2], (Kind::Float, Device::Cpu)) * 200.0;
        let wh = Tensor::rand([2, kt, 2], (Kind::Float, Device::Cpu)) * 30.0;
        let boxes = Tensor::cat(&[&xy, &(&xy + wh)], 2);
        let valid = Tensor::rand([2, kt], (Kind::Float, Device::Cpu)).gt(0.1);
        let above = Tensor::rand([2, kt], (Kind::Float, Device::Cpu)).gt(0.3);
        for a in [None, Some(&above)] {
            for iou in [0.3, 0.7] {
                assert_eq!(
                    scan_on_host(&boxes, &valid, a, &lens, iou),
                    scan_packed_bits(&boxes, &valid, a, &lens, iou)
                );
            }
        }
    }

    /// The straightforward per-image algorithm (mmdet `_get_bboxes_single`) with
    /// [`crate::ops::nms::batched_nms`], as the reference.
    fn reference(
        head: &RpnHead,
        out: &RpnOutputs,
        b: i64,
        size: (i64, i64),
        cfg: &ProposalConfig,
    ) -> (Tensor, Tensor) {
        let anchors = head.level_anchors(out);
        let (mut boxes, mut scores, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for (l, (c, r)) in out.cls.iter().zip(&out.reg).enumerate() {
            let s = c.get(b).permute([1, 2, 0]).reshape([-1]).sigmoid();
            let d = r.get(b).permute([1, 2, 0]).reshape([-1, 4]);
            let n = s.size()[0];
            let (s, idx) = if cfg.nms_pre > 0 && n > cfg.nms_pre as i64 {
                s.topk(cfg.nms_pre as i64, 0, true, true)
            } else {
                s.sort(0, true)
            };
            let a = anchors[l].index_select(0, &idx);
            boxes.push(head.coder.decode(&a, &d.index_select(0, &idx), Some(size)));
            ids.push(Tensor::full([s.size()[0]], l as i64, (Kind::Int64, Device::Cpu)));
            scores.push(s);
        }
        let (mut boxes, mut scores, mut ids) =
            (Tensor::cat(&boxes, 0), Tensor::cat(&scores, 0), Tensor::cat(&ids, 0));
        if cfg.min_bbox_size >= 0.0 {
            let w = boxes.select(1, 2) - boxes.select(1, 0);
            let h = boxes.select(1, 3) - boxes.select(1, 1);
            let keep = w.gt(cfg.min_bbox_size).logical_and(&h.gt(cfg.min_bbox_size));
            let keep = keep.nonzero().view([-1]);
            boxes = boxes.index_select(0, &keep);
            scores = scores.index_select(0, &keep);
            ids = ids.index_select(0, &keep);
        }
        let mut keep = crate::ops::nms::batched_nms(&boxes, &scores, &ids, cfg.nms_iou);
        if let Some(t) = cfg.score_thr {
            let above = scores.index_select(0, &keep).gt(t).nonzero().view([-1]);
            keep = keep.index_select(0, &above);
        }
        let keep = keep.slice(0, 0, (cfg.max_per_img as i64).min(keep.size()[0]), 1);
        (boxes.index_select(0, &keep), scores.index_select(0, &keep))
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.reshape([-1])).unwrap()
    }

    /// Batched proposals equal the proposals of each image alone and the per-image reference
    /// with `batched_nms`, on both NMS paths (offset
    /// trick for few boxes, one NMS per level for many) and with the min-size filter.
    #[test]
    fn batch_equals_one_image_at_a_time() {
        tch::manual_seed(2);
        let vs = VarStore::new(Device::Cpu);
        let cfg = RpnConfig { in_channels: 4, feat_channels: 4, ..RpnConfig::default() };
        let head = RpnHead::new(&vs.root(), &cfg);
        for (nms_pre, min_size, score_thr) in
            [(100usize, 0.0, None), (2000, 2.0, None), (0, -1.0, None), (2000, 0.0, Some(0.6))]
        {
            let out = outputs(&head, 3, 64);
            let sizes = [(64, 64), (50, 61), (64, 40)];
            let pc = ProposalConfig {
                nms_pre,
                max_per_img: 300,
                nms_iou: 0.7,
                min_bbox_size: min_size,
                score_thr,
            };
            let all = head.proposals(&out, &sizes, &pc);
            for (b, &size) in sizes.iter().enumerate() {
                let one = RpnOutputs {
                    cls: out.cls.iter().map(|c| c.narrow(0, b as i64, 1)).collect(),
                    reg: out.reg.iter().map(|r| r.narrow(0, b as i64, 1)).collect(),
                };
                let single = head.proposals(&one, &[size], &pc);
                assert!(all[b].boxes.size()[0] > 0);
                assert_eq!(values(&all[b].boxes), values(&single[0].boxes), "{nms_pre} image {b}");
                assert_eq!(
                    values(&all[b].scores),
                    values(&single[0].scores),
                    "{nms_pre} image {b}"
                );
                let (rb, rs) = reference(&head, &out, b as i64, size, &pc);
                assert_eq!(values(&all[b].boxes), values(&rb), "{nms_pre} image {b} (reference)");
                assert_eq!(values(&all[b].scores), values(&rs), "{nms_pre} image {b} (reference)");
            }
        }
    }
}
