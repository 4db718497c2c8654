//! TOML-facing configuration of the heads and of [`crate::MaskRcnn`].
//!
//! Defaults are the seed's Mask R-CNN (`configs/config_maskrcnn.py`, mmdet 2.17 semantics). Every
//! difference from torchvision is a named switch here, so that torchvision can serve as a numerical
//! oracle (`REFERENCE.md` §2): [`AnchorConfig::round_anchors`], [`RoiAlignConfig::aligned`] /
//! [`RoiAlignConfig::sampling_ratio`], [`BoxLoss`], [`ClassOrder`], [`DeltaClamp`].

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Anchor generator (mmdet `AnchorGenerator`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnchorConfig {
    /// One stride per RPN level, high → low resolution (seed: 2, 4, 8, 16, 32 with the stride-1 stem).
    pub strides: Vec<u32>,
    /// Anchor scales in units of the level stride (seed: `[8]`).
    pub scales: Vec<f64>,
    /// Aspect ratios h/w (seed: `[0.5, 1, 2]`).
    pub ratios: Vec<f64>,
    /// Round the base anchors to integers (torchvision: true; mmdet 2.x: false).
    pub round_anchors: bool,
}

impl Default for AnchorConfig {
    fn default() -> Self {
        Self {
            strides: vec![2, 4, 8, 16, 32], // seed: conv1 stride 1
            scales: vec![8.0],              // mmdet default
            ratios: vec![0.5, 1.0, 2.0],    // mmdet default
            round_anchors: false,           // mmdet 2.x
        }
    }
}

/// How `dw`, `dh` are clamped when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaClamp {
    /// Clamp to `±|log(16/1000)|` (mmdet `wh_ratio_clip`).
    BothSides,
    /// Clamp only from above at `log(1000/16)` (torchvision).
    MaxOnly,
}

/// Delta box coder (mmdet `DeltaXYWHBBoxCoder`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoxCoderConfig {
    /// Means subtracted from the deltas.
    pub means: [f64; 4],
    /// Stds dividing the deltas (torchvision's weights are `1/stds`).
    pub stds: [f64; 4],
    /// Clamp rule for `dw`, `dh`.
    pub clamp: DeltaClamp,
}

impl Default for BoxCoderConfig {
    fn default() -> Self {
        Self { means: [0.0; 4], stds: [1.0; 4], clamp: DeltaClamp::BothSides }
    }
}

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
}

impl Default for ProposalConfig {
    fn default() -> Self {
        Self { nms_pre: 2000, max_per_img: 1000, nms_iou: 0.7, min_bbox_size: 0.0 }
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
            loss_bbox: BoxLoss::L1,
            train_proposals: ProposalConfig::default(),
            test_proposals: ProposalConfig { nms_pre: 2000, ..ProposalConfig::default() },
        }
    }
}

/// RoIAlign settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoiAlignConfig {
    /// Output size P (P×P).
    pub output_size: i64,
    /// Samples per bin side; 0 = adaptive `ceil(roi/P)` (mmcv default).
    pub sampling_ratio: i64,
    /// Half-pixel alignment (mmcv: true; torchvision's MultiScaleRoIAlign: false).
    pub aligned: bool,
    /// `finest_scale` of the level mapper (56).
    pub finest_scale: f64,
    /// Strides of the pooled levels (seed: 2, 4, 8, 16).
    pub featmap_strides: Vec<u32>,
}

impl Default for RoiAlignConfig {
    fn default() -> Self {
        Self {
            output_size: 7,
            sampling_ratio: 0,
            aligned: true,
            finest_scale: 56.0,
            featmap_strides: vec![2, 4, 8, 16],
        }
    }
}

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
    /// Box coder (stds 0.1, 0.1, 0.2, 0.2).
    pub coder: BoxCoderConfig,
    /// Assigner (0.5 / 0.5 / 0.5).
    pub assigner: AssignerConfig,
    /// Sampler (512 at 0.25, GT prepended).
    pub sampler: SamplerConfig,
    /// Regression loss.
    pub loss_bbox: BoxLoss,
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
            loss_bbox: BoxLoss::L1,
            class_order: ClassOrder::BackgroundLast,
        }
    }
}

/// Mask head (FCN) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskHeadConfig {
    /// RoI extractor (14×14).
    pub roi: RoiAlignConfig,
    /// Number of 3×3 convs.
    pub num_convs: usize,
    /// Channels of the convs.
    pub conv_channels: i64,
    /// Side of the mask targets (28).
    pub mask_size: i64,
    /// Binarise the mask targets at 0.5 (mmdet: true; torchvision: false).
    pub binarize_targets: bool,
    /// Align the RoIAlign of the mask targets (mmdet: true; torchvision: false).
    pub aligned_targets: bool,
}

