//! Normalisation and padding, as the seed's mmdet pipelines do them.
//!
//! mmdet `Normalize(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)`:
//! the seed reads images with OpenCV (BGR) and converts them to RGB before subtracting the RGB
//! ImageNet mean. cellseg decodes images straight to RGB (or gray, whose three channels are equal),
//! so the BGR→RGB step is already done and channel `c` of the output is `(rgb[c] - mean[c]) / std[c]`.

use cellseg_core::ImageSize;

use crate::raster::Image;

/// The seed's mean, RGB order, 0–255 scale (mmdet ImageNet statistics).
pub const MEAN_RGB: [f32; 3] = [123.675, 116.28, 103.53];
/// The seed's standard deviation, RGB order, 0–255 scale.
pub const STD_RGB: [f32; 3] = [58.395, 57.12, 57.375];
/// The raw pad value of the seed's `Pad` (applied before normalisation at val / test time).
pub const PAD_VALUE: u8 = 130;

/// Writes `image` normalised as `[3, H, W]` (channel-major, RGB) into `out`, which must hold
/// `3 * H * W` values laid out for an output of `out_size` (≥ the image size): rows and columns
/// beyond the image are filled with the normalised `pad` value.
///
/// # Panics
/// When `out` has the wrong length, `out_size` is smaller than the image, or the image has a
/// channel count other than 1 or 3 (impossible for an [`Image`]).
pub fn normalize_into(image: &Image, out_size: ImageSize, pad: u8, out: &mut [f32]) {
    let size = image.size();
    assert!(out_size.height >= size.height && out_size.width >= size.width, "output too small");
    assert_eq!(out.len(), 3 * out_size.pixels(), "output buffer length");
    let ch = image.channels();
    let src = image.as_slice();
    let plane = out_size.pixels();
    for c in 0..3 {
        let (m, inv) = (MEAN_RGB[c], 1.0 / STD_RGB[c]);
        let lut: [f32; 256] = std::array::from_fn(|v| (v as f32 - m) * inv);
        let dst = &mut out[c * plane..(c + 1) * plane];
        let sc = if ch == 1 { 0 } else { c };
        for r in 0..out_size.height {
            let row = &mut dst[r * out_size.width..(r + 1) * out_size.width];
            if r < size.height {
                let s = &src[r * size.width * ch..(r + 1) * size.width * ch];
                for (d, px) in row[..size.width].iter_mut().zip(s.chunks_exact(ch)) {
                    *d = lut[px[sc] as usize];
                }
                row[size.width..].fill(lut[pad as usize]);
            } else {
                row.fill(lut[pad as usize]);
            }
        }
    }
}

/// `image` normalised as a `[3, H, W]` buffer.
pub fn normalize(image: &Image) -> Vec<f32> {
    let mut out = vec![0f32; 3 * image.size().pixels()];
    normalize_into(image, image.size(), PAD_VALUE, &mut out);
    out
}

/// The size padded up to a multiple of `divisor` (bottom / right), as mmdet `Pad(size_divisor)`:
/// 520×704 → 544×704 for 32.
pub fn padded_size(size: ImageSize, divisor: usize) -> ImageSize {
    let up = |v: usize| v.div_ceil(divisor.max(1)) * divisor.max(1);
    ImageSize::new(up(size.height), up(size.width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_becomes_three_normalised_planes_with_padding() {
        let img = Image::new(ImageSize::new(2, 2), 1, vec![0, 255, 130, 10]).unwrap();
        let out_size = ImageSize::new(3, 2);
        let mut out = vec![0f32; 18];
        normalize_into(&img, out_size, PAD_VALUE, &mut out);
        for c in 0..3 {
            let p = &out[c * 6..(c + 1) * 6];
            assert!((p[1] - (255.0 - MEAN_RGB[c]) / STD_RGB[c]).abs() < 1e-5);
            assert!((p[4] - (130.0 - MEAN_RGB[c]) / STD_RGB[c]).abs() < 1e-5);
        }
        assert_eq!(padded_size(ImageSize::new(520, 704), 32), ImageSize::new(544, 704));
    }

    #[test]
    fn rgb_keeps_channel_order() {
        let img = Image::new(ImageSize::new(1, 1), 3, vec![10, 20, 30]).unwrap();
        let out = normalize(&img);
        for c in 0..3 {
            let want = ((c as f32 + 1.0) * 10.0 - MEAN_RGB[c]) / STD_RGB[c];
            assert!((out[c] - want).abs() < 1e-5);
        }
    }
}
