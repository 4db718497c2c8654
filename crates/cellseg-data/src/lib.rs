//! Dataset readers, folds, augmentations, loader and synthetic cells.
//!
//! Pure Rust, no libtorch.
//!
//! # Example
//! ```
//! let i = cellseg_core::Instances::empty(cellseg_core::ImageSize::new(256, 256));
//! assert_eq!(i.len(), 0);
//! ```
#![deny(missing_docs)]

pub mod augment;
pub mod batch;
pub mod coco;
mod csv;
pub mod dsb;
pub mod error;
pub mod fill_holes;
pub mod folds;
pub mod livecell;
pub mod loader;
pub mod normalize;
pub mod raster;
pub mod sample;
pub mod sartorius;
pub mod skip;
pub mod synthetic;
#[cfg(test)]
mod test_python;

pub use augment::{Augment, AugmentConfig};
pub use batch::Batch;
pub use error::{Error, Result};
pub use loader::{Loader, LoaderConfig};
pub use raster::Image;
pub use sample::{Sample, SampleSource};
