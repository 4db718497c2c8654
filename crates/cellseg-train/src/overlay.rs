//! Overlay PNGs: predicted mask outlines drawn in colour on the grey image.
//!
//! # Example
//! ```no_run
//! use cellseg_core::{Detections, ImageSize};
//! use cellseg_data::Image;
//!
//! let size = ImageSize::new(64, 64);
//! let image = Image::filled(size, 1, 128);
//! let dets = Detections::empty(size);
//! cellseg_train::overlay::write_overlay(std::path::Path::new("overlay.png"), &image, &dets)?;
//! # Ok::<(), cellseg_train::Error>(())
//! ```

use std::path::Path;

use cellseg_core::{CroppedMask, Detections};
use cellseg_data::Image;

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};

/// Distinct, saturated outline colours, cycled over instances.
const PALETTE: [[u8; 3]; 8] = [
    [255, 64, 64],
    [64, 255, 64],
    [80, 160, 255],
    [255, 220, 0],
    [255, 64, 255],
    [0, 255, 255],
    [255, 140, 0],
    [180, 120, 255],
];

/// The RGB pixels (`H × W × 3`) of `image` in grey with the outline of every mask of `dets`
/// (mask pixels with a 4-neighbour outside the mask) in colour.
pub fn render(image: &Image, dets: &Detections) -> Vec<u8> {
    let size = image.size();
    let ch = image.channels();
    let mut rgb = Vec::with_capacity(size.pixels() * 3);
    for r in 0..size.height {
        for c in 0..size.width {
            let v = if ch == 1 {
                image.get(r, c, 0)
            } else {
                let s: u32 = (0..ch).map(|k| u32::from(image.get(r, c, k))).sum();
                (s / ch as u32) as u8
            };
            rgb.extend_from_slice(&[v, v, v]);
        }
    }
    for (k, m) in dets.masks.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        for (r, c) in outline(m) {
            if r < size.height && c < size.width {
                let i = (r * size.width + c) * 3;
                rgb[i..i + 3].copy_from_slice(&colour);
            }
        }
    }
    rgb
}

/// Pixels of `m` with at least one 4-neighbour outside `m` (or on the image border).
fn outline(m: &CroppedMask) -> Vec<(usize, usize)> {
    let (top, left, h, w) = m.rect();
    let mut out = Vec::new();
    for r in top..top + h {
        for c in left..left + w {
            if !m.get(r, c) {
                continue;
            }
            let edge = r == 0
                || c == 0
                || !m.get(r - 1, c)
                || !m.get(r + 1, c)
                || !m.get(r, c - 1)
                || !m.get(r, c + 1);
            if edge {
                out.push((r, c));
            }
        }
    }
    out
}

/// Writes [`render`] of `image` and `dets` as an RGB PNG at `path` (temporary file, then rename).
///
/// # Errors
/// [`Error::Plot`] when encoding fails, [`Error::Io`] when writing fails.
pub fn write_overlay(path: &Path, image: &Image, dets: &Detections) -> Result<()> {
    let size = image.size();
    let rgb = render(image, dets);
    let err =
        |e: png::EncodingError| Error::Plot { path: path.to_path_buf(), message: e.to_string() };
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, size.width as u32, size.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(err)?;
        w.write_image_data(&rgb).map_err(err)?;
    }
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::{BitMask, BoxXyxy, ImageSize};

    #[test]
    fn outline_of_a_square_is_its_border() {
        let size = ImageSize::new(8, 8);
        let mut m = BitMask::zeros(size);
        for r in 2..6 {
            for c in 2..6 {
                m.set(r, c, true);
            }
        }
        let dets = Detections {
            image_size: size,
            boxes: vec![BoxXyxy::new(2.0, 2.0, 6.0, 6.0)],
            scores: vec![0.9],
            labels: vec![0],
            masks: vec![m.to_cropped()],
        };
        let rgb = render(&Image::filled(size, 1, 100), &dets);
        let px = |r: usize, c: usize| &rgb[(r * 8 + c) * 3..(r * 8 + c) * 3 + 3];
        assert_eq!(px(2, 2), PALETTE[0]);
        assert_eq!(px(5, 3), PALETTE[0]);
        assert_eq!(px(3, 3), [100, 100, 100]);
        assert_eq!(px(0, 0), [100, 100, 100]);
    }
}
