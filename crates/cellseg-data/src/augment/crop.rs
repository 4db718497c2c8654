//! mmdet 2.x `RandomCrop` (absolute size, `allow_negative_crop=False`, `bbox_clip_border=True`)
//! with the seed's retry loop.

use cellseg_core::{BoxXyxy, ImageSize, Instances};
use rand::{Rng, RngExt};

use super::geometry::crop_mask;
use crate::raster::Image;
use crate::sample::Sample;
use crate::{Error, Result};

/// Where a crop was taken: `[top, top+height) × [left, left+width)` of the source image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropWindow {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// Draws a window as mmdet does: `offset_h = randint(0, max(H - ch, 0) + 1)`, same for `w`; the
/// window is clipped to the image when the image is smaller than the crop.
pub fn random_window<R: Rng + ?Sized>(size: ImageSize, crop: ImageSize, rng: &mut R) -> CropWindow {
    let margin_h = size.height.saturating_sub(crop.height);
    let margin_w = size.width.saturating_sub(crop.width);
    let top = rng.random_range(0..=margin_h);
    let left = rng.random_range(0..=margin_w);
    CropWindow {
        top,
        left,
        height: crop.height.min(size.height),
        width: crop.width.min(size.width),
    }
}

/// The boxes shifted into `win` and clipped to it, and which survive (`x2 > x1 && y2 > y1`).
pub fn crop_boxes(boxes: &[BoxXyxy], win: CropWindow) -> Vec<(usize, BoxXyxy)> {
    let size = ImageSize::new(win.height, win.width);
    boxes
        .iter()
        .enumerate()
        .map(|(i, b)| (i, b.translate(-(win.left as f32), -(win.top as f32)).clip(size)))
        .filter(|(_, b)| b.is_nonempty())
        .collect()
}

/// Crops `sample` to `win`, keeping the instances whose clipped box is non-empty.
///
/// With `recompute_boxes`, each kept box becomes the tight box of its cropped mask and instances
/// whose cropped mask is empty are dropped (mmdet's `recompute_bbox=True`); without it (the seed),
/// boxes are shifted and clipped only.
pub fn crop_sample(sample: &Sample, win: CropWindow, recompute_boxes: bool) -> Sample {
    let kept = crop_boxes(&sample.instances.boxes, win);
    let size = ImageSize::new(win.height, win.width);
    let mut inst = Instances::empty(size);
    for (i, b) in kept {
        let m = crop_mask(&sample.instances.masks[i], win.top, win.left, win.height, win.width);
        let b = if recompute_boxes {
            match m.bbox() {
                Some(tight) => tight,
                None => continue,
            }
        } else {
            b
        };
        inst.boxes.push(b);
        inst.labels.push(sample.instances.labels[i]);
        inst.masks.push(m);
    }
    Sample { id: sample.id.clone(), image: crop_image(&sample.image, win), instances: inst }
}

fn crop_image(image: &Image, win: CropWindow) -> Image {
    image.crop(win.top, win.left, win.height, win.width)
}

/// Random crop with the seed's retry: draws windows until at least one box survives, at most
/// `max_tries` times.
///
/// # Errors
/// [`Error::NoInstanceSurvives`] when no window of `max_tries` keeps an instance (for example an
/// image without annotations, on which the seed would loop forever).
pub fn random_crop<R: Rng + ?Sized>(
    sample: &Sample,
    crop: ImageSize,
    max_tries: usize,
    recompute_boxes: bool,
    rng: &mut R,
) -> Result<Sample> {
    for _ in 0..max_tries {
        let win = random_window(sample.image.size(), crop, rng);
        if crop_boxes(&sample.instances.boxes, win).is_empty() {
            continue;
        }
        let out = crop_sample(sample, win, recompute_boxes);
        if !out.instances.is_empty() {
            return Ok(out);
        }
    }
    Err(Error::NoInstanceSurvives {
        id: sample.id.clone(),
        tries: max_tries,
        crop_h: crop.height,
        crop_w: crop.width,
    })
}
