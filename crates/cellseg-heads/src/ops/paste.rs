//! Batched mask paste with mmdet's `_do_paste_mask` semantics (bilinear `grid_sample`,
//! `align_corners = false`, zero padding, pixel centres `+0.5` mapped through the float box).
//!
//! Each mask is sampled only inside a window around its box (outside it the mmdet paste is exactly
//! 0), in chunks of equal window size, so 1000 masks on a 520×704 image never need a full-image
//! tensor per mask. Boxes of zero width or height give empty masks (mmdet would smear the central
//! row or column across the image).

use cellseg_core::ImageSize;
use tch::{Kind, Tensor};

/// Elements of one chunk of pasted windows.
const CHUNK_ELEMENTS: i64 = 1 << 24;

/// A pasted window: `(top, left, height, width)` in the image.
pub type Rect = (usize, usize, usize, usize);

/// A pasted mask: its window and the row-major probabilities inside it.
pub type PastedWindow = (Rect, Vec<f32>);

/// Pixel window `[lo, hi)` of one axis outside which the pasted mask is 0.
fn window(a0: f32, a1: f32, m: i64, size: usize) -> (usize, usize) {
    let ext = (a1 - a0) / m as f32 + 1.5;
    let lo = ((a0 - ext).floor().max(0.0) as usize).min(size);
    let hi = ((a1 + ext).ceil().max(0.0) as usize).min(size);
    (lo, hi.max(lo))
}

/// Pastes `probs` `[N, M, M]` (probabilities) into boxes `[N, 4]` of an image of `size`:
/// per mask, the soft window values `[h * w]` and its rectangle.
pub fn paste_soft(probs: &Tensor, boxes: &Tensor, size: ImageSize) -> Vec<PastedWindow> {
    let n = probs.size()[0];
    let m = probs.size()[1];
    let dev = probs.device();
    let bx =
        Vec::<f32>::try_from(crate::transfers::download(&boxes.to_kind(Kind::Float)).reshape([-1]))
            .expect("a float32 tensor converts to Vec<f32>");
    let rects: Vec<Rect> = bx
        .chunks(4)
        .map(|b| {
            if !(b[2] > b[0] && b[3] > b[1]) {
                return (0, 0, 0, 0);
            }
            let (x0, x1) = window(b[0], b[2], m, size.width);
            let (y0, y1) = window(b[1], b[3], m, size.height);
            (y0, x0, y1 - y0, x1 - x0)
        })
        .collect();
    let mut out: Vec<PastedWindow> = Vec::with_capacity(n as usize);
    let mut s = 0usize;
    while s < n as usize {
        // Grow the chunk while the padded window fits the budget.
        let (mut hm, mut wm, mut e) = (1usize, 1usize, s);
        while e < n as usize {
            let (nh, nw) = (hm.max(rects[e].2), wm.max(rects[e].3));
            if e > s && ((e - s + 1) * nh * nw) as i64 > CHUNK_ELEMENTS {
                break;
            }
            (hm, wm) = (nh, nw);
            e += 1;
        }
        let k = (e - s) as i64;
        let opts = (Kind::Float, dev);
        let sel = |j: usize| {
            crate::transfers::upload(
                &Tensor::from_slice(&bx[s * 4..e * 4]).view([k, 4]).select(1, j as i64),
                dev,
            )
        };
        let (x0, y0, x1, y1) = (sel(0), sel(1), sel(2), sel(3));
        let left: Vec<f32> = rects[s..e].iter().map(|r| r.1 as f32).collect();
        let top: Vec<f32> = rects[s..e].iter().map(|r| r.0 as f32).collect();
        let left = crate::transfers::upload(&Tensor::from_slice(&left), dev);
        let top = crate::transfers::upload(&Tensor::from_slice(&top), dev);
        let px = left.unsqueeze(1) + Tensor::arange(wm as i64, opts).unsqueeze(0) + 0.5;
        let py = top.unsqueeze(1) + Tensor::arange(hm as i64, opts).unsqueeze(0) + 0.5;
        let gx = (px - x0.unsqueeze(1)) / (&x1 - &x0).unsqueeze(1) * 2.0 - 1.0;
        let gy = (py - y0.unsqueeze(1)) / (&y1 - &y0).unsqueeze(1) * 2.0 - 1.0;
        let gx = gx.nan_to_num(0.0, 0.0, 0.0);
        let gy = gy.nan_to_num(0.0, 0.0, 0.0);
        let grid = crate::ops::roi_align::grid_from(&gx, &gy);
        let pasted = probs
            .slice(0, s as i64, e as i64, 1)
            .unsqueeze(1)
            .to_kind(Kind::Float)
            .grid_sampler_2d(&grid, 0, 0, false)
            .squeeze_dim(1);
        let flat = Vec::<f32>::try_from(crate::transfers::download(&pasted).reshape([-1]))
            .expect("a float32 tensor converts to Vec<f32>");
        for (i, r) in rects[s..e].iter().enumerate() {
            let base = i * hm * wm;
            let mut v = Vec::with_capacity(r.2 * r.3);
            for row in 0..r.2 {
                v.extend_from_slice(&flat[base + row * wm..base + row * wm + r.3]);
            }
            out.push((*r, v));
        }
        s = e;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// mmdet `_do_paste_mask` on the whole image, one mask at a time.
    fn full_paste(mask: &Tensor, b: [f32; 4], h: i64, w: i64) -> Tensor {
        let opts = (Kind::Float, Device::Cpu);
        let ix = ((Tensor::arange(w, opts) + 0.5) - b[0] as f64) / (b[2] - b[0]) as f64 * 2.0 - 1.0;
        let iy = ((Tensor::arange(h, opts) + 0.5) - b[1] as f64) / (b[3] - b[1]) as f64 * 2.0 - 1.0;
        let grid = crate::ops::roi_align::grid_from(&ix.unsqueeze(0), &iy.unsqueeze(0));
        mask.view([1, 1, 28, 28]).grid_sampler_2d(&grid, 0, 0, false).view([h, w])
    }

    #[test]
    fn windows_equal_full_image_paste() {
        tch::manual_seed(2);
        let probs = Tensor::rand([4, 28, 28], (Kind::Float, Device::Cpu));
        let bx = [
            [3.2f32, 4.7, 20.1, 30.9],
            [-5.0, -3.0, 10.0, 8.0],
            [50.0, 40.0, 64.0, 48.0],
            [30.5, 2.0, 31.0, 60.0],
        ];
        let boxes = Tensor::from_slice(bx.as_flattened()).view([4, 4]);
        let size = ImageSize::new(48, 64);
        let got = paste_soft(&probs, &boxes, size);
        for (i, ((t, l, hh, ww), v)) in got.iter().enumerate() {
            let full = full_paste(&probs.get(i as i64), bx[i], 48, 64);
            let inside = full.zeros_like();
            inside
                .slice(0, *t as i64, (*t + *hh) as i64, 1)
                .slice(1, *l as i64, (*l + *ww) as i64, 1)
                .copy_(&Tensor::from_slice(v).view([*hh as i64, *ww as i64]));
            let err = f64::try_from((full - inside).abs().max()).unwrap();
            assert!(err < 1e-6, "mask {i}: {err}");
        }
        assert_eq!(got.len(), 4);
    }
}
