//! The seed's `FlipPaste` (`src/data/flip_paste.py`): on cort crops, blend the image 50/50 with its
//! own horizontal flip and annotate both sets of instances.

use cellseg_core::Instances;

use super::geometry::{Flip, flip_image, flip_instances};
use crate::sample::Sample;

/// Applies FlipPaste unconditionally: image `= floor(0.5·img + 0.5·hflip(img))` (the seed's uint8
/// truncation), instances = original followed by their horizontal flips.
pub fn flip_paste(sample: &Sample) -> Sample {
    let flipped = flip_image(&sample.image, Flip::Horizontal);
    let mut image = sample.image.clone();
    for (a, &b) in image.as_mut_slice().iter_mut().zip(flipped.as_slice()) {
        *a = ((*a as u16 + b as u16) / 2) as u8;
    }
    let f = flip_instances(&sample.instances, Flip::Horizontal);
    let orig = &sample.instances;
    let instances = Instances {
        image_size: orig.image_size,
        boxes: orig.boxes.iter().chain(&f.boxes).copied().collect(),
        labels: orig.labels.iter().chain(&f.labels).copied().collect(),
        masks: orig.masks.iter().chain(&f.masks).cloned().collect(),
    };
    Sample { id: sample.id.clone(), image, instances }
}

/// The seed's condition: `unique(labels)[0] == label`, i.e. the smallest label present is `label`
/// (for cort = 2, the largest Sartorius label, every instance is cort).
pub fn applies_to(instances: &Instances, label: usize) -> bool {
    instances.labels.iter().min() == Some(&label)
}
