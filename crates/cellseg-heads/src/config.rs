//! [`HeadsConfig`]: the composition of the component configs of a detector's heads (RPN, box
//! head, mask head, test settings, and the cascade stages and HTC branches). Each component's config lives next to the component and is
//! re-exported here, so that a TOML file's tables can be looked up in one place.
//!
//! Defaults are the seed's Mask R-CNN (`configs/config_maskrcnn.py`, mmdet 2.17 semantics). Every
//! difference from torchvision is a named switch here, so that torchvision can serve as a numerical
//! oracle (`REFERENCE.md` §2): [`AnchorConfig::round_anchors`], [`RoiAlignConfig::aligned`] /
//! [`RoiAlignConfig::sampling_ratio`], [`BoxLoss`], [`ClassOrder`], [`DeltaClamp`].

use serde::{Deserialize, Serialize};

pub use crate::assign::assigner::AssignerConfig;
pub use crate::assign::sampler::SamplerConfig;
pub use crate::heads::box_head::{BoxHeadConfig, ClassOrder};
pub use crate::heads::mask_head::MaskHeadConfig;
pub use crate::heads::rpn::{ProposalConfig, RpnConfig};
pub use crate::heads::semantic_head::SemanticHeadConfig;
pub use crate::ops::anchors::AnchorConfig;
pub use crate::ops::box_coder::{BoxCoderConfig, DeltaClamp};
pub use crate::ops::losses::BoxLoss;
pub use crate::ops::roi_align::RoiAlignConfig;
pub use crate::roi_heads::RcnnTestConfig;
pub use crate::roi_heads::cascade::{CascadeConfig, CascadeStageConfig, HtcConfig};
use crate::{Error, Result};

/// The heads of a detector (everything above the FPN). `cascade` is read by `arch = "cascade"`
/// and `"htc"`, `htc` by `"htc"` only; Mask R-CNN ignores both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadsConfig {
    /// Foreground classes (background index = `num_classes`).
    pub num_classes: i64,
    /// RPN.
    pub rpn: RpnConfig,
    /// Box head (a cascade: every stage's, with the stage's stds and IoU from `cascade`).
    pub bbox_head: BoxHeadConfig,
    /// Mask head (a cascade: every stage's).
    pub mask_head: MaskHeadConfig,
    /// Test settings.
    pub test: RcnnTestConfig,
    /// The cascade stages (Cascade Mask R-CNN and HTC).
    pub cascade: CascadeConfig,
    /// HTC's semantic head, fusion, interleaving and mask information flow.
    pub htc: HtcConfig,
}

impl Default for HeadsConfig {
    fn default() -> Self {
        Self {
            num_classes: 8, // seed: LIVECell classes
            rpn: RpnConfig::default(),
            bbox_head: BoxHeadConfig::default(),
            mask_head: MaskHeadConfig::default(),
            test: RcnnTestConfig::default(),
            cascade: CascadeConfig::default(),
            htc: HtcConfig::default(),
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
        // checked: a fuzzed output_size near usize::MAX overflowed `2 * output_size` (a panic).
        if self.mask_head.roi.output_size.checked_mul(2) != Some(self.mask_head.mask_size) {
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

    /// Checks the cascade stages and, with `htc`, the HTC settings (called for
    /// `arch = "cascade" | "htc"`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the key.
    pub fn validate_cascade(&self, htc: bool) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Config { key: key.to_string(), reason: why });
        if self.cascade.stages.is_empty() {
            return bad("cascade.stages", "a cascade needs at least one stage".into());
        }
        for (i, st) in self.cascade.stages.iter().enumerate() {
            if !(0.0..=1.0).contains(&st.iou_thr) {
                return bad(
                    &format!("cascade.stages[{i}].iou_thr"),
                    format!("must lie in [0, 1], got {}", st.iou_thr),
                );
            }
            if st.stds.iter().any(|&v| v.is_nan() || v <= 0.0) {
                return bad(
                    &format!("cascade.stages[{i}].stds"),
                    format!("must be > 0, got {:?}", st.stds),
                );
            }
            if !st.loss_weight.is_finite() || st.loss_weight < 0.0 {
                return bad(
                    &format!("cascade.stages[{i}].loss_weight"),
                    format!("must be finite and >= 0, got {}", st.loss_weight),
                );
            }
        }
        if !htc {
            return Ok(());
        }
        let sem = &self.htc.semantic_head;
        if sem.roi.featmap_strides.len() != 1 || sem.roi.output_size < 1 {
            return bad(
                "htc.semantic_head.roi",
                format!("one stride (the fusion level's) and output_size >= 1: {:?}", sem.roi),
            );
        }
        if sem.num_classes < 2 {
            return bad(
                "htc.semantic_head.num_classes",
                format!("the target is binary, so >= 2, got {}", sem.num_classes),
            );
        }
        if !(0..=255).contains(&sem.ignore_index) {
            return bad(
                "htc.semantic_head.ignore_index",
                format!("must lie in 0..=255 (the target is a byte map), got {}", sem.ignore_index),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `cellseg-train`'s `fuzz_detector_toml`: a huge `output_size` overflowed the
    /// `2 * output_size` of the mask-size check (a panic in debug builds).
    #[test]
    fn a_huge_roi_output_size_is_an_error_naming_the_key() {
        let mut cfg = HeadsConfig::default();
        cfg.mask_head.roi.output_size = i64::MAX;
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().contains("mask_head.mask_size"), "{err}");
        assert!(HeadsConfig::default().validate().is_ok());
    }
}
