//! RPN head (mmdet `RPNHead`): 3×3 conv + ReLU, 1×1 objectness (sigmoid, one channel per anchor)
//! and 1×1 deltas; proposal generation and the RPN targets and losses.
//!
//! # Checkpoint keys
//! `rpn_head.rpn_conv.{weight,bias}`, `rpn_head.rpn_cls.{weight,bias}`, `rpn_head.rpn_reg.{weight,bias}`.

use tch::{Kind, Tensor, nn, nn::Module};

use crate::anchors::AnchorGenerator;
use crate::assigner::MaxIouAssigner;
use crate::box_coder::BoxCoder;
use crate::config::{ProposalConfig, RpnConfig};
use crate::losses::{bce_sum, box_loss};
use crate::nms::batched_nms;
use crate::sampler::RandomSampler;

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
        }
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

    /// Anchors of every level for `out` (`[H_l * W_l * A, 4]`).
    pub fn level_anchors(&self, out: &RpnOutputs) -> Vec<Tensor> {
        let sizes: Vec<(i64, i64)> = out.cls.iter().map(|c| (c.size()[2], c.size()[3])).collect();
        self.anchors.all_anchors(&sizes, out.cls[0].device())
    }

    /// Proposals of every image (mmdet `_get_bboxes_single`): per level the top `nms_pre` scores,
    /// decode + clip to `image_sizes[b] = (h, w)`, drop boxes with `w, h <= min_bbox_size`, NMS per
    /// level, keep `max_per_img`. The result carries no gradient.
    pub fn proposals(
        &self,
        out: &RpnOutputs,
        image_sizes: &[(i64, i64)],
        cfg: &ProposalConfig,
    ) -> Vec<Proposals> {
        let _guard = tch::no_grad_guard();
        let anchors = self.level_anchors(out);
        let dev = out.cls[0].device();
        (0..image_sizes.len())
            .map(|b| {
                let mut boxes = Vec::new();
                let mut scores = Vec::new();
                let mut ids = Vec::new();
                for (l, (c, r)) in out.cls.iter().zip(&out.reg).enumerate() {
                    let s = c.get(b as i64).permute([1, 2, 0]).reshape([-1]).sigmoid();
                    let d = r.get(b as i64).permute([1, 2, 0]).reshape([-1, 4]);
                    let n = s.size()[0];
                    let (s, idx) = if cfg.nms_pre > 0 && n > cfg.nms_pre as i64 {
                        s.topk(cfg.nms_pre as i64, 0, true, true)
                    } else {
                        let (v, i) = s.sort(0, true);
                        (v, i)
                    };
                    let a = anchors[l].index_select(0, &idx);
                    let d = d.index_select(0, &idx);
                    boxes.push(self.coder.decode(&a, &d, Some(image_sizes[b])));
                    ids.push(Tensor::full([s.size()[0]], l as i64, (Kind::Int64, dev)));
                    scores.push(s);
                }
                let mut boxes = Tensor::cat(&boxes, 0);
                let mut scores = Tensor::cat(&scores, 0);
                let mut ids = Tensor::cat(&ids, 0);
                if cfg.min_bbox_size >= 0.0 {
                    let w = boxes.select(1, 2) - boxes.select(1, 0);
                    let h = boxes.select(1, 3) - boxes.select(1, 1);
                    let keep = w
                        .gt(cfg.min_bbox_size)
                        .logical_and(&h.gt(cfg.min_bbox_size))
                        .nonzero()
                        .view([-1]);
                    boxes = boxes.index_select(0, &keep);
                    scores = scores.index_select(0, &keep);
                    ids = ids.index_select(0, &keep);
                }
                let keep = batched_nms(&boxes, &scores, &ids, cfg.nms_iou);
                let keep = keep.slice(0, 0, (cfg.max_per_img as i64).min(keep.size()[0]), 1);
                Proposals {
                    boxes: boxes.index_select(0, &keep),
                    scores: scores.index_select(0, &keep),
                }
            })
            .collect()
    }

    /// RPN losses against `gt_boxes[b]` `[G_b, 4]` (mmdet: assign 0.7/0.3 with low-quality matches,
    /// sample 256 at 0.5, BCE over sampled anchors and box loss over positives, both divided by the
    /// number of sampled anchors of the batch, each image counting at least 1 positive and 1 negative).
    pub fn losses(&self, out: &RpnOutputs, gt_boxes: &[Tensor]) -> RpnLosses {
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
        for (b, gt) in gt_boxes.iter().enumerate() {
            let (pos, neg, tgt) = {
                let _g = tch::no_grad_guard();
                let gt = gt.to_kind(Kind::Float).to_device(anchors.device());
                let labels = Tensor::zeros([gt.size()[0]], (Kind::Int64, anchors.device()));
                let res = self.assigner.assign(&anchors, &gt, &labels);
                let s = self.sampler.sample(&res.gt_inds);
                let pos_gt = (res.gt_inds.index_select(0, &s.pos_inds) - 1).clamp_min(0);
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
