//! Cascade RoI head (mmdet `CascadeRoIHead`, `REFERENCE.md` §1.10) and, with an [`HtcConfig`],
//! the Hybrid Task Cascade's (`HybridTaskCascadeRoIHead`, §1.11): a sequence of [`RoiStage`]s,
//! each trained on the boxes the previous stage refined.
//!
//! - **Training**, stage i: assign and sample the current proposals with the stage's IoU, run the
//!   box head, weight its losses by the stage's `loss_weight`; train the mask head on the
//!   stage's positives (HTC interleaved: on the positives of the *refined* boxes, re-assigned and
//!   re-sampled with the same stage's assigner); then refine the sampled boxes with the stage's
//!   deltas (`regress_by_class` with the training labels, background rows taking
//!   `argmax(cls[:, :-1])`), drop the GT-added rows, and hand them to stage i + 1.
//! - **Test**: the stages run in sequence on the proposals, each refining the boxes for the next
//!   with `argmax(cls[:, :-1])`; the class scores are the softmax of the stages' **mean raw
//!   logits**, the boxes the last stage's deltas on its input RoIs. Masks: every stage's mask head
//!   on the final boxes (HTC: chained through the mask information flow), sigmoid, **mean over
//!   the stages**.
//! - **HTC** adds the fused semantic head ([`FusedSemanticHead`]) whose `semantic_feat` is
//!   RoIAligned (14×14) and added to the mask RoI features and, average-pooled to 7×7, to the box
//!   RoI features.
//!
//! # Checkpoint keys
//! `roi_head.bbox_head.{i}.*`, `roi_head.mask_head.{i}.*` (HTC: `conv_res` from stage 1 on),
//! `roi_head.semantic_head.*`.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::assign::roi_sampler::{BatchTargets, SampledRois};
use crate::config::HeadsConfig;
use crate::detectors::BoxScores;
use crate::heads::box_head::{BoxHeadConfig, BoxPredictions};
use crate::heads::mask_head::{MaskHead, select_class};
use crate::heads::semantic_head::{
    FusedSemanticHead, SemanticHeadConfig, SemanticOutput, semantic_targets,
};
use crate::ops::roi_align::RoiExtractor;
use crate::roi_heads::stage::RoiStage;
use crate::{Error, Result};

/// The settings of one cascade stage that differ between stages; everything else comes from
/// `[heads.bbox_head]` and `[heads.mask_head]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeStageConfig {
    /// IoU threshold of the stage's assigner: `pos_iou_thr = neg_iou_thr = min_pos_iou` (seed
    /// 0.5 / 0.6 / 0.7).
    pub iou_thr: f64,
    /// Box coder stds of the stage (seed `[0.1, 0.1, 0.2, 0.2]`, `[0.05, 0.05, 0.1, 0.1]`,
    /// `[0.033, 0.033, 0.067, 0.067]`).
    pub stds: [f64; 4],
    /// Weight of the stage's box and mask losses (mmdet `stage_loss_weights`, seed 1 / 0.5 / 0.25).
    pub loss_weight: f64,
}

/// The stages of a Cascade Mask R-CNN or an HTC (seed `config_cascade.py`, `config_htc.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CascadeConfig {
    /// One entry per stage (default: the seed's three).
    pub stages: Vec<CascadeStageConfig>,
    /// Low-quality matches in the stages' assigners (seed Cascade: false; seed HTC leaves mmdet's
    /// default, true).
    pub match_low_quality: bool,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        let stage = |iou_thr, stds, loss_weight| CascadeStageConfig { iou_thr, stds, loss_weight };
        Self {
            stages: vec![
                stage(0.5, [0.1, 0.1, 0.2, 0.2], 1.0),
                stage(0.6, [0.05, 0.05, 0.1, 0.1], 0.5),
                stage(0.7, [0.033, 0.033, 0.067, 0.067], 0.25),
            ],
            match_low_quality: false,
        }
    }
}

