//! Post-processing of instance predictions: thresholds, NMS, small masks, astro re-corruption,
//! overlap removal, writers.
//!
//! Pure Rust, no libtorch. Status: skeleton; the pipeline lands with issue #4.
//!
//! # Example
//! ```
//! let d = cellseg_core::Detections::empty(cellseg_core::ImageSize::new(8, 8));
//! assert!(d.is_empty());
//! ```
#![deny(missing_docs)]

pub mod error;

pub use error::{Error, Result};
