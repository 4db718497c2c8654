//! The training engine: optimizers, schedules, checkpoints, validation, observers.
//!
//! Needs libtorch (tch). Status: skeleton; lands with issue #8.
//!
//! # Example
//! ```no_run
//! let x = tch::Tensor::ones([2], (tch::Kind::Float, tch::Device::Cpu));
//! assert_eq!(x.size(), [2]);
//! ```
#![deny(missing_docs)]

pub mod error;

pub use error::{Error, Result};
