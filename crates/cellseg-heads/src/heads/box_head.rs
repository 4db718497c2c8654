//! `Shared2FCBBoxHead` (mmdet `convfc_bbox_head.py`): flatten → fc → ReLU → fc → ReLU →
//! `fc_cls` (C+1, background last) and `fc_reg` (4C class-specific, or 4 class-agnostic as in
//! every Cascade / HTC stage), with the head's own box coder (per-stage stds), loss and decoding.
//!
//! # Checkpoint keys
//! `<path>.shared_fcs.{0,1}.{weight,bias}`, `.fc_cls.{weight,bias}`, `.fc_reg.{weight,bias}`, where
//! `<path>` is `roi_head.bbox_head` (Mask R-CNN) or `roi_head.bbox_head.{i}` (cascade stage i).
//! With [`ClassOrder::BackgroundFirst`] the two last layers have torchvision's layout
//! (`C+1` rows with background first, `4(C+1)` regression rows) and [`BoxHead::forward`] converts
//! their outputs to the canonical layout.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn, nn::Module};

use crate::assign::assigner::AssignerConfig;
use crate::assign::sampler::{SamplerConfig, positions};
use crate::ops::box_coder::{BoxCoder, BoxCoderConfig};
use crate::ops::losses::{BoxLoss, box_loss, ce_sum};
use crate::ops::roi_align::RoiAlignConfig;

/// Where the background class sits in the classifier output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassOrder {
    /// `[fg_0 … fg_{C-1}, bg]`, regression `4C` (mmdet).
    BackgroundLast,
    /// `[bg, fg_0 …]`, regression `4(C+1)` (torchvision); used only to load such weights.
    BackgroundFirst,
}

/// Box head (Shared2FC) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoxHeadConfig {
    /// RoI extractor (7×7).
    pub roi: RoiAlignConfig,
    /// Width of the two shared fcs.
    pub fc_channels: i64,
    /// Box coder (stds 0.1, 0.1, 0.2, 0.2; cascade stages 0.1/0.2, 0.05/0.1, 0.033/0.067).
    pub coder: BoxCoderConfig,
    /// One box per RoI for every class (`fc_reg` has 4 outputs; mmdet `reg_class_agnostic`,
    /// Cascade / HTC: true) instead of one per class (Mask R-CNN: false).
    pub reg_class_agnostic: bool,
    /// Assigner (0.5 / 0.5 / 0.5).
    pub assigner: AssignerConfig,
    /// Sampler (512 at 0.25, GT prepended).
    pub sampler: SamplerConfig,
    /// Regression loss (Mask R-CNN: L1; cascade stages: SmoothL1 β = 1).
    pub loss_bbox: BoxLoss,
    /// Weight of the classification loss (mmdet `loss_cls.loss_weight`, 1).
    pub loss_cls_weight: f64,
    /// Weight of the regression loss (mmdet `loss_bbox.loss_weight`, 1).
    pub loss_bbox_weight: f64,
    /// Class layout of `fc_cls` / `fc_reg`.
    pub class_order: ClassOrder,
}

impl Default for BoxHeadConfig {
    fn default() -> Self {
        Self {
            roi: RoiAlignConfig::default(),
            fc_channels: 1024,
            coder: BoxCoderConfig { stds: [0.1, 0.1, 0.2, 0.2], ..BoxCoderConfig::default() },
            assigner: AssignerConfig {
                pos_iou_thr: 0.5,
                neg_iou_thr: 0.5,
                min_pos_iou: 0.5,
                ..AssignerConfig::default()
            },
            sampler: SamplerConfig { num: 512, pos_fraction: 0.25, add_gt_as_proposals: true },
            reg_class_agnostic: false,
            loss_bbox: BoxLoss::L1,
            loss_cls_weight: 1.0,
            loss_bbox_weight: 1.0,
            class_order: ClassOrder::BackgroundLast,
        }
    }
}

/// Xavier-uniform init for a `fan_in → fan_out` layer.
pub(crate) fn xavier(fan_in: i64, fan_out: i64) -> nn::Init {
    let b = (6.0 / (fan_in + fan_out) as f64).sqrt();
    nn::Init::Uniform { lo: -b, up: b }
}

/// Class scores and deltas in the canonical layout.
#[derive(Debug)]
pub struct BoxPredictions {
    /// `[R, C + 1]` logits, background last.
    pub cls: Tensor,
    /// `[R, 4C]` deltas, class c in columns `4c..4c+4`; `[R, 4]` for a class-agnostic head.
    pub reg: Tensor,
}

