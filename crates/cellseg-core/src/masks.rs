//! Binary masks: full-image ([`BitMask`]) and box-cropped ([`CroppedMask`]).
//!
//! Both are row-major with one byte per pixel holding 0 or 1. A `CroppedMask` stores only the
//! pixels inside its tight bounding rectangle, which keeps hundreds of cells on a 520×704 image at a
//! few hundred bytes each; it converts losslessly to and from a `BitMask`.

use serde::{Deserialize, Serialize};

use crate::{BoxXyxy, Error, Result};

/// Height × width of an image in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ImageSize {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageSize {
    /// A size from `height` and `width`.
    pub const fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }

    /// `height * width`.
    pub const fn pixels(&self) -> usize {
        self.height * self.width
    }
}

/// A full-image binary mask, row-major, one byte (0 or 1) per pixel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BitMask {
    size: ImageSize,
    data: Vec<u8>,
}

impl BitMask {
    /// An empty mask of `size`.
    pub fn zeros(size: ImageSize) -> Self {
        Self { size, data: vec![0; size.pixels()] }
    }

    /// A mask from a row-major buffer; every non-zero byte counts as set.
    ///
    /// # Errors
    /// [`Error::BufferSize`] when `data.len() != height * width`.
    pub fn from_vec(size: ImageSize, mut data: Vec<u8>) -> Result<Self> {
        if data.len() != size.pixels() {
            return Err(Error::BufferSize {
                what: "BitMask",
                shape: vec![size.height, size.width],
                expected: size.pixels(),
                got: data.len(),
            });
        }
        for v in &mut data {
            *v = u8::from(*v != 0);
        }
        Ok(Self { size, data })
    }

    /// The image size.
    pub fn size(&self) -> ImageSize {
        self.size
    }

    /// The row-major 0/1 buffer.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The row-major 0/1 buffer, mutable (callers keep values in {0, 1}).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Consumes the mask and returns its buffer.
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }

    /// Whether pixel `(row, col)` is set.
    ///
    /// # Panics
    /// When `(row, col)` is outside the image.
    pub fn get(&self, row: usize, col: usize) -> bool {
        assert!(row < self.size.height && col < self.size.width, "pixel outside the mask");
        self.data[row * self.size.width + col] != 0
    }

    /// Sets pixel `(row, col)` to `value`.
    ///
    /// # Panics
    /// When `(row, col)` is outside the image.
    pub fn set(&mut self, row: usize, col: usize, value: bool) {
        assert!(row < self.size.height && col < self.size.width, "pixel outside the mask");
        self.data[row * self.size.width + col] = u8::from(value);
    }

    /// Number of set pixels.
    pub fn area(&self) -> usize {
        self.data.iter().map(|&v| v as usize).sum()
    }

    /// The tight bounding box of the set pixels, `None` when the mask is empty.
    pub fn bbox(&self) -> Option<BoxXyxy> {
        self.bounds().map(|(r0, c0, r1, c1)| {
            BoxXyxy::new(c0 as f32, r0 as f32, (c1 + 1) as f32, (r1 + 1) as f32)
        })
    }

    /// Inclusive `(min_row, min_col, max_row, max_col)` of the set pixels.
    fn bounds(&self) -> Option<(usize, usize, usize, usize)> {
        let w = self.size.width;
        let mut b: Option<(usize, usize, usize, usize)> = None;
        for (r, row) in self.data.chunks_exact(w.max(1)).enumerate() {
            let Some(first) = row.iter().position(|&v| v != 0) else { continue };
            let last = row.iter().rposition(|&v| v != 0).unwrap_or(first);
            b = Some(match b {
                None => (r, first, r, last),
                Some((r0, c0, _, c1)) => (r0, c0.min(first), r, c1.max(last)),
            });
        }
        b
    }

    /// Intersection over union with `other` (0 when both are empty).
    ///
    /// # Panics
    /// When the sizes differ.
    pub fn iou(&self, other: &Self) -> f64 {
        assert_eq!(self.size, other.size, "masks of different sizes");
        let (mut inter, mut union) = (0usize, 0usize);
        for (&a, &b) in self.data.iter().zip(&other.data) {
            inter += (a & b) as usize;
            union += (a | b) as usize;
        }
        if union == 0 { 0.0 } else { inter as f64 / union as f64 }
    }

    /// The mask stored inside its bounding rectangle.
    pub fn to_cropped(&self) -> CroppedMask {
        let Some((r0, c0, r1, c1)) = self.bounds() else {
            return CroppedMask::empty(self.size);
        };
        let (h, w) = (r1 - r0 + 1, c1 - c0 + 1);
        let mut data = Vec::with_capacity(h * w);
        for r in r0..=r1 {
            let start = r * self.size.width;
            data.extend_from_slice(&self.data[start + c0..=start + c1]);
        }
        CroppedMask { image_size: self.size, top: r0, left: c0, height: h, width: w, data }
    }
}