impl CascadeConfig {
    /// The box head settings of stage `i`: `base` with the stage's stds and IoU thresholds.
    pub fn stage_box_head(&self, base: &BoxHeadConfig, i: usize) -> BoxHeadConfig {
        let s = &self.stages[i];
        let mut b = base.clone();
        b.coder.stds = s.stds;
        b.assigner.pos_iou_thr = s.iou_thr;
        b.assigner.neg_iou_thr = s.iou_thr;
        b.assigner.min_pos_iou = s.iou_thr;
        b.assigner.match_low_quality = self.match_low_quality;
        b
    }
}

/// What HTC adds to the cascade (seed `config_htc.py`; mmdet's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HtcConfig {
    /// Train each mask head on the boxes its stage refined (true).
    pub interleaved: bool,
    /// Chain the mask heads' features from stage to stage (true).
    pub mask_info_flow: bool,
    /// Add the semantic features to the box RoI features (mmdet `semantic_fusion` has `bbox`).
    pub fuse_bbox: bool,
    /// Add the semantic features to the mask RoI features (`semantic_fusion` has `mask`).
    pub fuse_mask: bool,
    /// The fused semantic head.
    pub semantic_head: SemanticHeadConfig,
}

impl Default for HtcConfig {
    fn default() -> Self {
        Self {
            interleaved: true,
            mask_info_flow: true,
            fuse_bbox: true,
            fuse_mask: true,
            semantic_head: SemanticHeadConfig::default(),
        }
    }
}

/// The box branch of every stage at test time on one set of RoIs.
#[derive(Debug)]
pub struct StageBoxes {
    /// `[R, 5]` RoIs each stage ran on (the input RoIs, then the refined ones).
    pub rois: Vec<Tensor>,
    /// Each stage's logits and deltas on its RoIs.
    pub preds: Vec<BoxPredictions>,
    /// `[R, C + 1]` mean of the stages' raw logits.
    pub mean_logits: Tensor,
}

/// The two RoI branches of a stage.
#[derive(Debug, Clone, Copy)]
enum Branch {
    Box,
    Mask,
}

/// The cascade (or HTC) RoI head.
#[derive(Debug)]
pub struct CascadeRoiHead {
    stages: Vec<RoiStage>,
    stage_loss_weights: Vec<f64>,
    semantic_head: Option<FusedSemanticHead>,
    semantic_roi_extractor: Option<RoiExtractor>,
    htc: Option<HtcConfig>,
    num_classes: i64,
}

impl CascadeRoiHead {
    /// Builds the stages of `heads.cascade` under `p` (`roi_head`), and with `htc` the semantic
    /// head and the mask heads' `conv_res`, for `num_levels` FPN levels of `in_channels` channels.
    pub fn new(
        p: &nn::Path,
        heads: &HeadsConfig,
        htc: Option<&HtcConfig>,
        in_channels: i64,
        num_levels: usize,
    ) -> Self {
        let flow = htc.is_some_and(|h| h.mask_info_flow);
        let stages = (0..heads.cascade.stages.len())
            .map(|i| {
                RoiStage::new(
                    &(p / "bbox_head" / i),
                    &(p / "mask_head" / i),
                    &heads.cascade.stage_box_head(&heads.bbox_head, i),
                    &heads.mask_head,
                    in_channels,
                    heads.num_classes,
                    flow && i > 0,
                )
            })
            .collect();
        let semantic_head = htc.map(|h| {
            FusedSemanticHead::new(
                &(p / "semantic_head"),
                &h.semantic_head,
                num_levels,
                in_channels,
            )
        });
        Self {
            stages,
            stage_loss_weights: heads.cascade.stages.iter().map(|s| s.loss_weight).collect(),
            semantic_roi_extractor: htc.map(|h| RoiExtractor::new(&h.semantic_head.roi)),
            semantic_head,
            htc: htc.cloned(),
            num_classes: heads.num_classes,
        }
    }

