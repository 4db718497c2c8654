//! Label images: one `u32` per pixel, 0 for background and `k + 1` for instance `k`.

use cellseg_core::{CroppedMask, ImageSize};

use crate::{Result, mask_nms::check_sizes};

/// A row-major label image: 0 is background, `k + 1` is instance `k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelImage {
    size: ImageSize,
    data: Vec<u32>,
}

impl LabelImage {
    /// An all-background label image.
    pub fn zeros(size: ImageSize) -> Self {
        Self { size, data: vec![0; size.pixels()] }
    }

    /// Paints `masks` in priority order: a pixel gets the label of the **first** mask covering it
    /// (after [`crate::overlap::resolve`] no pixel is covered twice).
    ///
    /// # Errors
    /// [`crate::Error::MaskSize`] when a mask belongs to an image of another size.
    pub fn from_masks(size: ImageSize, masks: &[CroppedMask]) -> Result<Self> {
        check_sizes("LabelImage::from_masks", size, masks)?;
        let mut img = Self::zeros(size);
        for (k, m) in masks.iter().enumerate() {
            let (top, left, h, w) = m.rect();
            let label = u32::try_from(k + 1).unwrap_or(u32::MAX);
            for r in 0..h {
                let src = &m.as_slice()[r * w..(r + 1) * w];
                let start = (top + r) * size.width + left;
                for (d, &v) in img.data[start..start + w].iter_mut().zip(src) {
                    if v != 0 && *d == 0 {
                        *d = label;
                    }
                }
            }
        }
        Ok(img)
    }

    /// A label image from row-major labels (0 = background).
    ///
    /// # Errors
    /// [`crate::Error::Core`] ([`cellseg_core::Error::BufferSize`]) when `data.len()` is not
    /// `height · width`.
    pub fn from_vec(size: ImageSize, data: Vec<u32>) -> Result<Self> {
        if data.len() != size.pixels() {
            return Err(cellseg_core::Error::BufferSize {
                what: "LabelImage",
                shape: vec![size.height, size.width],
                expected: size.pixels(),
                got: data.len(),
            }
            .into());
        }
        Ok(Self { size, data })
    }

    /// One mask per label present (1, 2, …, in increasing label order; labels absent from the
    /// image give no mask), each in its tight rectangle: a label image from another tool as the
    /// masks the metric and the tweak take.
    pub fn instance_masks(&self) -> Vec<CroppedMask> {
        let w = self.size.width;
        // Bounds per label, then one pass filling each label's rectangle.
        let mut bounds: std::collections::BTreeMap<u32, (usize, usize, usize, usize)> =
            std::collections::BTreeMap::new();
        for (i, &l) in self.data.iter().enumerate() {
            if l != 0 {
                let (r, c) = (i / w, i % w);
                let b = bounds.entry(l).or_insert((r, c, r, c));
                *b = (b.0.min(r), b.1.min(c), b.2.max(r), b.3.max(c));
            }
        }
        bounds
            .into_iter()
            .map(|(l, (r0, c0, r1, c1))| {
                let (h, bw) = (r1 - r0 + 1, c1 - c0 + 1);
                let mut bits = Vec::with_capacity(h * bw);
                for r in r0..=r1 {
                    bits.extend(
                        self.data[r * w + c0..=r * w + c1].iter().map(|&v| u8::from(v == l)),
                    );
                }
                CroppedMask::new(self.size, r0, c0, h, bw, bits).expect("inside the image")
            })
            .collect()
    }

    /// The image size.
    pub fn size(&self) -> ImageSize {
        self.size
    }

    /// Row-major labels.
    pub fn as_slice(&self) -> &[u32] {
        &self.data
    }

    /// The label at `(row, col)`, `None` outside the image.
    pub fn get(&self, row: usize, col: usize) -> Option<u32> {
        (row < self.size.height && col < self.size.width)
            .then(|| self.data[row * self.size.width + col])
    }

    /// The largest label (the number of instances painted when none was fully hidden).
    pub fn max_label(&self) -> u32 {
        self.data.iter().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::BitMask;

    #[test]
    fn first_mask_wins_each_pixel() {
        let s = ImageSize::new(2, 3);
        let a = BitMask::from_vec(s, vec![1, 1, 0, 0, 0, 0]).unwrap().to_cropped();
        let b = BitMask::from_vec(s, vec![0, 1, 1, 0, 0, 1]).unwrap().to_cropped();
        let l = LabelImage::from_masks(s, &[a, b]).unwrap();
        assert_eq!(l.as_slice(), &[1, 1, 2, 0, 0, 2]);
        assert_eq!(l.max_label(), 2);
        assert_eq!(l.get(5, 0), None);
        let masks = l.instance_masks();
        assert_eq!(LabelImage::from_masks(s, &masks).unwrap(), l);
        assert!(LabelImage::from_vec(s, vec![0; 5]).is_err());
        let other = CroppedMask::empty(ImageSize::new(3, 3));
        assert!(LabelImage::from_masks(s, &[other]).is_err());
    }
}
