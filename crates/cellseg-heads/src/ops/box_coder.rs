//! `DeltaXYWHBBoxCoder` (mmdet 2.17 `core/bbox/coder/delta_xywh_bbox_coder.py`).
//!
//! `encode`: `[(gx-px)/pw, (gy-py)/ph, log(gw/pw), log(gh/ph)]`, then `(d - means) / stds`.
//! `decode`: `d * stds + means`, `dw, dh` clamped (both sides, `±|log(16/1000)|`, or max only for
//! torchvision), then optionally clipped to `[0, W] × [0, H]` of the unpadded image.

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// How `dw`, `dh` are clamped when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaClamp {
    /// Clamp to `±|log(16/1000)|` (mmdet `wh_ratio_clip`).
    BothSides,
    /// Clamp only from above at `log(1000/16)` (torchvision).
    MaxOnly,
}

/// Delta box coder (mmdet `DeltaXYWHBBoxCoder`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoxCoderConfig {
    /// Means subtracted from the deltas.
    pub means: [f64; 4],
    /// Stds dividing the deltas (torchvision's weights are `1/stds`).
    pub stds: [f64; 4],
    /// Clamp rule for `dw`, `dh`.
    pub clamp: DeltaClamp,
}

impl Default for BoxCoderConfig {
    fn default() -> Self {
        Self { means: [0.0; 4], stds: [1.0; 4], clamp: DeltaClamp::BothSides }
    }
}

/// `|log(16 / 1000)|`, the mmdet `wh_ratio_clip` bound (= torchvision's `bbox_xform_clip`).
pub const WH_CLAMP: f64 = 4.135_166_556_742_356;

/// Delta box coder.
#[derive(Debug, Clone)]
pub struct BoxCoder {
    cfg: BoxCoderConfig,
}

impl BoxCoder {
    /// A coder for `cfg`.
    pub fn new(cfg: &BoxCoderConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// `[4]` float32 on the device of `like`, filled there: a host-to-device copy would
    /// synchronise the CUDA stream at every encode/decode.
    fn vec4(&self, v: [f64; 4], like: &Tensor) -> Tensor {
        let t = Tensor::empty([4], (tch::Kind::Float, like.device()));
        for (i, x) in v.into_iter().enumerate() {
            let _ = t.get(i as i64).fill_(x);
        }
        t
    }

    /// Deltas `[N, 4]` taking `boxes` `[N, 4]` to `targets` `[N, 4]` (float32, xyxy).
    pub fn encode(&self, boxes: &Tensor, targets: &Tensor) -> Tensor {
        let (px, py, pw, ph) = centres(boxes);
        let (gx, gy, gw, gh) = centres(targets);
        let d = Tensor::stack(
            &[(&gx - &px) / &pw, (&gy - &py) / &ph, (gw / &pw).log(), (gh / &ph).log()],
            1,
        );
        (d - self.vec4(self.cfg.means, boxes)) / self.vec4(self.cfg.stds, boxes)
    }

    /// Boxes `[N, 4]` from `boxes` `[N, 4]` and `deltas` `[N, 4]`; `max_shape = (H, W)` clips.
    ///
    /// `deltas` may also be `[N, 4k]` (class-specific): each group of 4 is decoded against the same
    /// box, giving `[N, 4k]`.
    pub fn decode(&self, boxes: &Tensor, deltas: &Tensor, max_shape: Option<(i64, i64)>) -> Tensor {
        let n = deltas.size()[0];
        let k = deltas.size()[1] / 4;
        let d = deltas.view([n, k, 4]) * self.vec4(self.cfg.stds, deltas)
            + self.vec4(self.cfg.means, deltas);
        let (px, py, pw, ph) = centres(boxes);
        let (px, py, pw, ph) = (px.unsqueeze(1), py.unsqueeze(1), pw.unsqueeze(1), ph.unsqueeze(1));
        let dx = d.select(2, 0);
        let dy = d.select(2, 1);
        let (dw, dh) = match self.cfg.clamp {
            DeltaClamp::BothSides => (
                d.select(2, 2).clamp(-WH_CLAMP, WH_CLAMP),
                d.select(2, 3).clamp(-WH_CLAMP, WH_CLAMP),
            ),
            DeltaClamp::MaxOnly => {
                (d.select(2, 2).clamp_max(WH_CLAMP), d.select(2, 3).clamp_max(WH_CLAMP))
            }
        };
        let gw = &pw * dw.exp();
        let gh = &ph * dh.exp();
        let gx = &px + &pw * dx;
        let gy = &py + &ph * dy;
        let mut x1 = &gx - &gw * 0.5;
        let mut y1 = &gy - &gh * 0.5;
        let mut x2 = &gx + &gw * 0.5;
        let mut y2 = &gy + &gh * 0.5;
        if let Some((h, w)) = max_shape {
            let (h, w) = (h as f64, w as f64);
            x1 = x1.clamp(0.0, w);
            x2 = x2.clamp(0.0, w);
            y1 = y1.clamp(0.0, h);
            y2 = y2.clamp(0.0, h);
        }
        Tensor::stack(&[x1, y1, x2, y2], 2).view([n, 4 * k])
    }
}

/// `(cx, cy, w, h)` of xyxy boxes.
fn centres(b: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    let x1 = b.select(1, 0);
    let y1 = b.select(1, 1);
    let x2 = b.select(1, 2);
    let y2 = b.select(1, 3);
    ((&x1 + &x2) * 0.5, (&y1 + &y2) * 0.5, &x2 - &x1, &y2 - &y1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn decode_inverts_encode(
            x in 0f32..100.0, y in 0f32..100.0, w in 1f32..50.0, h in 1f32..50.0,
            gx in 0f32..100.0, gy in 0f32..100.0, gw in 1f32..50.0, gh in 1f32..50.0,
        ) {
            let coder = BoxCoder::new(&BoxCoderConfig { stds: [0.1, 0.1, 0.2, 0.2], ..Default::default() });
            let b = Tensor::from_slice(&[x, y, x + w, y + h]).view([1, 4]);
            let g = Tensor::from_slice(&[gx, gy, gx + gw, gy + gh]).view([1, 4]);
            let back = coder.decode(&b, &coder.encode(&b, &g), None);
            let err = f64::try_from((back - &g).abs().max()).unwrap();
            prop_assert!(err < 1e-3, "err {}", err);
        }
    }

    #[test]
    fn clamp_and_clip() {
        let both = BoxCoder::new(&BoxCoderConfig::default());
        let maxonly =
            BoxCoder::new(&BoxCoderConfig { clamp: DeltaClamp::MaxOnly, ..Default::default() });
        let b = Tensor::from_slice(&[10f32, 10.0, 20.0, 20.0]).view([1, 4]);
        let d = Tensor::from_slice(&[0f32, 0.0, -10.0, 10.0]).view([1, 4]);
        let v = Vec::<f32>::try_from(both.decode(&b, &d, None).view([-1])).unwrap();
        let w = 10.0 * (-WH_CLAMP as f32).exp();
        assert!((v[2] - v[0] - w).abs() < 1e-4);
        let v2 = Vec::<f32>::try_from(maxonly.decode(&b, &d, None).view([-1])).unwrap();
        assert!(v2[2] - v2[0] < w);
        let v3 = Vec::<f32>::try_from(both.decode(&b, &d, Some((30, 40))).view([-1])).unwrap();
        assert_eq!((v3[1], v3[3]), (0.0, 30.0));
    }
}