    /// Number of stages.
    pub fn num_stages(&self) -> usize {
        self.stages.len()
    }

    /// Stage `i`.
    pub fn stage(&self, i: usize) -> &RoiStage {
        &self.stages[i]
    }

    /// HTC's semantic head (`None` for a plain cascade).
    pub fn semantic_head(&self) -> Option<&FusedSemanticHead> {
        self.semantic_head.as_ref()
    }

    /// The semantic head's logits and features of the FPN levels (`None` for a plain cascade).
    pub fn semantic(&self, levels: &[Tensor]) -> Option<SemanticOutput> {
        self.semantic_head.as_ref().map(|h| h.forward(levels))
    }

    /// Stage `i`'s RoI features of `rois` `[R, 5]` for `branch` (7×7 box / 14×14 mask
    /// features), plus HTC's `semantic_feat` RoIAligned to the same RoIs (14×14, average-pooled
    /// to the branch's size when it differs) where HTC fuses it into that branch.
    fn roi_features(
        &self,
        i: usize,
        branch: Branch,
        levels: &[Tensor],
        semantic: Option<&Tensor>,
        rois: &Tensor,
    ) -> Tensor {
        let stage = &self.stages[i];
        let (f, fused) = match branch {
            Branch::Box => {
                (stage.box_roi_features(levels, rois), self.htc.as_ref().map(|h| h.fuse_bbox))
            }
            Branch::Mask => {
                (stage.mask_roi_features(levels, rois), self.htc.as_ref().map(|h| h.fuse_mask))
            }
        };
        let (Some(true), Some(ex), Some(sem)) =
            (fused, self.semantic_roi_extractor.as_ref(), semantic)
        else {
            return f;
        };
        let s = ex.forward(std::slice::from_ref(sem), rois);
        let p = [f.size()[2], f.size()[3]];
        if s.size()[2..] == p { f + s } else { f + s.adaptive_avg_pool2d(p) }
    }

    fn mask_info_flow(&self) -> bool {
        self.htc.as_ref().is_some_and(|h| h.mask_info_flow)
    }

    /// Stage `i`'s class logits and deltas of `rois` `[R, 5]` (`semantic`: HTC's
    /// `semantic_feat`).
    pub fn box_forward(
        &self,
        i: usize,
        levels: &[Tensor],
        semantic: Option<&Tensor>,
        rois: &Tensor,
    ) -> BoxPredictions {
        self.stages[i].bbox_head().forward(&self.roi_features(
            i,
            Branch::Box,
            levels,
            semantic,
            rois,
        ))
    }

    /// Stage `i`'s mask logits `[R, C, M, M]` of `rois`: HTC runs the heads `0..i` first to chain
    /// their features (the mask information flow).
    pub fn mask_logits(
        &self,
        i: usize,
        levels: &[Tensor],
        semantic: Option<&Tensor>,
        rois: &Tensor,
    ) -> Tensor {
        let feats = self.roi_features(i, Branch::Mask, levels, semantic, rois);
        if !self.mask_info_flow() {
            return self.stages[i].mask_head().forward(&feats);
        }
        let mut last: Option<Tensor> = None;
        for s in &self.stages[..i] {
            last = Some(s.mask_head().conv_features(&feats, last.as_ref()));
        }
        self.stages[i].mask_head().forward_flow(&feats, last.as_ref()).logits
    }

