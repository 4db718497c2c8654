//! Soft (probability) masks pasted into their box, and their binarisation.
//!
//! The seed pastes each 28×28 mask probability into its box and stores it as `uint8 =
//! floor(prob · 255)` (`get_seg_masks` with `mask_thr_binary=-1`); post-processing then keeps the
//! pixels where that byte is `> thr · 255` (SEED.md §5 step 2, §9 item 8). [`SoftMask`] holds those
//! bytes inside a rectangle of the image, like [`CroppedMask`] holds bits.

use cellseg_core::{CroppedMask, ImageSize};

use crate::{Error, Result, error::check_range};

/// A soft mask: `floor(prob · 255)` bytes inside the rectangle `[top, top+height) × [left,
/// left+width)` of a `image_size` image; pixels outside the rectangle are 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SoftMask {
    image_size: ImageSize,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    data: Vec<u8>,
}

impl SoftMask {
    /// A soft mask from its rectangle and row-major bytes.
    ///
    /// # Errors
    /// [`Error::SoftMaskShape`] when `data.len() != height * width` or the rectangle leaves the image.
    pub fn new(
        image_size: ImageSize,
        top: usize,
        left: usize,
        height: usize,
        width: usize,
        data: Vec<u8>,
    ) -> Result<Self> {
        let fits = top.checked_add(height).is_some_and(|b| b <= image_size.height)
            && left.checked_add(width).is_some_and(|r| r <= image_size.width);
        if !fits || height.checked_mul(width) != Some(data.len()) {
            return Err(Error::SoftMaskShape {
                rect: [top, left, height, width],
                expected: height.saturating_mul(width),
                got: data.len(),
                image_h: image_size.height,
                image_w: image_size.width,
            });
        }
        Ok(Self { image_size, top, left, height, width, data })
    }

    /// A soft mask from probabilities, stored as the seed does: `floor(p · 255)` after clamping
    /// to `[0, 1]`; NaN becomes 0.
    ///
    /// # Errors
    /// As [`SoftMask::new`].
    pub fn from_probabilities(
        image_size: ImageSize,
        top: usize,
        left: usize,
        height: usize,
        width: usize,
        probs: &[f32],
    ) -> Result<Self> {
        // `as u8` saturates and maps NaN to 0; the clamp keeps `p > 1` at 255 like torch's uint8 cast
        // of a clamped paste.
        let data = probs.iter().map(|&p| (p.clamp(0.0, 1.0) * 255.0).floor() as u8).collect();
        Self::new(image_size, top, left, height, width, data)
    }

    /// A soft mask from a full-frame byte array (`image_size` row-major, 0 = background, e.g.
    /// the seed's `uint8 [520, 704]` masks), stored in the tight rectangle of its non-zero bytes.
    ///
    /// # Errors
    /// [`Error::SoftMaskShape`] when `bytes` does not hold `image_size` pixels.
    pub fn from_full_frame(image_size: ImageSize, bytes: &[u8]) -> Result<Self> {
        Self::from_window(image_size, 0, 0, image_size.height, image_size.width, bytes)
    }

    /// A soft mask from the bytes of a window `[top, top+height) × [left, left+width)` of the
    /// image (e.g. a box-cropped mask), stored in the tight rectangle of its non-zero bytes (an
    /// all-zero window gives an empty mask).
    ///
    /// # Errors
    /// As [`SoftMask::new`] for the window.
    pub fn from_window(
        image_size: ImageSize,
        top: usize,
        left: usize,
        height: usize,
        width: usize,
        bytes: &[u8],
    ) -> Result<Self> {
        let window = Self::new(image_size, top, left, height, width, bytes.to_vec())?;
        let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0, usize::MAX, 0);
        for (r, row) in bytes.chunks_exact(width.max(1)).enumerate() {
            if let (Some(a), Some(b)) =
                (row.iter().position(|&v| v > 0), row.iter().rposition(|&v| v > 0))
            {
                (r0, r1, c0, c1) = (r0.min(r), r, c0.min(a), c1.max(b));
            }
        }
        if r0 == usize::MAX {
            return Self::new(image_size, 0, 0, 0, 0, Vec::new());
        }
        let (h, w) = (r1 + 1 - r0, c1 + 1 - c0);
        let mut data = Vec::with_capacity(h * w);
        for r in r0..=r1 {
            data.extend_from_slice(&window.data[r * width + c0..r * width + c1 + 1]);
        }
        Self::new(image_size, top + r0, left + c0, h, w, data)
    }

    /// Size of the whole image.
    pub fn image_size(&self) -> ImageSize {
        self.image_size
    }

    /// `(top, left, height, width)` of the stored rectangle.
    pub fn rect(&self) -> (usize, usize, usize, usize) {
        (self.top, self.left, self.height, self.width)
    }

    /// Row-major bytes of the stored rectangle.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The binary mask of the pixels whose byte is `> threshold · 255`, stored in its tight
    /// bounding rectangle (an empty mask when no pixel passes).
    ///
    /// Port of the seed's `masks > (thresh_mask * 255)` (`post_process.py::process_results`): with the
    /// default 0.45 the cut is at 114.75, so bytes ≥ 115 are kept.
    ///
    /// # Errors
    /// [`Error::ThresholdOutOfRange`] when `threshold` is NaN or outside `[0, 1]`.
    pub fn binarize(&self, threshold: f64) -> Result<CroppedMask> {
        check_range("mask_threshold", threshold, 0.0, 1.0)?;
        let cut = threshold * 255.0;
        // Smallest byte that passes: bytes are integers, so `b > cut` ⇔ `b >= floor(cut) + 1`.
        let min_byte = cut.floor() as u32 + 1;
        Ok(binarize_rect(self.image_size, self.top, self.left, self.width, &self.data, min_byte))
    }
}

