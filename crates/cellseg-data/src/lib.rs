//! Dataset readers, folds, augmentations, a loader and synthetic cells for cell instance
//! segmentation. Pure Rust, no libtorch.
//!
//! # Overview
//! - Readers of the layouts exactly as distributed, each with strict errors that name the file and
//!   the row, or a lenient mode ([`skip::Strictness`]) that skips bad items with a logged reason:
//!   - [`sartorius`]: `train.csv` + `train/{id}.png` (row-major Kaggle RLE), cell types,
//!     plate / well / plate_well, the three wrong annotations, hole filling, corrected masks, `test/`.
//!   - [`livecell`] (on [`coco`]): COCO JSON polygons (and LIVECell's dict-shaped `annotations`),
//!     8 classes, LZW TIFFs.
//!   - [`dsb`]: DSB2018 column-major RLE CSV, and StarDist label images.
//! - [`folds`]: scikit-learn's `GroupKFold` exactly, and fold ids from a CSV.
//! - [`augment`]: random crop (mmdet `RandomCrop` + retry), flips (really applied; the seed's never
//!   ran), rot90, FlipPaste, brightness / contrast / gamma / blur / noise; TOML-configured.
//! - [`normalize`] and [`Batch`]: mmdet mean / std, RGB, `[B, 3, H, W]` f32 plus per-image
//!   [`cellseg_core::Instances`].
//! - [`Loader`]: seeded, rayon-parallel, prefetching epochs.
//! - [`synthetic`]: phase-contrast-like cells of the three types, in memory or written as the
//!   Sartorius and LIVECell layouts.
//!
//! # Features
//! - `ndarray` (off): `raster::Image::view` / `Image::from_array` as `[height, width, channels]`
//!   arrays (no copy where the layout allows), and cellseg-core's mask conversions.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use cellseg_data::sartorius::{SartoriusDataset, SartoriusOptions};
//! use cellseg_data::{synthetic, Augment, AugmentConfig, Loader, LoaderConfig};
//!
//! // Write a small synthetic copy of the competition layout and read it back.
//! let dir = tempfile::tempdir()?;
//! synthetic::generate_sartorius(dir.path(), 6, 0)?;
//! let train = SartoriusDataset::read(dir.path(), &SartoriusOptions::default())?;
//! assert_eq!(train.images.len(), 6);
//! let folds = train.group_kfold(3)?;
//!
//! // Augmented 256×256 crops in batches of 2.
//! let aug = Augment::new(AugmentConfig::default())?;
//! let cfg = LoaderConfig { batch_size: 2, ..LoaderConfig::default() };
//! let loader = Loader::new(Arc::new(train), Some(aug), cfg)?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(batch.shape, [2, 3, 256, 256]);
//!     assert!(batch.instances.iter().all(|i| !i.is_empty()));
//! }
//! # let _ = folds;
//! # Ok::<(), Box<dyn std::error::Error>>(())
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
pub use skip::{Skipped, Strictness};
