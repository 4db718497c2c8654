//! Run-length encodings of binary masks: Kaggle, DSB2018 column-major and COCO (pycocotools-exact).
//!
//! Pure Rust, no libtorch. Status: skeleton; the encoders land with issue #3.
//!
//! # Example
//! ```
//! let size = cellseg_core::ImageSize::new(520, 704);
//! assert_eq!(size.pixels(), 366_080);
//! ```
#![deny(missing_docs)]

pub mod error;

pub use error::{Error, Result};
