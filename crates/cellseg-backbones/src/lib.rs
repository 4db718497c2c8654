//! ResNet / ResNeXt / EfficientNet trunks and FPN, with PyTorch state_dict names.
//!
//! Needs libtorch (tch). Status: skeleton; the backbones land with issue #6.
//!
//! # Example
//! ```no_run
//! let x = tch::Tensor::zeros([1, 3, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
//! assert_eq!(x.size(), [1, 3, 8, 8]);
//! ```
#![deny(missing_docs)]

pub mod error;

pub use error::{Error, Result};
