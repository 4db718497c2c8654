//! Anchor generator with mmdet 2.x semantics (`core/anchor/anchor_generator.py`).
//!
//! Per level with stride `s`: `h_ratios = sqrt(ratios)`, `w_ratios = 1 / h_ratios`, widths
//! `s * w_ratio * scale` ordered ratio-major (ratio outer, scale inner), base anchors
//! `[-w/2, -h/2, w/2, h/2]` centred on 0 (`center_offset = 0`), no rounding unless
//! [`AnchorConfig::round_anchors`] (torchvision). The grid shifts are `arange(W) * s`, and anchors
//! are laid out `(H, W, A)` row-major, which is the order of the RPN outputs.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Anchor generator (mmdet `AnchorGenerator`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnchorConfig {
    /// One stride per RPN level, high → low resolution (seed: 2, 4, 8, 16, 32 with the stride-1 stem).
    pub strides: Vec<u32>,
    /// Anchor scales in units of the level stride (seed: `[8]`).
    pub scales: Vec<f64>,
    /// Aspect ratios h/w (seed: `[0.5, 1, 2]`).
    pub ratios: Vec<f64>,
    /// Round the base anchors to integers (torchvision: true; mmdet 2.x: false).
    pub round_anchors: bool,
}

impl Default for AnchorConfig {
    fn default() -> Self {
        Self {
            strides: vec![2, 4, 8, 16, 32], // seed: conv1 stride 1
            scales: vec![8.0],              // mmdet default
            ratios: vec![0.5, 1.0, 2.0],    // mmdet default
            round_anchors: false,           // mmdet 2.x
        }
    }
}

/// Generates the anchors of each level.
#[derive(Debug, Clone)]
pub struct AnchorGenerator {
    cfg: AnchorConfig,
}

impl AnchorGenerator {
    /// A generator for `cfg` (validated by [`crate::config::HeadsConfig::validate`]).
    pub fn new(cfg: &AnchorConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// Anchors per location (`ratios × scales`).
    pub fn num_base_anchors(&self) -> i64 {
        (self.cfg.ratios.len() * self.cfg.scales.len()) as i64
    }

    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.cfg.strides.len()
    }

    /// The `[A, 4]` base anchors of level `level` (float32 on `device`).
    pub fn base_anchors(&self, level: usize, device: Device) -> Tensor {
        let base = f64::from(self.cfg.strides[level]);
        let mut v = Vec::with_capacity(self.cfg.ratios.len() * self.cfg.scales.len() * 4);
        for &r in &self.cfg.ratios {
            // f32 arithmetic, like mmdet's float32 tensors.
            let h_ratio = (r as f32).sqrt();
            let w_ratio = 1.0 / h_ratio;
            for &s in &self.cfg.scales {
                let w = base as f32 * w_ratio * s as f32;
                let h = base as f32 * h_ratio * s as f32;
                let mut a = [-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h];
                if self.cfg.round_anchors {
                    for x in &mut a {
                        *x = x.round_ties_even();
                    }
                }
                v.extend_from_slice(&a);
            }
        }
        crate::transfers::upload(&Tensor::from_slice(&v).view([-1, 4]), device)
    }

    /// All anchors of level `level` for a `feat_h × feat_w` map: `[feat_h * feat_w * A, 4]`.
    pub fn grid_anchors(&self, level: usize, feat_h: i64, feat_w: i64, device: Device) -> Tensor {
        let stride = f64::from(self.cfg.strides[level]);
        let opts = (Kind::Float, device);
        let sx = Tensor::arange(feat_w, opts) * stride;
        let sy = Tensor::arange(feat_h, opts) * stride;
        let grid = Tensor::meshgrid_indexing(&[&sy, &sx], "ij");
        let (yy, xx) = (grid[0].reshape([-1]), grid[1].reshape([-1]));
        let shifts = Tensor::stack(&[&xx, &yy, &xx, &yy], 1);
        let base = self.base_anchors(level, device);
        (shifts.unsqueeze(1) + base.unsqueeze(0)).reshape([-1, 4])
    }

    /// Anchors of every level for the given feature sizes `(h, w)`.
    pub fn all_anchors(&self, sizes: &[(i64, i64)], device: Device) -> Vec<Tensor> {
        sizes.iter().enumerate().map(|(l, &(h, w))| self.grid_anchors(l, h, w, device)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.reshape([-1])).unwrap()
    }

    #[test]
    fn base_anchors_match_mmdet_numbers() {
        let g = AnchorGenerator::new(&AnchorConfig::default());
        let b = vals(&g.base_anchors(0, Device::Cpu));
        // stride 2, scale 8, ratio 0.5: w = 22.627, h = 11.314 (REFERENCE §1.2).
        assert!((b[2] - 11.3137).abs() < 1e-3, "{b:?}");
        assert!((b[3] - 5.6569).abs() < 1e-3, "{b:?}");
        // ratio 1: 16 x 16.
        assert_eq!(&b[4..8], &[-8.0, -8.0, 8.0, 8.0]);
        let rounded = AnchorGenerator::new(&AnchorConfig {
            strides: vec![4],
            round_anchors: true,
            ..AnchorConfig::default()
        });
        // torchvision: size 32, ratio 0.5 -> [-23, -11, 23, 11].
        assert_eq!(&vals(&rounded.base_anchors(0, Device::Cpu))[..4], &[-23.0, -11.0, 23.0, 11.0]);
    }

    #[test]
    fn grid_is_hwa_with_offset_zero() {
        let g = AnchorGenerator::new(&AnchorConfig::default());
        let a = g.grid_anchors(1, 2, 3, Device::Cpu);
        assert_eq!(a.size(), [2 * 3 * 3, 4]);
        let v = vals(&a);
        // location (y=0, x=1): anchors 3..6; the ratio-1 anchor (index 4) is centred at (4, 0).
        let r = &v[4 * 4..5 * 4];
        assert_eq!(((r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0), (4.0, 0.0));
        // location (y=1, x=0): anchor 9 + 1.
        let r = &v[10 * 4..11 * 4];
        assert_eq!(((r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0), (0.0, 4.0));
        // 256² crop with the seed's strides: 65 472 anchors (REFERENCE §1.2).
        let n: i64 = [128, 64, 32, 16, 8]
            .iter()
            .enumerate()
            .map(|(l, &s)| g.grid_anchors(l, s, s, Device::Cpu).size()[0])
            .sum();
        assert_eq!(n, 65_472);
    }
}