    /// The test-time box stages on `rois` `[R, 5]`: each stage runs on the boxes the previous one
    /// refined with `argmax(cls[:, :-1])`, clipped to `image_sizes[batch index]`.
    pub fn stage_boxes(
        &self,
        levels: &[Tensor],
        semantic: Option<&Tensor>,
        rois: &Tensor,
        image_sizes: &[(i64, i64)],
    ) -> StageBoxes {
        let c = self.num_classes;
        let mut stage_rois = vec![rois.shallow_clone()];
        let mut preds: Vec<BoxPredictions> = Vec::with_capacity(self.stages.len());
        let mut sum: Option<Tensor> = None;
        for (i, stage) in self.stages.iter().enumerate() {
            let r = &stage_rois[i];
            let pred = self.box_forward(i, levels, semantic, r);
            sum = Some(match sum {
                None => pred.cls.shallow_clone(),
                Some(s) => s + &pred.cls,
            });
            if i + 1 < self.stages.len() {
                let labels = pred.cls.narrow(1, 0, c).argmax(1, false);
                stage_rois.push(stage.bbox_head().refine(r, &labels, &pred.reg, image_sizes));
            }
            preds.push(pred);
        }
        let n = self.stages.len().max(1) as f64;
        let mean_logits = match sum {
            Some(s) => s / n,
            None => Tensor::zeros([rois.size()[0], c + 1], (Kind::Float, rois.device())),
        };
        StageBoxes { rois: stage_rois, preds, mean_logits }
    }

    /// Class probabilities (softmax of the stages' mean logits) and the last stage's decoded boxes
    /// of `rois` `[R, 5]`.
    pub fn box_scores(
        &self,
        levels: &[Tensor],
        semantic: Option<&Tensor>,
        rois: &Tensor,
        image_sizes: &[(i64, i64)],
    ) -> BoxScores {
        let s = self.stage_boxes(levels, semantic, rois, image_sizes);
        let last = self.stages.len() - 1;
        BoxScores {
            scores: s.mean_logits.softmax(-1, Kind::Float),
            boxes: self.stages[last].bbox_head().decode(
                &s.rois[last],
                &s.preds[last].reg,
                image_sizes,
            ),
        }
    }

    /// Every stage's mask probabilities `[K, M, M]` of `rois` `[K, 5]` for the classes `labels`
    /// `[K]`: the mask features of the last stage's extractor (+ HTC's semantic features), each
    /// mask head in turn (HTC: chained through `res_feat`), sigmoid of the label's channel.
    pub fn stage_mask_probs(
        &self,
        levels: &[Tensor],
        semantic: Option<&Tensor>,
        rois: &Tensor,
        labels: &Tensor,
    ) -> Vec<Tensor> {
        let last_stage = self.stages.len() - 1;
        let feats = self.roi_features(last_stage, Branch::Mask, levels, semantic, rois);
        let flow = self.mask_info_flow();
        let mut last: Option<Tensor> = None;
        self.stages
            .iter()
            .map(|s| {
                let out = if flow {
                    s.mask_head().forward_flow(&feats, last.as_ref())
                } else {
                    s.mask_head().forward_with_features(&feats)
                };
                let probs = select_class(&out.logits, labels).sigmoid();
                if flow {
                    last = Some(out.features);
                }
                probs
            })
            .collect()
    }

    /// The mean of [`Self::stage_mask_probs`] (mmdet `merge_aug_masks`).
    pub fn mask_probs(
        &self,
        levels: &[Tensor],
        semantic: Option<&Tensor>,
        rois: &Tensor,
        labels: &Tensor,
    ) -> Tensor {
        let probs = self.stage_mask_probs(levels, semantic, rois, labels);
        let n = probs.len() as f64;
        let mut it = probs.into_iter();
        let first = it.next().expect("a cascade has at least one stage (validated)");
        it.fold(first, |acc, p| acc + p) / n
    }

    /// The proposals of the next stage: `sampled`'s RoIs moved by stage `i`'s `pred` deltas for the
    /// training labels (background rows: `argmax(cls[:, :-1])`), without the GT-added rows.
    fn refine_sampled(
        &self,
        i: usize,
        sampled: &SampledRois,
        pred: &BoxPredictions,
        image_sizes: &[(i64, i64)],
    ) -> Vec<Tensor> {
        let _g = tch::no_grad_guard();
        let c = self.num_classes;
        let cls = pred.cls.detach();
        let labels =
            sampled.labels.where_self(&sampled.labels.ne(c), &cls.narrow(1, 0, c).argmax(1, false));
        let refined = self.stages[i].bbox_head().refine(
            &sampled.rois,
            &labels,
            &pred.reg.detach(),
            image_sizes,
        );
        sampled.next_stage_proposals(&refined)
    }

