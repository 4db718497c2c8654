//! Run-length encodings of binary masks: Kaggle, DSB2018 column-major and COCO (pycocotools-exact).
//!
//! Pure Rust, no libtorch.
//!
//! # Brief overview
//! - [`kaggle`]: the Sartorius/Kaggle `"start length …"` strings, 1-based, **row-major**
//!   ([`KaggleRle`], [`kaggle::encode`], [`kaggle::decode`]).
//! - [`dsb`]: the same syntax, **column-major**, as in the DSB2018 solution CSV ([`DsbRle`]).
//! - [`coco`]: COCO RLE exactly as pycocotools: uncompressed and compressed `counts`, polygons,
//!   boxes, area, `toBbox`, merge, IoU with `iscrowd` ([`CocoRle`]).
//! - [`batch`]: many COCO masks of one image as runs in one buffer, with areas and bounds, for fast
//!   pairwise intersections and IoU matrices ([`batch::CocoBatch`], used by [`coco::iou_matrix`]
//!   and the competition metric).
//!
//! The three orders are three types, so a row-major string can never be read as a column-major
//! one by accident. All of them convert to and from [`cellseg_core::BitMask`] and
//! [`cellseg_core::CroppedMask`]; the cropped conversions visit only the mask's rectangle.
//! Bad input is a typed [`Error`] naming the token, run, byte or polygon; nothing panics.
//!
//! # Example
//! ```
//! use cellseg_core::ImageSize;
//! use cellseg_rle::{CocoRle, KaggleRle};
//!
//! let size = ImageSize::new(520, 704);
//! let k = KaggleRle::parse("1000 5 1704 5", size)?;
//! let coco = CocoRle::from_kaggle(&k);
//! assert_eq!(coco.area(), 10);
//! assert_eq!(coco.to_kaggle().to_string(), "1000 5 1704 5");
//! assert_eq!(k.iou(&k)?, 1.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod batch;
pub mod coco;
pub mod dsb;
pub mod error;
pub mod kaggle;
pub mod overlap;
mod run_length;
pub mod runs;

pub use coco::CocoRle;
pub use dsb::DsbRle;
pub use error::{Error, Result};
pub use kaggle::KaggleRle;
pub use runs::Run;

#[cfg(test)]
mod proptests;
