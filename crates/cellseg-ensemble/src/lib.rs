//! Multi-model, flip-TTA merging of proposals, boxes and masks.
//!
//! Needs libtorch (tch). Status: skeleton; lands after the heads (issue #7).
//!
//! # Example
//! ```no_run
//! let x = tch::Tensor::ones([2], (tch::Kind::Float, tch::Device::Cpu));
//! assert_eq!(x.size(), [2]);
//! ```
#![deny(missing_docs)]

pub mod error;

pub use error::{Error, Result};