/// A binary mask stored inside a rectangle `[top, top+height) × [left, left+width)` of its image.
///
/// The rectangle need not be tight (a crop of a soft mask pasted into its box is not), but every set
/// pixel lies inside it. Row-major, one byte (0 or 1) per pixel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CroppedMask {
    image_size: ImageSize,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    data: Vec<u8>,
}

impl CroppedMask {
    /// A mask with no pixel set.
    pub fn empty(image_size: ImageSize) -> Self {
        Self { image_size, top: 0, left: 0, height: 0, width: 0, data: Vec::new() }
    }

    /// A mask from the rectangle at `(top, left)` of `height × width` and its row-major pixels.
    ///
    /// # Errors
    /// [`Error::BufferSize`] when `data` does not hold `height * width` values, or the rectangle does
    /// not fit in the image.
    pub fn new(
        image_size: ImageSize,
        top: usize,
        left: usize,
        height: usize,
        width: usize,
        mut data: Vec<u8>,
    ) -> Result<Self> {
        if data.len() != height * width
            || top + height > image_size.height
            || left + width > image_size.width
        {
            return Err(Error::BufferSize {
                what: "CroppedMask (rectangle inside the image)",
                shape: vec![top, left, height, width],
                expected: height * width,
                got: data.len(),
            });
        }
        for v in &mut data {
            *v = u8::from(*v != 0);
        }
        Ok(Self { image_size, top, left, height, width, data })
    }

    /// Size of the whole image.
    pub fn image_size(&self) -> ImageSize {
        self.image_size
    }

    /// `(top, left, height, width)` of the stored rectangle.
    pub fn rect(&self) -> (usize, usize, usize, usize) {
        (self.top, self.left, self.height, self.width)
    }

    /// Row-major pixels of the stored rectangle.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Number of set pixels.
    pub fn area(&self) -> usize {
        self.data.iter().map(|&v| v as usize).sum()
    }

    /// Whether pixel `(row, col)` of the image is set.
    pub fn get(&self, row: usize, col: usize) -> bool {
        row >= self.top
            && col >= self.left
            && row < self.top + self.height
            && col < self.left + self.width
            && self.data[(row - self.top) * self.width + (col - self.left)] != 0
    }

    /// The tight bounding box of the set pixels, `None` when empty. Visits only the stored
    /// rectangle.
    pub fn bbox(&self) -> Option<BoxXyxy> {
        let mut b: Option<(usize, usize, usize, usize)> = None;
        for (r, row) in self.data.chunks_exact(self.width.max(1)).enumerate() {
            let Some(first) = row.iter().position(|&v| v != 0) else { continue };
            let last = row.iter().rposition(|&v| v != 0).unwrap_or(first);
            b = Some(match b {
                None => (r, first, r, last),
                Some((r0, c0, _, c1)) => (r0, c0.min(first), r, c1.max(last)),
            });
        }
        b.map(|(r0, c0, r1, c1)| {
            let (top, left) = (self.top as f32, self.left as f32);
            BoxXyxy::new(
                left + c0 as f32,
                top + r0 as f32,
                left + (c1 + 1) as f32,
                top + (r1 + 1) as f32,
            )
        })
    }

    /// The mask as a full-image [`BitMask`].
    pub fn to_full(&self) -> BitMask {
        let mut full = BitMask::zeros(self.image_size);
        let w = self.image_size.width;
        for r in 0..self.height {
            let dst = (self.top + r) * w + self.left;
            full.data[dst..dst + self.width]
                .copy_from_slice(&self.data[r * self.width..(r + 1) * self.width]);
        }
        full
    }