/// The classification and regression losses of one box head.
#[derive(Debug)]
pub struct BoxLosses {
    /// `loss_cls`: softmax CE summed over the sampled RoIs / their number, times its weight.
    pub cls: Tensor,
    /// `loss_bbox`: regression of the positive rows summed / the number of sampled RoIs (mmdet's
    /// `avg_factor = bbox_targets.size(0)`), times its weight.
    pub reg: Tensor,
}

/// The box head.
#[derive(Debug)]
pub struct BoxHead {
    shared_fcs: Vec<nn::Linear>,
    fc_cls: nn::Linear,
    fc_reg: nn::Linear,
    coder: BoxCoder,
    cfg: BoxHeadConfig,
    num_classes: i64,
}

impl BoxHead {
    /// Builds the head under `p` for `in_channels`-channel RoI features and `num_classes` classes.
    pub fn new(p: &nn::Path, cfg: &BoxHeadConfig, in_channels: i64, num_classes: i64) -> Self {
        let s = cfg.roi.output_size;
        let fin = in_channels * s * s;
        let fc = cfg.fc_channels;
        let sp = p / "shared_fcs";
        let lin = |path: nn::Path, i: i64, o: i64, w: nn::Init| {
            nn::linear(
                path,
                i,
                o,
                nn::LinearConfig { ws_init: w, bs_init: Some(nn::Init::Const(0.0)), bias: true },
            )
        };
        let shared_fcs =
            vec![lin(&sp / 0, fin, fc, xavier(fin, fc)), lin(&sp / 1, fc, fc, xavier(fc, fc))];
        let reg_classes = if cfg.reg_class_agnostic { 1 } else { num_classes };
        let (nc, nr) = match cfg.class_order {
            ClassOrder::BackgroundLast => (num_classes + 1, 4 * reg_classes),
            ClassOrder::BackgroundFirst if cfg.reg_class_agnostic => (num_classes + 1, 4),
            ClassOrder::BackgroundFirst => (num_classes + 1, 4 * (num_classes + 1)),
        };
        Self {
            shared_fcs,
            fc_cls: lin(p / "fc_cls", fc, nc, nn::Init::Randn { mean: 0.0, stdev: 0.01 }),
            fc_reg: lin(p / "fc_reg", fc, nr, nn::Init::Randn { mean: 0.0, stdev: 0.001 }),
            coder: BoxCoder::new(&cfg.coder),
            cfg: cfg.clone(),
            num_classes,
        }
    }

    /// The head's settings.
    pub fn config(&self) -> &BoxHeadConfig {
        &self.cfg
    }

    /// The head's box coder.
    pub fn coder(&self) -> &BoxCoder {
        &self.coder
    }

    /// Scores and deltas of RoI features `[R, C_in, 7, 7]`.
    pub fn forward(&self, roi_feats: &Tensor) -> BoxPredictions {
        let mut x = roi_feats.flatten(1, -1);
        for fc in &self.shared_fcs {
            x = fc.forward(&x).relu();
        }
        let cls = self.fc_cls.forward(&x);
        let reg = self.fc_reg.forward(&x);
        match self.cfg.class_order {
            ClassOrder::BackgroundLast => BoxPredictions { cls, reg },
            ClassOrder::BackgroundFirst => {
                let k = cls.size()[1];
                let reg = if self.cfg.reg_class_agnostic { reg } else { reg.slice(1, 4, 4 * k, 1) };
                BoxPredictions {
                    cls: Tensor::cat(&[cls.slice(1, 1, k, 1), cls.slice(1, 0, 1, 1)], 1),
                    reg,
                }
            }
        }
    }

    /// The deltas `[R, 4]` of each row's class `labels` `[R]` (int64 in `0..C`; a class-agnostic
    /// head has one set of deltas and ignores the labels).
    pub fn class_deltas(&self, reg: &Tensor, labels: &Tensor) -> Tensor {
        if self.cfg.reg_class_agnostic {
            return reg.shallow_clone();
        }
        let idx = labels.clamp(0, self.num_classes - 1).view([-1, 1, 1]).expand([-1, 1, 4], false);
        reg.view([-1, self.num_classes, 4]).gather(1, &idx, false).squeeze_dim(1)
    }

