//! Post-processing of instance predictions, exactly as the seed solution does it, and fast.
//!
//! Pure Rust, no libtorch. Every step of the seed's `src/inference/post_process.py` (SEED.md §5) is
//! a function on box-cropped bitmaps ([`CroppedMask`](cellseg_core::CroppedMask)), and [`Pipeline`]
//! chains them with per-cell-type thresholds read from TOML ([`PostprocConfig`]).
//!
//! # Brief overview
//! - [`SoftMask`]: `floor(prob · 255)` bytes in a box; [`SoftMask::binarize`] keeps `byte > thr · 255`.
//! - [`nms::nms`] / [`nms::batched_nms`]: greedy box NMS (mmcv semantics, `IoU > thr` suppresses).
//! - [`mask_nms::suppress`]: greedy NMS on mask IoU; empty masks are dropped as in the seed.
//! - [`filter`]: confidence cut, [`filter::remove_small`] (real minimum area) and
//!   [`filter::remove_smallest_seed`] (the seed's "smallest mask only" rule).
//! - [`corrupt::corrupt`]: astro re-corruption, identical to OpenCV's `findContours(RETR_TREE,
//!   CHAIN_APPROX_SIMPLE)` + `fillConvexPoly` per contour ([`contours`], [`polygon`]);
//!   [`corrupt::fill_holes`]: `scipy.ndimage.binary_fill_holes`.
//! - [`overlap::resolve`]: each pixel goes to the most confident mask covering it.
//! - [`vote::majority_label`]: the seed's cell-type vote.
//! - [`LabelImage`], [`output::kaggle_rows`], [`output::write_kaggle_csv`],
//!   [`output::write_coco_results`].
//! - [`oof`]: out-of-fold predictions on disk (the detections before post-processing, per image
//!   id; a documented, versioned, checksummed binary format written atomically).
//! - [`tweak`]: the seed's threshold tweaking on OOF predictions (mask × NMS × size × confidence
//!   per predicted cell type), computed incrementally; [`tweak::TweakGrid`] from TOML.
//!
//! # Features
//! - `rayon` (default): [`Pipeline::run_batch`] and [`tweak::tweak`] process images in parallel.
//! - `ndarray` (off): `array`, zero-copy `ndarray` views of [`SoftMask`] and [`LabelImage`] and
//!   conversions from arrays (with cellseg-core's for bit masks). Off by default so that users of
//!   the post-processing alone do not build `ndarray`.
//!
//! # Example
//! ```
//! use cellseg_core::{BoxXyxy, ImageSize};
//! use cellseg_postproc::{Pipeline, PostprocConfig, SoftDetections, SoftMask};
//!
//! let size = ImageSize::new(16, 16);
//! let mask = |top, left| SoftMask::new(size, top, left, 4, 4, vec![200; 16]);
//! let input = SoftDetections {
//!     image_size: size,
//!     boxes: vec![BoxXyxy::new(0.0, 0.0, 4.0, 4.0), BoxXyxy::new(1.0, 0.0, 5.0, 4.0)],
//!     scores: vec![0.9, 0.8],
//!     labels: vec![2, 2], // cort
//!     masks: vec![mask(0, 0)?, mask(0, 1)?],
//! };
//! let config = PostprocConfig { min_size: [0; 3], ..PostprocConfig::default() };
//! let out = Pipeline::new(config)?.run("img0", &input)?;
//! assert_eq!(out.source_indices, vec![0]); // mask IoU 0.6 > 0.05: the second is suppressed
//! assert_eq!(cellseg_postproc::output::kaggle_rows(&out), vec!["img0,1 4 17 4 33 4 49 4"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

#[cfg(feature = "ndarray")]
pub mod array;
pub mod config;
pub mod contours;
pub mod corrupt;
pub mod error;
pub mod filter;
pub mod label_image;
pub mod mask_nms;
pub mod nms;
pub mod oof;
pub mod output;
pub mod overlap;
pub mod pipeline;
pub mod polygon;
pub mod soft_mask;
pub mod tweak;
pub mod vote;

pub use config::PostprocConfig;
pub use error::{Error, Result};
pub use filter::SmallMaskRule;
pub use label_image::LabelImage;
pub use pipeline::{Pipeline, Processed, SoftDetections};
pub use soft_mask::SoftMask;