impl Default for MaskHeadConfig {
    fn default() -> Self {
        Self {
            roi: RoiAlignConfig { output_size: 14, ..RoiAlignConfig::default() },
            num_convs: 4,
            conv_channels: 256,
            mask_size: 28,
            binarize_targets: true,
            aligned_targets: true,
        }
    }
}

/// Test-time settings of the RoI heads (seed `test_cfg.rcnn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RcnnTestConfig {
    /// Keep class scores `> score_thr`.
    pub score_thr: f64,
    /// Per-class NMS IoU.
    pub nms_iou: f64,
    /// Detections per image.
    pub max_per_img: usize,
    /// Binarisation threshold of pasted masks (the seed's -1 means soft masks; here any value `< 0`
    /// is taken as 0.5 when a binary mask must be produced).
    pub mask_thr_binary: f64,
    /// Drop detections whose box is not larger than this in both sides (torchvision: 1e-2; mmdet: none = -1).
    pub min_bbox_size: f64,
}

impl Default for RcnnTestConfig {
    fn default() -> Self {
        Self {
            score_thr: 0.25,
            nms_iou: 0.3,
            max_per_img: 1000,
            mask_thr_binary: 0.5,
            min_bbox_size: -1.0,
        }
    }
}

/// The heads of a Mask R-CNN (everything above the FPN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadsConfig {
    /// Foreground classes (background index = `num_classes`).
    pub num_classes: i64,
    /// RPN.
    pub rpn: RpnConfig,
    /// Box head.
    pub bbox_head: BoxHeadConfig,
    /// Mask head.
    pub mask_head: MaskHeadConfig,
    /// Test settings.
    pub test: RcnnTestConfig,
}

impl Default for HeadsConfig {
    fn default() -> Self {
        Self {
            num_classes: 8, // seed: LIVECell classes
            rpn: RpnConfig::default(),
            bbox_head: BoxHeadConfig::default(),
            mask_head: MaskHeadConfig::default(),
            test: RcnnTestConfig::default(),
        }
    }
}

impl HeadsConfig {
    /// Checks the semantic constraints once (thresholds in `[0, 1]`, non-empty lists, …).
    ///
    /// # Errors
    /// [`Error::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Config { key: key.to_string(), reason: why });
        if self.num_classes < 1 {
            return bad("num_classes", format!("must be >= 1, got {}", self.num_classes));
        }
        let a = &self.rpn.anchors;
        if a.strides.is_empty() || a.scales.is_empty() || a.ratios.is_empty() {
            return bad("rpn.anchors", "strides, scales and ratios must be non-empty".into());
        }
        if a.ratios.iter().chain(&a.scales).any(|&v| v.is_nan() || v <= 0.0) {
            return bad("rpn.anchors", "scales and ratios must be > 0".into());
        }
        for (key, roi) in
            [("bbox_head.roi", &self.bbox_head.roi), ("mask_head.roi", &self.mask_head.roi)]
        {
            if roi.output_size < 1 || roi.sampling_ratio < 0 || roi.featmap_strides.is_empty() {
                return bad(key, format!("invalid RoIAlign settings {roi:?}"));
            }
        }
        for (key, asg) in
            [("rpn.assigner", &self.rpn.assigner), ("bbox_head.assigner", &self.bbox_head.assigner)]
        {
            for v in [asg.pos_iou_thr, asg.neg_iou_thr, asg.min_pos_iou] {
                if !(0.0..=1.0).contains(&v) {
                    return bad(key, format!("IoU thresholds must lie in [0, 1], got {v}"));
                }
            }
        }
        for (key, s) in
            [("rpn.sampler", &self.rpn.sampler), ("bbox_head.sampler", &self.bbox_head.sampler)]
        {
            if s.num == 0 || !(0.0..=1.0).contains(&s.pos_fraction) {
                return bad(key, format!("num must be > 0 and pos_fraction in [0, 1]: {s:?}"));
            }
        }
        if self.mask_head.mask_size != 2 * self.mask_head.roi.output_size {
            return bad(
                "mask_head.mask_size",
                format!(
                    "must be twice mask_head.roi.output_size ({}), got {}",
                    self.mask_head.roi.output_size, self.mask_head.mask_size
                ),
            );
        }
        Ok(())
    }
}
