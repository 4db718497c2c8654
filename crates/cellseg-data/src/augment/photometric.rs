//! Photometric augmentations of 8-bit images (boxes and masks are unchanged by construction).

use rand::{Rng, RngExt};

use crate::raster::Image;

fn clamp_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn apply_lut(image: &mut Image, lut: &[u8; 256]) {
    for v in image.as_mut_slice() {
        *v = lut[*v as usize];
    }
}

/// Adds `delta` (in gray levels) to every pixel, saturating.
pub fn brightness(image: &mut Image, delta: f32) {
    let lut: [u8; 256] = std::array::from_fn(|v| clamp_u8(v as f32 + delta));
    apply_lut(image, &lut);
}

/// Scales the distance of every pixel to the image mean by `factor`, saturating.
pub fn contrast(image: &mut Image, factor: f32) {
    let data = image.as_slice();
    let mean = if data.is_empty() {
        0.0
    } else {
        data.iter().map(|&v| v as u64).sum::<u64>() as f32 / data.len() as f32
    };
    let lut: [u8; 256] = std::array::from_fn(|v| clamp_u8(mean + factor * (v as f32 - mean)));
    apply_lut(image, &lut);
}

/// `255 · (v / 255)^gamma`.
pub fn gamma(image: &mut Image, gamma: f32) {
    let lut: [u8; 256] = std::array::from_fn(|v| clamp_u8(255.0 * (v as f32 / 255.0).powf(gamma)));
    apply_lut(image, &lut);
}

/// Adds independent `N(0, sigma²)` noise to every value, saturating.
pub fn gaussian_noise<R: Rng + ?Sized>(image: &mut Image, sigma: f32, rng: &mut R) {
    let data = image.as_mut_slice();
    let mut chunks = data.chunks_mut(2);
    for pair in &mut chunks {
        // Box–Muller: two normals from two uniforms.
        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
        let u2: f32 = rng.random::<f32>();
        let r = (-2.0 * u1.ln()).sqrt() * sigma;
        let t = std::f32::consts::TAU * u2;
        let n = [r * t.cos(), r * t.sin()];
        for (v, n) in pair.iter_mut().zip(n) {
            *v = clamp_u8(*v as f32 + n);
        }
    }
}

/// Separable Gaussian blur with standard deviation `sigma`, kernel radius `ceil(3σ)`, borders
/// reflected without repeating the edge (OpenCV's default `BORDER_REFLECT_101`).
pub fn gaussian_blur(image: &mut Image, sigma: f32) {
    if sigma <= 0.0 {
        return;
    }
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let kernel: Vec<f32> = {
        let k: Vec<f32> = (0..=2 * radius)
            .map(|i| {
                let x = i as f32 - radius as f32;
                (-x * x / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        let s: f32 = k.iter().sum();
        k.into_iter().map(|v| v / s).collect()
    };
    let size = image.size();
    let ch = image.channels();
    let (h, w) = (size.height, size.width);
    let reflect = |i: isize, n: usize| -> usize {
        if n == 1 {
            return 0;
        }
        let n = n as isize;
        let mut i = i;
        while i < 0 || i >= n {
            i = if i < 0 { -i } else { 2 * (n - 1) - i };
        }
        i as usize
    };
    let src: Vec<f32> = image.as_slice().iter().map(|&v| v as f32).collect();
    let mut tmp = vec![0f32; src.len()];
    for r in 0..h {
        for c in 0..w {
            for k in 0..ch {
                let mut acc = 0.0;
                for (i, kv) in kernel.iter().enumerate() {
                    let cc = reflect(c as isize + i as isize - radius as isize, w);
                    acc += kv * src[(r * w + cc) * ch + k];
                }
                tmp[(r * w + c) * ch + k] = acc;
            }
        }
    }
    let out = image.as_mut_slice();
    for r in 0..h {
        for c in 0..w {
            for k in 0..ch {
                let mut acc = 0.0;
                for (i, kv) in kernel.iter().enumerate() {
                    let rr = reflect(r as isize + i as isize - radius as isize, h);
                    acc += kv * tmp[(rr * w + c) * ch + k];
                }
                out[(r * w + c) * ch + k] = clamp_u8(acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::ImageSize;
    use rand::SeedableRng;

    #[test]
    fn neutral_parameters_are_identities() {
        let img = Image::new(ImageSize::new(5, 6), 1, (0..30).map(|v| v * 8).collect()).unwrap();
        let mut a = img.clone();
        brightness(&mut a, 0.0);
        contrast(&mut a, 1.0);
        gamma(&mut a, 1.0);
        gaussian_noise(&mut a, 0.0, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
        assert_eq!(a, img);
        let mut flat = Image::filled(ImageSize::new(9, 9), 1, 77);
        gaussian_blur(&mut flat, 1.5);
        assert!(flat.as_slice().iter().all(|&v| v == 77));
    }
}