    /// Boxes `[R, C, 4]` of every class decoded from `rois` `[R, 5]` and their deltas, each clipped
    /// to its image (`image_sizes[batch index] = (h, w)`); a class-agnostic head's one box is
    /// repeated for every class.
    pub fn decode(&self, rois: &Tensor, reg: &Tensor, image_sizes: &[(i64, i64)]) -> Tensor {
        let r = rois.size()[0];
        // Explicit sizes: `-1` is ambiguous when there are no RoIs (an image without proposals).
        let per_roi = reg.size()[1] / 4;
        let boxes = self.coder.decode(&rois.narrow(1, 1, 4), reg, None).view([r, per_roi, 4]);
        let boxes = clip_rows(&boxes, rois, image_sizes);
        if self.cfg.reg_class_agnostic {
            boxes.expand([r, self.num_classes, 4], false)
        } else {
            boxes
        }
    }

    /// mmdet `regress_by_class`: the RoIs `[R, 5]` moved by the deltas of `labels` `[R]`, clipped
    /// to their image, batch index kept (the refinement between cascade stages).
    pub fn refine(
        &self,
        rois: &Tensor,
        labels: &Tensor,
        reg: &Tensor,
        image_sizes: &[(i64, i64)],
    ) -> Tensor {
        let d = self.class_deltas(reg, labels);
        let r = rois.size()[0];
        let boxes = self.coder.decode(&rois.narrow(1, 1, 4), &d, None).view([r, 1, 4]);
        let boxes = clip_rows(&boxes, rois, image_sizes).view([r, 4]);
        Tensor::cat(&[rois.narrow(1, 0, 1), boxes], 1)
    }

    /// The losses of `pred` on sampled RoIs with `labels` `[R]` (background = C), the positive
    /// rows' `bbox_targets` `[P, 4]` (positive rows = the `is_pos` `[R]` entries, P of them).
    pub fn loss(
        &self,
        pred: &BoxPredictions,
        labels: &Tensor,
        is_pos: &Tensor,
        bbox_targets: &Tensor,
    ) -> BoxLosses {
        let r = labels.size()[0] as f64;
        let cls = ce_sum(&pred.cls, labels, r) * self.cfg.loss_cls_weight;
        let p = bbox_targets.size()[0];
        let reg = if p > 0 {
            // The positive rows ascending (= `nonzero`), without a host synchronisation.
            let pos = positions(is_pos, p);
            let d =
                self.class_deltas(&pred.reg.index_select(0, &pos), &labels.index_select(0, &pos));
            box_loss(self.cfg.loss_bbox, &d, bbox_targets, r)
        } else {
            pred.reg.sum(Kind::Float) * 0.0
        };
        BoxLosses { cls, reg: reg * self.cfg.loss_bbox_weight }
    }
}

/// `boxes` `[R, K, 4]` clipped to `[0, w] × [0, h]` of the image of each row of `rois` `[R, 5]`
/// (`image_sizes[b] = (h, w)`), with no host synchronisation; equal to a clamp per image.
pub fn clip_rows(boxes: &Tensor, rois: &Tensor, image_sizes: &[(i64, i64)]) -> Tensor {
    let dev = boxes.device();
    if image_sizes.is_empty() || boxes.size()[0] == 0 {
        return boxes.shallow_clone();
    }
    let (bounds_x, bounds_y) = if image_sizes.iter().all(|&s| s == image_sizes[0]) {
        let (h, w) = image_sizes[0];
        (
            Tensor::full([1, 1], w as f64, (Kind::Float, dev)),
            Tensor::full([1, 1], h as f64, (Kind::Float, dev)),
        )
    } else {
        let hw: Vec<f32> = image_sizes.iter().flat_map(|&(h, w)| [h as f32, w as f32]).collect();
        let hw = crate::transfers::upload(&Tensor::from_slice(&hw).view([-1, 2]), dev);
        let per = hw.index_select(0, &rois.select(1, 0).to_kind(Kind::Int64));
        (per.select(1, 1).unsqueeze(1), per.select(1, 0).unsqueeze(1))
    };
    let x = boxes.slice(2, 0, 4, 2).clamp_min(0.0).minimum(&bounds_x.unsqueeze(2));
    let y = boxes.slice(2, 1, 4, 2).clamp_min(0.0).minimum(&bounds_y.unsqueeze(2));
    Tensor::stack(&[x.select(2, 0), y.select(2, 0), x.select(2, 1), y.select(2, 1)], 2)
}
