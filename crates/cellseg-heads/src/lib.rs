//! RPN and RoI heads, their ops and training targets, and the detectors assembled from them, with
//! mmdet 2.17 semantics (`REFERENCE.md` §1) and every difference from torchvision as a config
//! switch (§2). Real mmdet 2.17 and torchvision are the numerical oracles.
//!
//! Laid out like mmdet's `models/` (a reader of the seed finds each counterpart by name), each
//! component owning its config:
//! - [`ops`]: anchors, box coder, RoIAlign + RoI extractor, NMS, mask paste, loss primitives.
//! - [`assign`]: MaxIoU assigner (chunked), random sampler, mask targets, the per-stage
//!   [`assign::roi_sampler::RoiSampler`] (GT-added rows remembered).
//! - [`heads`]: RPN head, box head (class-specific or class-agnostic), mask head (with HTC's
//!   `conv_res`), HTC's fused semantic head.
//! - [`roi_heads`]: one [`roi_heads::stage::RoiStage`], the standard head, the cascade / HTC
//!   head, `multiclass_nms`.
//! - [`detectors`]: the [`TwoStageDetector`] interface, [`DetectorConfig`] (`arch`), [`MaskRcnn`],
//!   [`CascadeRcnn`] (Cascade Mask R-CNN and HTC).
//!
//! # Example
//! ```
//! use cellseg_heads::ops::roi_align::roi_align;
//! use tch::{Device, Kind, Tensor};
//!
//! let feats = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([1, 1, 4, 4]);
//! // (batch, x1, y1, x2, y2) in input pixels; the map has stride 1 here.
//! let rois = Tensor::from_slice(&[0f32, 0.0, 0.0, 4.0, 4.0]).view([1, 5]);
//! let out = roi_align(&feats, &rois, 2, 1.0, 0, true);
//! assert_eq!(out.size(), [1, 1, 2, 2]);
//! // The top-left bin averages pixels (0..2, 0..2): (0 + 1 + 4 + 5) / 4.
//! assert!((f64::try_from(out.view([-1]).get(0)).unwrap() - 2.5).abs() < 1e-6);
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod assign;
pub mod config;
pub mod convert;
// `mallopt`, through libc: its only unsafe call.
#[allow(unsafe_code)]
pub mod cpu_memory;
pub mod detectors;
pub mod error;
pub mod heads;
pub mod init;
pub mod libtorch;
pub mod ops;
pub mod roi_heads;
pub mod transfers;

pub use config::HeadsConfig;
pub use detectors::cascade::CascadeRcnn;
pub use detectors::mask_rcnn::MaskRcnn;
pub use detectors::{Arch, BoxScores, DetectorConfig, Features, Losses, Trunk, TwoStageDetector};
pub use error::{Error, Result};