    /// Stage `i`'s mask loss on the positives of `sampled` (zero, in the graph, without any).
    fn mask_loss(
        &self,
        i: usize,
        levels: &[Tensor],
        semantic: Option<&Tensor>,
        sampled: &SampledRois,
    ) -> Tensor {
        if sampled.pos_rois.size()[0] == 0 {
            return levels[0].sum(Kind::Float) * 0.0;
        }
        let logits = self.mask_logits(i, levels, semantic, &sampled.pos_rois);
        MaskHead::loss(&logits, &sampled.pos_labels, &sampled.mask_targets)
    }

    /// The RoI head's training losses in mmdet's names — `loss_semantic_seg` (HTC), then
    /// `s{i}.loss_cls`, `s{i}.loss_bbox`, `s{i}.loss_mask` per stage, each times the stage's
    /// weight — for `proposals[b]` `[N_b, 4]` (detached) against `targets[b]` in a batch padded to
    /// `canvas` `(H, W)`; `semantic` is HTC's semantic head output on `levels`.
    ///
    /// # Errors
    /// HTC: [`Error::Shape`] when the semantic map and its target disagree in size.
    #[allow(clippy::too_many_arguments)]
    pub fn losses(
        &self,
        levels: &[Tensor],
        semantic: Option<&SemanticOutput>,
        proposals: Vec<Tensor>,
        targets: &BatchTargets<'_>,
        canvas: (i64, i64),
        image_sizes: &[(i64, i64)],
    ) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        if let (Some(head), Some(sem)) = (&self.semantic_head, semantic) {
            let cfg = head.config();
            let stride = i64::from(cfg.roi.featmap_strides[0]);
            let tgt = semantic_targets(
                targets.instances(),
                canvas,
                stride,
                cfg.ignore_index,
                targets.device(),
            );
            let l = &sem.logits;
            if tgt.size()[1..] != l.size()[2..] || tgt.size()[0] != l.size()[0] {
                return Err(Error::Shape {
                    what: "semantic target vs semantic logits",
                    expected: format!("[B, H, W] of logits {:?}", l.size()),
                    got: tgt.size(),
                });
            }
            out.push(("loss_semantic_seg".to_string(), head.loss(l, &tgt)));
        }
        let sem_feat = semantic.map(|s| &s.features);
        let interleaved = self.htc.as_ref().is_some_and(|h| h.interleaved);
        let mut props = proposals;
        let n = self.stages.len();
        for (i, stage) in self.stages.iter().enumerate() {
            let lw = self.stage_loss_weights[i];
            let sampled = if interleaved {
                stage.sample_boxes(&props, targets, canvas)
            } else {
                stage.sample(&props, targets, canvas)
            };
            let pred = self.box_forward(i, levels, sem_feat, &sampled.rois);
            let b = stage.box_loss(&pred, &sampled);
            out.push((format!("s{i}.loss_cls"), b.cls * lw));
            out.push((format!("s{i}.loss_bbox"), b.reg * lw));
            if interleaved {
                // HTC: the mask head learns on the refined boxes, re-sampled by this stage.
                props = self.refine_sampled(i, &sampled, &pred, image_sizes);
                let resampled = stage.sample(&props, targets, canvas);
                out.push((
                    format!("s{i}.loss_mask"),
                    self.mask_loss(i, levels, sem_feat, &resampled) * lw,
                ));
            } else {
                out.push((
                    format!("s{i}.loss_mask"),
                    self.mask_loss(i, levels, sem_feat, &sampled) * lw,
                ));
                if i + 1 < n {
                    props = self.refine_sampled(i, &sampled, &pred, image_sizes);
                }
            }
        }
        Ok(out)
    }
}
