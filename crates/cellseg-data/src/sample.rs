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
