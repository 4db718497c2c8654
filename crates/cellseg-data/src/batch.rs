//! A training batch: images in one contiguous `[B, 3, H, W]` f32 buffer plus per-image instances.

use cellseg_core::{ImageSize, Instances};

use crate::normalize::{PAD_VALUE, normalize_into};
use crate::sample::Sample;

/// A collated batch, ready to become tensors (`Tensor::from_slice(&images).view(shape)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Normalised images, `[B, 3, H, W]` row-major, RGB, f32; images smaller than `H × W` are padded
    /// bottom / right with the normalised pad value 130 (mmdet `Pad`).
    pub images: Vec<f32>,
    /// `[B, 3, H, W]`.
    pub shape: [usize; 4],
    /// The unpadded size of each image.
    pub image_sizes: Vec<ImageSize>,
    /// Per-image ground truth (boxes xyxy pixels, labels, masks in the unpadded image frame).
    pub instances: Vec<Instances>,
    /// Per-image ids.
    pub ids: Vec<String>,
}

impl Batch {
    /// Collates samples: normalises each image into one buffer padded to the largest height and
    /// width of the batch (rounded up to `size_divisor`, 1 for none).
    pub fn collate(samples: Vec<Sample>, size_divisor: usize) -> Self {
        let d = size_divisor.max(1);
        let h = samples.iter().map(|s| s.image.size().height).max().unwrap_or(0).div_ceil(d) * d;
        let w = samples.iter().map(|s| s.image.size().width).max().unwrap_or(0).div_ceil(d) * d;
        let out_size = ImageSize::new(h, w);
        let per = 3 * out_size.pixels();
        let mut images = vec![0f32; per * samples.len()];
        for (s, chunk) in samples.iter().zip(images.chunks_exact_mut(per.max(1))) {
            normalize_into(&s.image, out_size, PAD_VALUE, chunk);
        }
        let shape = [samples.len(), 3, h, w];
        let mut image_sizes = Vec::with_capacity(samples.len());
        let mut instances = Vec::with_capacity(samples.len());
        let mut ids = Vec::with_capacity(samples.len());
        for s in samples {
            image_sizes.push(s.image.size());
            instances.push(s.instances);
            ids.push(s.id);
        }
        Self { images, shape, image_sizes, instances, ids }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// True when the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// The `[3, H, W]` slice of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let per = 3 * self.shape[2] * self.shape[3];
        &self.images[i * per..(i + 1) * per]
    }
}
