//! Geometric transforms of images, boxes and masks: crop window, flips and `rot90`.
//!
//! Each transform maps the image, every box and every mask with the same pixel map, so they stay
//! consistent: a mask's tight bounding box maps to the transformed mask's tight bounding box.

use cellseg_core::{BoxXyxy, CroppedMask, ImageSize, Instances};
use serde::{Deserialize, Serialize};

use crate::raster::Image;

/// A flip of the whole image. Self-inverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flip {
    /// Left–right (mmdet `horizontal`).
    Horizontal,
    /// Top–bottom (mmdet `vertical`).
    Vertical,
    /// Both axes, a 180° rotation (mmdet `diagonal`).
    Diagonal,
}

impl Flip {
    fn axes(self) -> (bool, bool) {
        match self {
            Flip::Horizontal => (true, false),
            Flip::Vertical => (false, true),
            Flip::Diagonal => (true, true),
        }
    }
}

/// The image flipped.
pub fn flip_image(image: &Image, flip: Flip) -> Image {
    let (h_axis, v_axis) = flip.axes();
    let size = image.size();
    let ch = image.channels();
    let src = image.as_slice();
    let row_len = size.width * ch;
    let mut out = Vec::with_capacity(src.len());
    for r in 0..size.height {
        let sr = if v_axis { size.height - 1 - r } else { r };
        let row = &src[sr * row_len..(sr + 1) * row_len];
        if h_axis {
            for px in row.chunks_exact(ch).rev() {
                out.extend_from_slice(px);
            }
        } else {
            out.extend_from_slice(row);
        }
    }
    Image::new(size, ch, out).expect("same size")
}

/// The box flipped in an image of `size`.
pub fn flip_box(b: &BoxXyxy, size: ImageSize, flip: Flip) -> BoxXyxy {
    let (h_axis, v_axis) = flip.axes();
    let mut b = *b;
    if h_axis {
        b = b.hflip(size.width);
    }
    if v_axis {
        b = b.vflip(size.height);
    }
    b
}

/// The mask flipped in its image.
pub fn flip_mask(m: &CroppedMask, flip: Flip) -> CroppedMask {
    let (h_axis, v_axis) = flip.axes();
    let size = m.image_size();
    let (top, left, h, w) = m.rect();
    if h == 0 || w == 0 {
        return CroppedMask::empty(size);
    }
    let src = m.as_slice();
    let mut data = Vec::with_capacity(src.len());
    for r in 0..h {
        let sr = if v_axis { h - 1 - r } else { r };
        let row = &src[sr * w..(sr + 1) * w];
        if h_axis {
            data.extend(row.iter().rev());
        } else {
            data.extend_from_slice(row);
        }
    }
    let new_top = if v_axis { size.height - top - h } else { top };
    let new_left = if h_axis { size.width - left - w } else { left };
    CroppedMask::new(size, new_top, new_left, h, w, data).expect("flipped rectangle fits")
}

/// All instances flipped.
pub fn flip_instances(inst: &Instances, flip: Flip) -> Instances {
    let size = inst.image_size;
    Instances {
        image_size: size,
        boxes: inst.boxes.iter().map(|b| flip_box(b, size, flip)).collect(),
        labels: inst.labels.clone(),
        masks: inst.masks.iter().map(|m| flip_mask(m, flip)).collect(),
    }
}

/// The image rotated by 90° counter-clockwise `k` times (as `np.rot90(img, k)`).
pub fn rot90_image(image: &Image, k: u8) -> Image {
    let mut img = image.clone();
    for _ in 0..k % 4 {
        img = rot90_image_once(&img);
    }
    img
}

fn rot90_image_once(image: &Image) -> Image {
    // out[i, j] = in[j, W-1-i]; out is W × H.
    let size = image.size();
    let ch = image.channels();
    let (h, w) = (size.height, size.width);
    let src = image.as_slice();
    let mut out = vec![0u8; src.len()];
    for i in 0..w {
        for j in 0..h {
            let s = (j * w + (w - 1 - i)) * ch;
            let d = (i * h + j) * ch;
            out[d..d + ch].copy_from_slice(&src[s..s + ch]);
        }
    }
    Image::new(ImageSize::new(w, h), ch, out).expect("rotated size")
}

/// The box rotated with [`rot90_image`] in an image of `size` (the size before rotation).
pub fn rot90_box(b: &BoxXyxy, size: ImageSize, k: u8) -> BoxXyxy {
    let mut b = *b;
    let mut s = size;
    for _ in 0..k % 4 {
        // (x, y) -> (y, W - x)
        b = BoxXyxy::new(b.y1, s.width as f32 - b.x2, b.y2, s.width as f32 - b.x1);
        s = ImageSize::new(s.width, s.height);
    }
    b
}

/// The mask rotated with [`rot90_image`].
pub fn rot90_mask(m: &CroppedMask, k: u8) -> CroppedMask {
    let mut m = m.clone();
    for _ in 0..k % 4 {
        m = rot90_mask_once(&m);
    }
    m
}