    /// Number of pixels set in both masks; only the overlap of the two rectangles is visited.
    ///
    /// # Panics
    /// When the image sizes differ.
    pub fn intersection(&self, other: &Self) -> usize {
        assert_eq!(self.image_size, other.image_size, "masks of different images");
        let r0 = self.top.max(other.top);
        let r1 = (self.top + self.height).min(other.top + other.height);
        let c0 = self.left.max(other.left);
        let c1 = (self.left + self.width).min(other.left + other.width);
        if r0 >= r1 || c0 >= c1 {
            return 0;
        }
        let mut n = 0usize;
        for r in r0..r1 {
            let a = &self.data[(r - self.top) * self.width..][c0 - self.left..c1 - self.left];
            let b = &other.data[(r - other.top) * other.width..][c0 - other.left..c1 - other.left];
            n += a.iter().zip(b).map(|(&x, &y)| (x & y) as usize).sum::<usize>();
        }
        n
    }

    /// Intersection over union with `other` (0 when both are empty).
    pub fn iou(&self, other: &Self) -> f64 {
        let inter = self.intersection(other);
        let union = self.area() + other.area() - inter;
        if union == 0 { 0.0 } else { inter as f64 / union as f64 }
    }
}

impl From<&BitMask> for CroppedMask {
    fn from(mask: &BitMask) -> Self {
        mask.to_cropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_mask_of(h: usize, w: usize) -> impl Strategy<Value = BitMask> {
        proptest::collection::vec(0u8..2, h * w)
            .prop_map(move |d| BitMask::from_vec(ImageSize::new(h, w), d).unwrap())
    }

    fn arb_mask() -> impl Strategy<Value = BitMask> {
        (1usize..12, 1usize..12).prop_flat_map(|(h, w)| arb_mask_of(h, w))
    }

    fn arb_mask_pair() -> impl Strategy<Value = (BitMask, BitMask)> {
        (1usize..12, 1usize..12).prop_flat_map(|(h, w)| (arb_mask_of(h, w), arb_mask_of(h, w)))
    }

    #[test]
    fn from_vec_rejects_wrong_length() {
        let err = BitMask::from_vec(ImageSize::new(2, 3), vec![0; 5]).unwrap_err();
        assert!(err.to_string().contains("expected 6"), "{err}");
    }

    proptest! {
        #[test]
        fn crop_round_trips(m in arb_mask()) {
            let c = m.to_cropped();
            prop_assert_eq!(c.area(), m.area());
            prop_assert_eq!(c.to_full(), m.clone());
            prop_assert_eq!(c.bbox(), m.bbox());
            // a rectangle that is not tight: the box is still the tight box of the set pixels
            let (h, w) = (m.size().height, m.size().width);
            let inner: Vec<u8> = (0..h - h / 2).flat_map(|r| (0..w - w / 2).map(move |c| (r, c)))
                .map(|(r, c)| u8::from(m.get(r + h / 2, c + w / 2)))
                .collect();
            let window = CroppedMask::new(m.size(), h / 2, w / 2, h - h / 2, w - w / 2, inner).unwrap();
            prop_assert_eq!(window.bbox(), window.to_full().bbox());
        }

        #[test]
        fn cropped_iou_equals_full_iou((a, b) in arb_mask_pair()) {
            let (ca, cb) = (a.to_cropped(), b.to_cropped());
            prop_assert!((ca.iou(&cb) - a.iou(&b)).abs() < 1e-12);
            prop_assert!((a.iou(&b) - b.iou(&a)).abs() < 1e-12);
        }

        #[test]
        fn bbox_contains_every_set_pixel(m in arb_mask()) {
            if let Some(b) = m.bbox() {
                for r in 0..m.size().height {
                    for c in 0..m.size().width {
                        if m.get(r, c) {
                            prop_assert!((c as f32) >= b.x1 && ((c + 1) as f32) <= b.x2);
                            prop_assert!((r as f32) >= b.y1 && ((r + 1) as f32) <= b.y2);
                        }
                    }
                }
            } else {
                prop_assert_eq!(m.area(), 0);
            }
        }
    }
}
