//! RPN and RoI heads, their ops (anchors, box coder, assigner, sampler, RoIAlign, NMS, mask paste)
//! and the Mask R-CNN detector, with mmdet 2.17 semantics (`REFERENCE.md` §1) and every difference
//! from torchvision as a config switch (§2), so that torchvision is the numerical oracle.
//!
//! - Ops: [`anchors`], [`box_coder`], [`assigner`] (chunked MaxIoU), [`sampler`],
//!   [`roi_align`] (tensor-only, differentiable, adaptive sampling), [`nms`], [`paste`].
//! - Heads: [`rpn`], [`box_head`], [`mask_head`], [`roi_heads`] (targets, losses, detection).
//! - Detector: [`MaskRcnn`], configured from TOML ([`MaskRcnnConfig`]).
//!
//! # Example
//! ```
//! use cellseg_heads::roi_align::roi_align;
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

pub mod anchors;
pub mod assigner;
pub mod box_coder;
pub mod box_head;
pub mod config;
pub mod convert;
pub mod error;
pub mod losses;
pub mod mask_head;
pub mod mask_rcnn;
pub mod mask_target;
pub mod nms;
pub mod paste;
pub mod roi_align;
pub mod roi_heads;
pub mod rpn;
pub mod sampler;

pub use config::HeadsConfig;
pub use error::{Error, Result};
pub use mask_rcnn::{Losses, MaskRcnn, MaskRcnnConfig};
