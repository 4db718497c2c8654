//! `ndarray` interop (feature `ndarray`): soft masks as `[rows, cols]` arrays of bytes
//! `floor(prob · 255)`, label images as `[rows, cols]` arrays of `u32`.
//!
//! Views borrow (no copy); conversions from owned arrays reuse the buffer in standard layout
//! (see [`cellseg_core::array`]). With [`LabelImage::instance_masks`] a label image from another
//! tool feeds the metric and the tweak.
//!
//! ```
//! use cellseg_core::ImageSize;
//! use cellseg_postproc::{LabelImage, SoftMask};
//! use ndarray::{Array2, arr2};
//!
//! let probs = arr2(&[[0.9f32, 0.2], [0.5, 1.0]]);
//! let soft = SoftMask::from_probability_view(ImageSize::new(8, 8), 3, 4, probs.view())?;
//! assert_eq!(soft.view(), arr2(&[[229u8, 51], [127, 255]]));
//! assert_eq!(soft.binarize(0.45)?.area(), 3);
//!
//! let labels = LabelImage::from_array(arr2(&[[0u32, 1, 1], [2, 2, 0]]));
//! assert_eq!(labels.view()[[1, 0]], 2);
//! let masks = labels.instance_masks();
//! assert_eq!((masks.len(), masks[0].area(), masks[1].area()), (2, 2, 2));
//! # let _ = Array2::<u8>::zeros((1, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use cellseg_core::ImageSize;
use cellseg_core::array::into_row_major;
use ndarray::{Array2, ArrayView2};

use crate::{LabelImage, Result, SoftMask};

impl SoftMask {
    /// The stored rectangle as a `[height, width]` view of bytes (no copy); its place in the
    /// image is [`SoftMask::rect`].
    pub fn view(&self) -> ArrayView2<'_, u8> {
        let (_, _, h, w) = self.rect();
        ArrayView2::from_shape((h, w), self.as_slice()).expect("buffer matches rectangle")
    }

    /// A soft mask of an `image_size` image from the bytes of its rectangle at `(top, left)`;
    /// the buffer is reused in standard layout.
    ///
    /// # Errors
    /// [`crate::Error::SoftMaskShape`] when the rectangle leaves the image.
    pub fn from_array(
        image_size: ImageSize,
        top: usize,
        left: usize,
        a: Array2<u8>,
    ) -> Result<Self> {
        let (h, w) = a.dim();
        Self::new(image_size, top, left, h, w, into_row_major(a))
    }

    /// A soft mask from probabilities (any layout), stored as the seed does (see
    /// [`SoftMask::from_probabilities`]).
    ///
    /// # Errors
    /// As [`SoftMask::from_array`].
    pub fn from_probability_view(
        image_size: ImageSize,
        top: usize,
        left: usize,
        probs: ArrayView2<'_, f32>,
    ) -> Result<Self> {
        let (h, w) = probs.dim();
        let flat: Vec<f32> = probs.iter().copied().collect();
        Self::from_probabilities(image_size, top, left, h, w, &flat)
    }
}

impl LabelImage {
    /// The labels as a `[height, width]` view (no copy).
    pub fn view(&self) -> ArrayView2<'_, u32> {
        let s = self.size();
        ArrayView2::from_shape((s.height, s.width), self.as_slice()).expect("buffer matches size")
    }

    /// A label image from a `[height, width]` array (0 = background); the buffer is reused in
    /// standard layout.
    pub fn from_array(a: Array2<u32>) -> Self {
        let (h, w) = a.dim();
        Self::from_vec(ImageSize::new(h, w), into_row_major(a)).expect("one label per pixel")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_borrow_and_arrays_round_trip() {
        let a = Array2::from_shape_fn((2, 3), |(r, c)| (r * 3 + c) as u8 * 40);
        let owned = a.clone();
        let ptr = owned.as_ptr();
        let m = SoftMask::from_array(ImageSize::new(4, 4), 1, 1, owned).unwrap();
        assert_eq!(m.as_slice().as_ptr(), ptr);
        assert_eq!(m.view(), a);
        assert!(SoftMask::from_array(ImageSize::new(2, 2), 1, 1, a).is_err());
        let l = Array2::from_shape_fn((3, 2), |(r, _)| r as u32).reversed_axes();
        let img = LabelImage::from_array(l.clone());
        assert_eq!(img.view(), l);
        assert_eq!(img.max_label(), 2);
    }
}