fn rot90_mask_once(m: &CroppedMask) -> CroppedMask {
    let size = m.image_size();
    let new_size = ImageSize::new(size.width, size.height);
    let (top, left, h, w) = m.rect();
    if h == 0 || w == 0 {
        return CroppedMask::empty(new_size);
    }
    let src = m.as_slice();
    let mut data = vec![0u8; h * w];
    // Rect rows [top, top+h), cols [left, left+w) map to rows [W-left-w, W-left), cols [top, top+h).
    for i in 0..w {
        for j in 0..h {
            data[i * h + j] = src[j * w + (w - 1 - i)];
        }
    }
    CroppedMask::new(new_size, size.width - left - w, top, w, h, data).expect("rotated rect fits")
}

/// All instances rotated by `k` quarter turns counter-clockwise.
pub fn rot90_instances(inst: &Instances, k: u8) -> Instances {
    let size = inst.image_size;
    let new_size = if k % 2 == 1 { ImageSize::new(size.width, size.height) } else { size };
    Instances {
        image_size: new_size,
        boxes: inst.boxes.iter().map(|b| rot90_box(b, size, k)).collect(),
        labels: inst.labels.clone(),
        masks: inst.masks.iter().map(|m| rot90_mask(m, k)).collect(),
    }
}

/// The part of `m` inside the window `[top, top+h) × [left, left+w)`, in the window's frame.
pub fn crop_mask(m: &CroppedMask, top: usize, left: usize, h: usize, w: usize) -> CroppedMask {
    let win = ImageSize::new(h, w);
    let (mt, ml, mh, mw) = m.rect();
    let r0 = mt.max(top);
    let r1 = (mt + mh).min(top + h);
    let c0 = ml.max(left);
    let c1 = (ml + mw).min(left + w);
    if r0 >= r1 || c0 >= c1 {
        return CroppedMask::empty(win);
    }
    let src = m.as_slice();
    let mut data = Vec::with_capacity((r1 - r0) * (c1 - c0));
    for r in r0..r1 {
        let base = (r - mt) * mw;
        data.extend_from_slice(&src[base + (c0 - ml)..base + (c1 - ml)]);
    }
    CroppedMask::new(win, r0 - top, c0 - left, r1 - r0, c1 - c0, data).expect("inside window")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::BitMask;
    use proptest::prelude::*;

    fn arb_mask() -> impl Strategy<Value = BitMask> {
        (1usize..10, 1usize..10).prop_flat_map(|(h, w)| {
            proptest::collection::vec(0u8..2, h * w)
                .prop_map(move |d| BitMask::from_vec(ImageSize::new(h, w), d).unwrap())
        })
    }

    fn image_of(m: &BitMask) -> Image {
        Image::new(m.size(), 1, m.as_slice().iter().map(|v| v * 200).collect()).unwrap()
    }

    proptest! {
        #[test]
        fn flipping_twice_is_the_identity(m in arb_mask()) {
            let c = m.to_cropped();
            for f in [Flip::Horizontal, Flip::Vertical, Flip::Diagonal] {
                prop_assert_eq!(flip_mask(&flip_mask(&c, f), f).to_full(), m.clone());
                let img = image_of(&m);
                prop_assert_eq!(flip_image(&flip_image(&img, f), f), img);
            }
        }

        #[test]
        fn transforms_keep_image_box_and_mask_consistent(m in arb_mask(), k in 0u8..4) {
            let c = m.to_cropped();
            let img = image_of(&m);
            let Some(b) = c.bbox() else { return Ok(()) };
            for f in [Flip::Horizontal, Flip::Vertical, Flip::Diagonal] {
                let fm = flip_mask(&c, f);
                prop_assert_eq!(fm.bbox(), Some(flip_box(&b, m.size(), f)));
                // the image carries the mask pixels, so the flipped image equals the flipped mask
                let fi = flip_image(&img, f);
                let fmf = fm.to_full();
                prop_assert!(fi.as_slice().iter().zip(fmf.as_slice()).all(|(&p, &q)| p == q * 200));
            }
            let rm = rot90_mask(&c, k);
            prop_assert_eq!(rm.bbox(), Some(rot90_box(&b, m.size(), k)));
            let ri = rot90_image(&img, k);
            let rmf = rm.to_full();
            prop_assert_eq!(ri.size(), rmf.size());
            prop_assert!(ri.as_slice().iter().zip(rmf.as_slice()).all(|(&p, &q)| p == q * 200));
            prop_assert_eq!(rot90_mask(&rm, 4 - k).to_full(), m.clone());
        }

        #[test]
        fn crop_mask_matches_full_crop(m in arb_mask(), t in 0usize..5, l in 0usize..5) {
            let size = m.size();
            let (t, l) = (t.min(size.height - 1), l.min(size.width - 1));
            let (h, w) = (size.height - t, size.width - l);
            let cm = crop_mask(&m.to_cropped(), t, l, h, w).to_full();
            for r in 0..h {
                for c in 0..w {
                    prop_assert_eq!(cm.get(r, c), m.get(r + t, c + l));
                }
            }
        }
    }

    #[test]
    fn rot90_matches_numpy_convention() {
        // np.rot90([[1,2,3],[4,5,6]]) == [[3,6],[2,5],[1,4]]
        let img = Image::new(ImageSize::new(2, 3), 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(rot90_image(&img, 1).as_slice(), &[3, 6, 2, 5, 1, 4]);
    }
}
