//! The Sartorius competition metric and pycocotools-exact COCO evaluation.
//!
//! Pure Rust, no libtorch.
//!
//! # Brief overview
//! - [`competition`]: the competition metric (mean over IoU thresholds 0.50:0.05:0.95 of
//!   TP/(TP+FP+FN), match when IoU > t), per image, mean over images, per cell type; IoUs on RLE
//!   runs or cropped masks ([`competition::IouMatrix`]); [`competition::score_coco_strs`] scores
//!   compressed COCO strings without intersecting pairs that cannot reach IoU 0.5, and
//!   [`competition::score_all`] spreads images over rayon's threads (feature `rayon`, default).
//! - [`cocoeval`]: `COCOeval` (bbox and segm) with pycocotools' numbers, configurable `maxDets`.
//! - [`coco_dataset`]: COCO ground-truth and result files, read as pycocotools reads them.
//! - [`report`]: file-level evaluation (`train.csv` truth vs `id,predicted` submission; COCO jsons),
//!   used by the `evaluate` example.
//! - [`csv`]: a small RFC 4180 reader that reports row numbers.
//!
//! # Example
//! ```
//! use cellseg_core::ImageSize;
//! use cellseg_metrics::competition::{IouMatrix, image_score};
//! use cellseg_rle::KaggleRle;
//!
//! let size = ImageSize::new(520, 704);
//! let cells = [KaggleRle::parse("1000 5 1704 5", size)?, KaggleRle::parse("9000 3", size)?];
//! let s = image_score(&IouMatrix::from_kaggle(&cells, &cells)?);
//! assert_eq!(s.score, 1.0);
//! let none: [KaggleRle; 0] = [];
//! assert_eq!(image_score(&IouMatrix::from_kaggle(&cells, &none)?).score, 0.0);
//!
//! // Many images at once, on all cores; the scores come back in image order.
//! let images = [(cells.to_vec(), cells.to_vec()), (cells.to_vec(), vec![])];
//! let scores = cellseg_metrics::competition::score_all(&images, |(t, p)| {
//!     Ok(image_score(&IouMatrix::from_kaggle(t, p)?))
//! })?;
//! assert_eq!(cellseg_metrics::competition::mean_score(&scores), Some(0.5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod coco_dataset;
pub mod cocoeval;
pub mod competition;
pub mod csv;
pub mod error;
pub mod report;

pub use error::{Error, Result};
