//! Dataset readers, folds, augmentations, loader and synthetic cells.
//!
//! Pure Rust, no libtorch. Status: skeleton; the readers land with issue #5.
//!
//! # Example
//! ```
//! let i = cellseg_core::Instances::empty(cellseg_core::ImageSize::new(256, 256));
//! assert_eq!(i.len(), 0);
//! ```
#![deny(missing_docs)]

pub mod error;

pub use error::{Error, Result};