/// Keeps the bytes `>= min_byte` of a rectangle and returns them in their tight rectangle.
fn binarize_rect(
    image_size: ImageSize,
    top: usize,
    left: usize,
    width: usize,
    data: &[u8],
    min_byte: u32,
) -> CroppedMask {
    if min_byte > 255 || width == 0 {
        return CroppedMask::empty(image_size);
    }
    let min_byte = min_byte as u8;
    let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0usize, usize::MAX, 0usize);
    for (r, row) in data.chunks_exact(width).enumerate() {
        let Some(first) = row.iter().position(|&v| v >= min_byte) else { continue };
        let last = row.iter().rposition(|&v| v >= min_byte).unwrap_or(first);
        r0 = r0.min(r);
        r1 = r;
        c0 = c0.min(first);
        c1 = c1.max(last);
    }
    if r0 == usize::MAX {
        return CroppedMask::empty(image_size);
    }
    let (h, w) = (r1 - r0 + 1, c1 - c0 + 1);
    let mut bits = Vec::with_capacity(h * w);
    for row in data.chunks_exact(width).skip(r0).take(h) {
        bits.extend(row[c0..=c1].iter().map(|&v| u8::from(v >= min_byte)));
    }
    CroppedMask::new(image_size, top + r0, left + c0, h, w, bits)
        .expect("a sub-rectangle of a valid soft mask fits its image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_frames_and_windows_are_cropped_to_their_non_zero_bytes() {
        let size = ImageSize::new(4, 5);
        let mut full = vec![0u8; 20];
        full[5 + 1] = 200; // (1, 1)
        full[10 + 3] = 7; // (2, 3)
        let m = SoftMask::from_full_frame(size, &full).unwrap();
        assert_eq!(m.rect(), (1, 1, 2, 3));
        assert_eq!(m.as_slice(), &[200, 0, 0, 0, 0, 7]);
        let w = SoftMask::from_window(size, 1, 1, 2, 3, &[0, 0, 0, 0, 9, 0]).unwrap();
        assert_eq!((w.rect(), w.as_slice()), ((2, 2, 1, 1), &[9u8][..]));
        assert_eq!(SoftMask::from_full_frame(size, &[0; 20]).unwrap().rect(), (0, 0, 0, 0));
        assert!(SoftMask::from_full_frame(size, &[0; 19]).is_err());
        assert!(SoftMask::from_window(size, 3, 3, 2, 3, &[0; 6]).is_err());
    }

    #[test]
    fn binarize_keeps_bytes_above_the_seed_cut() {
        let s = ImageSize::new(4, 4);
        let m = SoftMask::new(s, 1, 1, 2, 2, vec![114, 115, 0, 200]).unwrap();
        let b = m.binarize(0.45).unwrap();
        assert_eq!(b.area(), 2);
        assert!(b.get(1, 2) && b.get(2, 2) && !b.get(1, 1));
        assert_eq!(b.rect(), (1, 2, 2, 1));
    }

    #[test]
    fn binarize_rejects_bad_thresholds() {
        let m = SoftMask::new(ImageSize::new(2, 2), 0, 0, 1, 1, vec![1]).unwrap();
        assert!(m.binarize(f64::NAN).is_err());
        assert!(m.binarize(1.5).is_err());
        assert_eq!(m.binarize(1.0).unwrap().area(), 0);
        assert_eq!(m.binarize(0.0).unwrap().area(), 1);
    }

    #[test]
    fn new_rejects_rectangles_outside_the_image() {
        let err = SoftMask::new(ImageSize::new(2, 2), 1, 1, 2, 1, vec![0, 0]).unwrap_err();
        assert!(err.to_string().contains("2x2"), "{err}");
        assert!(SoftMask::new(ImageSize::new(2, 2), 0, 0, 1, 1, vec![]).is_err());
    }

    #[test]
    fn probabilities_are_floored_like_the_seed() {
        let m = SoftMask::from_probabilities(
            ImageSize::new(1, 4),
            0,
            0,
            1,
            4,
            &[0.999, 0.45, f32::NAN, 2.0],
        )
        .unwrap();
        assert_eq!(m.as_slice(), &[254, 114, 0, 255]);
    }
}
