//! One annotated image: the unit the augmentations and the loader work on.

use cellseg_core::Instances;

use crate::raster::Image;

/// An image with its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Image id (Sartorius id, LIVECell file stem, DSB ImageId, synthetic id).
    pub id: String,
    /// The pixels.
    pub image: Image,
    /// Boxes, labels and masks, in the image's frame.
    pub instances: Instances,
}

/// Where the loader gets its samples from: an in-memory list, or a reader that decodes on demand.
pub trait SampleSource: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// True when there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The sample at `index` (`index < len()`), decoded.
    ///
    /// # Errors
    /// Whatever reading the sample can fail with (a missing or corrupt image).
    fn load(&self, index: usize) -> crate::Result<Sample>;
}

/// Decodes every sample of `source` once (in parallel), for data sets small enough to keep in
/// memory: the loader then skips image decoding (606 Sartorius images take about 230 MB).
///
/// # Errors
/// The first error of [`SampleSource::load`].
pub fn preload(source: &dyn SampleSource) -> crate::Result<Vec<Sample>> {
    use rayon::prelude::*;
    (0..source.len()).into_par_iter().map(|i| source.load(i)).collect()
}

impl SampleSource for Vec<Sample> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn load(&self, index: usize) -> crate::Result<Sample> {
        Ok(self[index].clone())
    }
}

impl SampleSource for [Sample] {
    fn len(&self) -> usize {
        <[Sample]>::len(self)
    }
    fn load(&self, index: usize) -> crate::Result<Sample> {
        Ok(self[index].clone())
    }
}

/// The tight box of a cropped mask's set pixels, visiting only its rectangle (`None` when empty).
///
/// Same result as [`cellseg_core::CroppedMask::bbox`], which builds the full-image mask first
/// (O(H·W) per instance); readers and augmentations call this for hundreds of masks per image.
pub fn tight_box(mask: &cellseg_core::CroppedMask) -> Option<cellseg_core::BoxXyxy> {
    let (top, left, h, w) = mask.rect();
    let d = mask.as_slice();
    let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0, usize::MAX, 0);
    for r in 0..h {
        let row = &d[r * w..(r + 1) * w];
        let Some(first) = row.iter().position(|&v| v != 0) else { continue };
        let last = row.iter().rposition(|&v| v != 0).unwrap_or(first);
        r0 = r0.min(r);
        r1 = r;
        c0 = c0.min(first);
        c1 = c1.max(last);
    }
    (r0 != usize::MAX).then(|| {
        cellseg_core::BoxXyxy::new(
            (left + c0) as f32,
            (top + r0) as f32,
            (left + c1 + 1) as f32,
            (top + r1 + 1) as f32,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::{BitMask, ImageSize};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tight_box_equals_core_bbox(d in proptest::collection::vec(0u8..2, 7 * 9)) {
            let m = BitMask::from_vec(ImageSize::new(7, 9), d).unwrap();
            let c = m.to_cropped();
            prop_assert_eq!(tight_box(&c), c.bbox());
            // a crop that is not tight
            let win = crate::augment::geometry::crop_mask(&c, 1, 2, 6, 7);
            prop_assert_eq!(tight_box(&win), win.bbox());
        }
    }
}
