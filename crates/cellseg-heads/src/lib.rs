//! RPN and RoI heads, their ops (anchors, box coder, RoIAlign, NMS, paste) and the detectors.
//!
//! Needs libtorch (tch). Status: skeleton; the heads land with issue #7.
//!
//! # Example
//! ```no_run
//! let x = tch::Tensor::zeros([4], (tch::Kind::Float, tch::Device::Cpu));
//! assert_eq!(x.size(), [4]);
//! ```
#![deny(missing_docs)]

pub mod error;

pub use error::{Error, Result};
