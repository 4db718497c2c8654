//! The shared vocabulary of cellseg: the types every other crate speaks.
//!
//! Pure Rust: this crate never depends on libtorch and builds in seconds.
//!
//! # Brief overview
//! - [`ImageSize`]: height × width in pixels.
//! - [`BoxXyxy`]: one box in continuous pixel coordinates, width = `x2 - x1` (no `+1`, mmdet 2.x).
//! - [`BitMask`]: a full-image binary mask, row-major; [`CroppedMask`]: a binary mask stored only
//!   inside its bounding box, which is how cellseg keeps hundreds of instances per image cheap.
//! - [`Instances`] (ground truth) and [`Detections`] (predictions).
//! - [`CellType`] (Sartorius: shsy5y=0, astro=1, cort=2) and [`LivecellClass`] (8 classes).
//! - [`config::load_toml`]: strict TOML loading with errors that name the file and the key.
//!
//! # Features
//! - `ndarray` (off): [`array`], zero-copy `ndarray` views of [`BitMask`] and [`CroppedMask`] and
//!   conversions from `ndarray` arrays (the buffer is reused when the layout allows).
//! - `testing` (off): `testing`, the helpers that parity tests of every crate use to find the
//!   repository, the real data and the Python of `.venv`.
//!
//! # Example
//! ```
//! use cellseg_core::{BitMask, BoxXyxy, ImageSize};
//!
//! let size = ImageSize::new(4, 5);
//! let mut mask = BitMask::zeros(size);
//! mask.set(1, 2, true);
//! mask.set(2, 3, true);
//! assert_eq!(mask.area(), 2);
//! assert_eq!(mask.bbox(), Some(BoxXyxy::new(2.0, 1.0, 4.0, 3.0)));
//! let cropped = mask.to_cropped();
//! assert_eq!(cropped.to_full(), mask);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

#[cfg(feature = "ndarray")]
pub mod array;
pub mod boxes;
pub mod cell_type;
pub mod config;
pub mod error;
pub mod exit;
pub mod instances;
pub mod masks;
#[cfg(feature = "testing")]
pub mod testing;

pub use boxes::BoxXyxy;
pub use cell_type::{CellType, LivecellClass};
pub use error::{Error, Result};
pub use instances::{Detections, Instances};
pub use masks::{BitMask, CroppedMask, ImageSize};
