//! `ndarray` interop (feature `ndarray`): masks as 2-D arrays `[rows, cols]` of 0/1 bytes.
//!
//! Views borrow the mask's buffer (no copy). Conversions from an owned [`Array2`] reuse its buffer
//! when it is in standard (row-major, contiguous) layout and only copy otherwise; values are
//! normalised to 0/1 in place. Conversions from views always copy (a mask owns its pixels).
//!
//! ```
//! use cellseg_core::{BitMask, CroppedMask, ImageSize};
//! use ndarray::Array2;
//!
//! let a = Array2::from_shape_fn((4, 5), |(r, c)| if (1..3).contains(&r) && (2..4).contains(&c) { 255 } else { 0 });
//! let mask = BitMask::from_array(a)?; // reuses the array's buffer
//! assert_eq!(mask.area(), 4);
//! assert_eq!(mask.view().sum(), 4);
//! let cropped = mask.to_cropped();
//! assert_eq!(cropped.view().dim(), (2, 2));
//! let back = CroppedMask::from_array(ImageSize::new(4, 5), 1, 2, cropped.view().to_owned())?;
//! assert_eq!(back, cropped);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ndarray::{Array2, ArrayView2};

use crate::{BitMask, CroppedMask, ImageSize, Result};

/// The row-major buffer of `a`, without a copy when its layout allows (also used by the crates
/// above for their own array types).
pub fn into_row_major<T: Clone>(a: Array2<T>) -> Vec<T> {
    if a.is_standard_layout() {
        let n = a.len();
        let (mut v, offset) = a.into_raw_vec_and_offset();
        let offset = offset.unwrap_or(0);
        if offset == 0 {
            // The buffer may extend past the array (a sliced array): drop the tail, no copy.
            v.truncate(n);
            return v;
        }
        // A standard-layout array that starts inside its buffer: copy the elements it sees.
        return v[offset..offset + n].to_vec();
    }
    a.iter().cloned().collect()
}

impl BitMask {
    /// The mask as a `[height, width]` view of 0/1 bytes (no copy).
    pub fn view(&self) -> ArrayView2<'_, u8> {
        let s = self.size();
        ArrayView2::from_shape((s.height, s.width), self.as_slice()).expect("buffer matches size")
    }

    /// A mask from a `[height, width]` array; every non-zero value counts as set. The buffer is
    /// reused when the array is in standard layout.
    ///
    /// # Errors
    /// Never for a well-formed array (the shape gives the size); the `Result` mirrors
    /// [`BitMask::from_vec`].
    pub fn from_array(a: Array2<u8>) -> Result<Self> {
        let (h, w) = a.dim();
        Self::from_vec(ImageSize::new(h, w), into_row_major(a))
    }

    /// A mask from a `[height, width]` view of booleans (copied).
    pub fn from_bool_view(a: ArrayView2<'_, bool>) -> Self {
        let (h, w) = a.dim();
        Self::from_vec(ImageSize::new(h, w), a.iter().map(|&v| u8::from(v)).collect())
            .expect("one value per pixel")
    }
}

impl CroppedMask {
    /// The stored rectangle as a `[height, width]` view of 0/1 bytes (no copy); the rectangle's
    /// place in the image is [`CroppedMask::rect`].
    pub fn view(&self) -> ArrayView2<'_, u8> {
        let (_, _, h, w) = self.rect();
        ArrayView2::from_shape((h, w), self.as_slice()).expect("buffer matches rectangle")
    }

    /// A mask of an `image_size` image from the `[height, width]` array of its rectangle at
    /// `(top, left)`; non-zero values count as set. The buffer is reused in standard layout.
    ///
    /// # Errors
    /// [`crate::Error::BufferSize`] when the rectangle leaves the image.
    pub fn from_array(
        image_size: ImageSize,
        top: usize,
        left: usize,
        a: Array2<u8>,
    ) -> Result<Self> {
        let (h, w) = a.dim();
        Self::new(image_size, top, left, h, w, into_row_major(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Axis, Slice};

    #[test]
    fn views_borrow_and_owned_arrays_are_reused() {
        let a = Array2::from_shape_fn((3, 4), |(r, c)| u8::from((r + c) % 2 == 0) * 7);
        let ptr = a.as_ptr();
        let m = BitMask::from_array(a).unwrap();
        assert_eq!(m.as_slice().as_ptr(), ptr, "standard layout: no copy");
        assert_eq!(m.view().as_ptr(), m.as_slice().as_ptr());
        assert_eq!(m.view()[[0, 0]], 1);
        // A transposed (column-major) array is copied in row-major order.
        let t = Array2::from_shape_fn((4, 3), |(r, c)| u8::from(r == 0 && c == 2)).reversed_axes();
        let m = BitMask::from_array(t).unwrap();
        assert_eq!(m.size(), ImageSize::new(3, 4));
        assert!(m.get(2, 0) && m.area() == 1);
        // A sliced array that does not start at its buffer's start.
        let big = Array2::from_shape_fn((4, 4), |(r, c)| (r * 4 + c) as u8);
        let mut part = big;
        part.slice_axis_inplace(Axis(0), Slice::from(2..));
        assert_eq!(BitMask::from_array(part).unwrap().area(), 8);
        let mut head = Array2::from_shape_fn((4, 4), |(r, _)| u8::from(r == 0));
        head.slice_axis_inplace(Axis(0), Slice::from(..2));
        let m = BitMask::from_array(head).unwrap();
        assert_eq!((m.size(), m.area()), (ImageSize::new(2, 4), 4));
        let b = ndarray::arr2(&[[true, false], [false, true]]);
        assert_eq!(BitMask::from_bool_view(b.view()).area(), 2);
        let e = CroppedMask::from_array(ImageSize::new(2, 2), 1, 1, Array2::zeros((2, 2)));
        assert!(e.is_err());
    }
}
