//! The Sartorius competition metric and pycocotools-exact COCO evaluation.
//!
//! Pure Rust, no libtorch. Status: skeleton; the metrics land with issue #3.
//!
//! # Example
//! ```
//! let t: Vec<f64> = (0..10).map(|i| 0.5 + 0.05 * i as f64).collect();
//! assert_eq!(t.len(), 10);
//! ```
#![deny(missing_docs)]

pub mod error;

pub use error::{Error, Result};
