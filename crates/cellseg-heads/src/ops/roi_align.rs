//! RoIAlign and the multi-level RoI extractor (mmdet `SingleRoIExtractor`).
//!
//! On the CPU (float32 / float64) RoIAlign is our own kernel (`csrc/roi_align.cpp`, a libtorch
//! autograd function): one call pools every RoI from its level, parallel over RoIs forward and
//! over channels backward (libtorch's intra-op threads), with results that do not depend on the
//! thread count. On other devices it is built from libtorch ops (`grid_sample` + validity mask +
//! `avg_pool2d`), described below. Both equal `torchvision.ops.roi_align` (tests/it/parity.rs).
//!
//! Semantics of mmcv 1.3.17 / `torchvision.ops.roi_align`: with `aligned`, `start = x1 * scale - 0.5`
//! and the RoI size is not clamped; without, `start = x1 * scale` and the size is clamped to ≥ 1.
//! Each of the P×P bins averages a `gh × gw` grid of bilinear samples at
//! `start + p * bin + (i + 0.5) * bin / g`; `g = ceil(roi / P)` (adaptive, `sampling_ratio = 0`) or
//! the fixed ratio. A sample outside `[-1, H] × [-1, W]` is 0, otherwise its coordinates are clamped
//! to `[0, H-1] × [0, W-1]`. RoIs are grouped by level and `(gh, gw)`; each group is one `grid_sample` over
//! the images stacked into one tall image (never replicated per RoI). Differentiable in the features; the
//! RoIs get no gradient (as in torchvision). Runs on any device.

use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

/// RoIAlign settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoiAlignConfig {
    /// Output size P (P×P).
    pub output_size: i64,
    /// Samples per bin side; 0 = adaptive `ceil(roi/P)` (mmcv default).
    pub sampling_ratio: i64,
    /// Half-pixel alignment (mmcv: true; torchvision's MultiScaleRoIAlign: false).
    pub aligned: bool,
    /// `finest_scale` of the level mapper (56).
    pub finest_scale: f64,
    /// Strides of the pooled levels (seed: 2, 4, 8, 16).
    pub featmap_strides: Vec<u32>,
}

impl Default for RoiAlignConfig {
    fn default() -> Self {
        Self {
            output_size: 7,
            sampling_ratio: 0,
            aligned: true,
            finest_scale: 56.0,
            featmap_strides: vec![2, 4, 8, 16],
        }
    }
}

thread_local! {
    /// Whether this thread runs the libtorch-ops construction on the CPU too ([`with_libtorch_ops`]).
    static LIBTORCH_OPS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every RoIAlign of this thread built from libtorch ops, as on devices other than
/// the CPU, instead of the CPU kernel: for benchmarks and tests that measure what a GPU step
/// does (its host transfers, its speed against the kernel). Nests; other threads are unaffected.
pub fn with_libtorch_ops<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LIBTORCH_OPS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(LIBTORCH_OPS.with(|c| c.replace(true)));
    f()
}

/// Upper bound on the elements of one `grid_sample` output (memory cap per call).
const MAX_SAMPLE_ELEMENTS: i64 = 1 << 24;

/// Sample coordinates of a set of RoIs along one axis.
#[derive(Debug)]
pub(crate) struct AxisSamples {
    /// `[n, P * g]` coordinates, clamped to `[0, size - 1]`.
    pub coords: Tensor,
    /// `[n, P * g]` whether the raw coordinate lies in `[-1, size]`.
    pub valid: Tensor,
}

/// Sample positions along one axis for RoIs with starts `start` `[n]` and bin sizes `bin` `[n]`.
pub(crate) fn axis_samples(start: &Tensor, bin: &Tensor, p: i64, g: i64, size: i64) -> AxisSamples {
    let j = Tensor::arange(p * g, (Kind::Int64, start.device()));
    let pj = j.divide_scalar_mode(g, "floor").to_kind(Kind::Float);
    let ij = j.remainder(g).to_kind(Kind::Float) + 0.5;
    let bin = bin.unsqueeze(1);
    // torchvision: start + ph * bin + (iy + .5) * bin / grid
    let raw = start.unsqueeze(1) + &bin * pj.unsqueeze(0) + ij.unsqueeze(0) * &bin / (g as f64);
    let valid = raw.ge(-1.0).logical_and(&raw.le(size as f64));
    let coords = raw.clamp(0.0, (size - 1).max(0) as f64);
    AxisSamples { coords, valid }
}

/// Normalises clamped pixel coordinates for `grid_sample(align_corners = false)`.
pub(crate) fn normalise(c: &Tensor, size: i64) -> Tensor {
    (c * 2.0 + 1.0) / (size as f64) - 1.0
}

/// Builds the `[n, PH, PW, 2]` grid from per-axis normalised coordinates `[n, PH]`, `[n, PW]`.
pub(crate) fn grid_from(xn: &Tensor, yn: &Tensor) -> Tensor {
    let n = xn.size()[0];
    let (ph, pw) = (yn.size()[1], xn.size()[1]);
    let gx = xn.unsqueeze(1).expand([n, ph, pw], false);
    let gy = yn.unsqueeze(2).expand([n, ph, pw], false);
    Tensor::stack(&[gx, gy], 3)
}

/// RoIAlign of `rois` `[R, 5]` = `(batch_idx, x1, y1, x2, y2)` (input pixels) over `features`
/// `[B, C, H, W]`: `[R, C, P, P]`.
///
/// `sampling_ratio = 0` is adaptive. Equals `torchvision.ops.roi_align` with the same arguments.
pub fn roi_align(
    features: &Tensor,
    rois: &Tensor,
    output_size: i64,
    spatial_scale: f64,
    sampling_ratio: i64,
    aligned: bool,
) -> Tensor {
    let level = Tensor::zeros([rois.size()[0]], (Kind::Int64, rois.device()));
    roi_align_levels(
        &[features],
        &[spatial_scale],
        rois,
        &level,
        output_size,
        sampling_ratio,
        aligned,
    )
}

/// RoIAlign of every RoI `r` of `rois` `[R, 5]` over `levels[level[r]]` at
/// `scales[level[r]]` (`level` `[R]` int64, in range): `[R, C, P, P]`, each row equal to
/// [`roi_align`] of that RoI on its level: the CPU kernel for float CPU features (no host
/// synchronisation), else [`roi_align_levels_grid`].
fn roi_align_levels(
    levels: &[&Tensor],
    scales: &[f64],
    rois: &Tensor,
    level: &Tensor,
    output_size: i64,
    sampling_ratio: i64,
    aligned: bool,
) -> Tensor {
    let on_cpu = levels.iter().all(|l| l.device() == Device::Cpu);
    let kernel = !LIBTORCH_OPS.with(Cell::get);
    if kernel && on_cpu && matches!(levels[0].kind(), Kind::Float | Kind::Double) {
        let (rois, level) = (rois.detach(), level.to_kind(Kind::Int64));
        return crate::ops::roi_align_cpu::roi_align_levels(
            levels,
            scales,
            &rois,
            &level,
            output_size,
            sampling_ratio,
            aligned,
        )
        .unwrap();
    }
    roi_align_levels_grid(levels, scales, rois, level, output_size, sampling_ratio, aligned)
}

/// [`roi_align_levels`] from libtorch ops (any device).
///
/// Two host synchronisations whatever the number of RoIs, levels and grid sizes: one download of
/// every RoI's level, image and grid size, and one upload of the rows of every group (RoIs of one
/// level and one grid size, pooled by one `grid_sample`) with the order that puts the results
/// back.
fn roi_align_levels_grid(
    levels: &[&Tensor],
    scales: &[f64],
    rois: &Tensor,
    level: &Tensor,
    output_size: i64,
    sampling_ratio: i64,
    aligned: bool,
) -> Tensor {
    let c = levels[0].size()[1];
    let p = output_size;
    let dev = levels[0].device();
    let r = rois.size()[0];
    let kind = levels[0].kind();
    if r == 0 {
        return Tensor::zeros([0, c, p, p], (kind, dev));
    }
    let rois = rois.detach().to_kind(Kind::Float);
    // Every RoI's scale, without a host copy (the scalars are float32 as in a tensor-scalar op).
    let mut scale = Tensor::full([r], scales[0], (Kind::Float, dev));
    for (l, &sc) in scales.iter().enumerate().skip(1) {
        scale = scale.masked_fill(&level.eq(l as i64), sc);
    }
    let offset = if aligned { 0.5 } else { 0.0 };
    let x1 = rois.select(1, 1) * &scale - offset;
    let y1 = rois.select(1, 2) * &scale - offset;
    let x2 = rois.select(1, 3) * &scale - offset;
    let y2 = rois.select(1, 4) * &scale - offset;
    let (mut rw, mut rh) = (&x2 - &x1, &y2 - &y1);
    if !aligned {
        rw = rw.clamp_min(1.0);
        rh = rh.clamp_min(1.0);
    }
    let bin_w = &rw / (p as f64);
    let bin_h = &rh / (p as f64);
    let (gh, gw) = if sampling_ratio > 0 {
        (
            Tensor::full([r], sampling_ratio, (Kind::Float, dev)),
            Tensor::full([r], sampling_ratio, (Kind::Float, dev)),
        )
    } else {
        (bin_h.ceil(), bin_w.ceil())
    };
    // 1. One download: level, image and grid size of every RoI.
    let meta = crate::transfers::download(
        &Tensor::stack(&[level.to_kind(Kind::Float), rois.select(1, 0), gh, gw], 1)
            .to_kind(Kind::Int64),
    );
    let meta = Vec::<i64>::try_from(meta.reshape([-1])).expect("an int64 CPU tensor converts");
    // 2. Groups by (level, grid size) across images: each level's images are stacked into one
    // tall image `[1, C, B * (H + 1), W]`, each followed by a zero row, and a RoI's rows are
    // offset by its image's start. Coordinates are clamped to the RoI's own image first, so a
    // bilinear sample never reaches the next image (at row H - 1 its lower neighbour weight is
    // 0, and that neighbour is the zero row). One `grid_sample` per group.
    let mut groups: BTreeMap<(usize, i64, i64), Vec<i64>> = BTreeMap::new();
    let mut empty = Vec::new();
    for (i, m) in meta.chunks(4).enumerate() {
        let (l, b, gy, gx) = (m[0] as usize, m[1], m[2].max(0), m[3].max(0));
        let bsz = levels[l].size()[0];
        if gy == 0 || gx == 0 || b < 0 || b >= bsz {
            empty.push(i as i64);
        } else {
            groups.entry((l, gy, gx)).or_default().push(i as i64);
        }
    }
    // 3. One upload: the rows in group order (the empty ones first), then where each RoI went.
    let mut order: Vec<i64> = Vec::with_capacity(2 * r as usize);
    order.extend_from_slice(&empty);
    for members in groups.values() {
        order.extend_from_slice(members);
    }
    let mut back = vec![0i64; r as usize];
    for (pos, &i) in order.iter().enumerate() {
        back[i as usize] = pos as i64;
    }
    order.extend_from_slice(&back);
    let order = crate::transfers::upload(&Tensor::from_slice(&order), dev);
    let back = order.narrow(0, r, r);
    let mut out_parts = Vec::new();
    if !empty.is_empty() {
        out_parts.push(Tensor::zeros([empty.len() as i64, c, p, p], (kind, dev)));
    }
    let mut tall: Vec<Option<(Tensor, i64)>> = (0..levels.len()).map(|_| None).collect();
    let mut at = empty.len() as i64;
    for ((l, gy, gx), members) in &groups {
        let (gy, gx) = (*gy, *gx);
        let features = levels[*l];
        let (bsz, h, w) = {
            let s = features.size();
            (s[0], s[2], s[3])
        };
        let (image, hp) = &*tall[*l].get_or_insert_with(|| {
            if bsz == 1 {
                (features.shallow_clone(), h)
            } else {
                let t = features.constant_pad_nd([0, 0, 0, 1]).permute([1, 0, 2, 3]).reshape([
                    1,
                    c,
                    bsz * (h + 1),
                    w,
                ]);
                (t, h + 1)
            }
        });
        let n_all = members.len() as i64;
        let idx_all = order.narrow(0, at, n_all);
        at += n_all;
        let per_roi = c * p * gy * p * gx;
        let step = (MAX_SAMPLE_ELEMENTS / per_roi).max(1);
        let mut s = 0;
        while s < n_all {
            let e = (s + step).min(n_all);
            let idx = idx_all.slice(0, s, e, 1);
            let n = e - s;
            let ys =
                axis_samples(&y1.index_select(0, &idx), &bin_h.index_select(0, &idx), p, gy, h);
            let xs =
                axis_samples(&x1.index_select(0, &idx), &bin_w.index_select(0, &idx), p, gx, w);
            let row0 = rois.select(1, 0).index_select(0, &idx) * (*hp as f64);
            let rows = &ys.coords + row0.unsqueeze(1);
            let grid = grid_from(&normalise(&xs.coords, w), &normalise(&rows, bsz * *hp))
                .reshape([1, n * p * gy, p * gx, 2])
                .to_kind(kind);
            // bilinear (0), border padding (1): clamped coordinates are sampled exactly.
            let sampled = image
                .grid_sampler_2d(&grid, 0, 1, false)
                .view([c, n, p * gy, p * gx])
                .permute([1, 0, 2, 3]);
            let valid = ys
                .valid
                .unsqueeze(2)
                .logical_and(&xs.valid.unsqueeze(1))
                .unsqueeze(1)
                .to_kind(kind);
            let pooled =
                (sampled * valid).avg_pool2d([gy, gx], [gy, gx], [0, 0], false, true, None::<i64>);
            out_parts.push(pooled);
            s = e;
        }
    }
    Tensor::cat(&out_parts, 0).index_select(0, &back)
}

/// Maps RoIs to pyramid levels: `floor(log2(sqrt(w * h) / finest_scale + 1e-6))` clamped to
/// `[0, num_levels - 1]` (mmdet `SingleRoIExtractor.map_roi_levels`). `rois` is `[R, 5]`.
pub fn map_roi_levels(rois: &Tensor, num_levels: i64, finest_scale: f64) -> Tensor {
    let scale =
        ((rois.select(1, 3) - rois.select(1, 1)) * (rois.select(1, 4) - rois.select(1, 2))).sqrt();
    (scale / finest_scale + 1e-6)
        .log2()
        .floor()
        .clamp(0.0, (num_levels - 1) as f64)
        .to_kind(Kind::Int64)
}

/// Multi-level RoI extractor: each RoI is pooled from the level chosen by [`map_roi_levels`].
#[derive(Debug, Clone)]
pub struct RoiExtractor {
    cfg: RoiAlignConfig,
}

impl RoiExtractor {
    /// An extractor for `cfg`.
    pub fn new(cfg: &RoiAlignConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// Output side P.
    pub fn output_size(&self) -> i64 {
        self.cfg.output_size
    }

    /// Pools `rois` `[R, 5]` from `feats` (levels high → low resolution; only the first
    /// `featmap_strides.len()` are used): `[R, C, P, P]`.
    pub fn forward(&self, feats: &[Tensor], rois: &Tensor) -> Tensor {
        let nl = self.cfg.featmap_strides.len() as i64;
        let p = self.cfg.output_size;
        let c = feats[0].size()[1];
        if rois.size()[0] == 0 {
            return Tensor::zeros([0, c, p, p], (feats[0].kind(), feats[0].device()));
        }
        let lvl = if nl == 1 {
            Tensor::zeros([rois.size()[0]], (Kind::Int64, rois.device()))
        } else {
            map_roi_levels(rois, nl, self.cfg.finest_scale)
        };
        let levels: Vec<&Tensor> = feats.iter().take(nl as usize).collect();
        let scales: Vec<f64> =
            self.cfg.featmap_strides.iter().map(|&s| 1.0 / f64::from(s)).collect();
        roi_align_levels(&levels, &scales, rois, &lvl, p, self.cfg.sampling_ratio, self.cfg.aligned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Naive scalar RoIAlign (torchvision's CPU kernel, written from its documented arithmetic).
    #[allow(clippy::too_many_arguments)]
    fn naive(
        f: &[f32],
        h: usize,
        w: usize,
        roi: [f32; 4],
        p: usize,
        scale: f32,
        sr: i64,
        aligned: bool,
    ) -> Vec<f32> {
        let off = if aligned { 0.5 } else { 0.0 };
        let (x1, y1) = (roi[0] * scale - off, roi[1] * scale - off);
        let (x2, y2) = (roi[2] * scale - off, roi[3] * scale - off);
        let (mut rw, mut rh) = (x2 - x1, y2 - y1);
        if !aligned {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bw, bh) = (rw / p as f32, rh / p as f32);
        let gh = if sr > 0 { sr as usize } else { bh.ceil().max(0.0) as usize };
        let gw = if sr > 0 { sr as usize } else { bw.ceil().max(0.0) as usize };
        let bil = |mut y: f32, mut x: f32| -> f32 {
            if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
                return 0.0;
            }
            y = y.max(0.0);
            x = x.max(0.0);
            let (mut yl, mut xl) = (y as usize, x as usize);
            let (yh, xh);
            if yl >= h - 1 {
                yl = h - 1;
                yh = h - 1;
                y = yl as f32;
            } else {
                yh = yl + 1;
            }
            if xl >= w - 1 {
                xl = w - 1;
                xh = w - 1;
                x = xl as f32;
            } else {
                xh = xl + 1;
            }
            let (ly, lx) = (y - yl as f32, x - xl as f32);
            let (hy, hx) = (1.0 - ly, 1.0 - lx);
            hy * hx * f[yl * w + xl]
                + hy * lx * f[yl * w + xh]
                + ly * hx * f[yh * w + xl]
                + ly * lx * f[yh * w + xh]
        };
        let mut out = vec![0.0; p * p];
        for ph in 0..p {
            for pw in 0..p {
                let mut s = 0.0;
                for iy in 0..gh {
                    let y = y1 + ph as f32 * bh + (iy as f32 + 0.5) * bh / gh as f32;
                    for ix in 0..gw {
                        let x = x1 + pw as f32 * bw + (ix as f32 + 0.5) * bw / gw as f32;
                        s += bil(y, x);
                    }
                }
                out[ph * p + pw] = s / ((gh * gw).max(1) as f32);
            }
        }
        out
    }

    /// Both implementations on one level: the CPU kernel ([`roi_align`]) and the libtorch-ops
    /// construction (the path of other devices).
    fn both(f: &Tensor, rois: &Tensor, p: i64, scale: f64, sr: i64, aligned: bool) -> [Tensor; 2] {
        let level = Tensor::zeros([rois.size()[0]], (Kind::Int64, Device::Cpu));
        [
            roi_align(f, rois, p, scale, sr, aligned),
            roi_align_levels_grid(&[f], &[scale], rois, &level, p, sr, aligned),
        ]
    }

    #[test]
    fn matches_naive_kernel_on_edge_cases() {
        tch::manual_seed(1);
        let (h, w) = (9usize, 11usize);
        let f = Tensor::randn([1, 1, h as i64, w as i64], (Kind::Float, Device::Cpu));
        let fv = Vec::<f32>::try_from(f.reshape([-1])).unwrap();
        let rois: Vec<[f32; 4]> = vec![
            [2.0, 3.0, 14.0, 12.0],
            [-5.0, -4.0, 6.0, 3.0],
            [20.0, 1.0, 30.0, 9.0],
            [30.0, 30.0, 40.0, 44.0],
            [4.3, 4.1, 4.6, 4.2],
            [7.0, 7.0, 7.0, 7.0],
            [0.0, 0.0, 22.0, 18.0],
        ];
        let flat: Vec<f32> = rois.iter().flat_map(|r| [0.0, r[0], r[1], r[2], r[3]]).collect();
        let rt = Tensor::from_slice(&flat).view([-1, 5]);
        for (sr, aligned) in [(0, true), (0, false), (2, true), (2, false)] {
            for got in both(&f, &rt, 3, 0.5, sr, aligned) {
                for (i, roi) in rois.iter().enumerate() {
                    let g = Vec::<f32>::try_from(got.get(i as i64).reshape([-1])).unwrap();
                    let n = naive(&fv, h, w, *roi, 3, 0.5, sr, aligned);
                    for (a, b) in g.iter().zip(&n) {
                        assert!(
                            (a - b).abs() < 1e-4,
                            "sr {sr} aligned {aligned} roi {roi:?}: {g:?} vs {n:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn batched_images_never_mix() {
        // Three images whose values differ wildly, RoIs touching every border: each RoI must see
        // only its own image (the tall-image stacking must not leak across image boundaries).
        tch::manual_seed(2);
        let (b, h, w) = (3usize, 6usize, 7usize);
        let f = Tensor::randn([b as i64, 2, h as i64, w as i64], (Kind::Float, Device::Cpu))
            + Tensor::from_slice(&[0f32, 1000.0, -1000.0]).view([3, 1, 1, 1]);
        let rois: Vec<(usize, [f32; 4])> = vec![
            (0, [0.0, 8.0, 14.0, 12.0]),
            (1, [-3.0, -3.0, 14.0, 12.0]),
            (1, [2.0, 10.0, 9.0, 13.0]),
            (2, [0.0, 0.0, 3.0, 2.0]),
            (0, [1.0, 11.5, 13.0, 14.0]),
            (2, [5.0, 9.0, 16.0, 20.0]),
        ];
        let flat: Vec<f32> =
            rois.iter().flat_map(|(i, r)| [*i as f32, r[0], r[1], r[2], r[3]]).collect();
        let rt = Tensor::from_slice(&flat).view([-1, 5]);
        for (sr, aligned) in [(0, true), (0, false), (2, true)] {
            for got in both(&f, &rt, 3, 0.5, sr, aligned) {
                for (k, (i, roi)) in rois.iter().enumerate() {
                    for ch in 0..2 {
                        let fv =
                            Vec::<f32>::try_from(f.get(*i as i64).get(ch).reshape([-1])).unwrap();
                        let n = naive(&fv, h, w, *roi, 3, 0.5, sr, aligned);
                        let g =
                            Vec::<f32>::try_from(got.get(k as i64).get(ch).reshape([-1])).unwrap();
                        for (a, e) in g.iter().zip(&n) {
                            assert!((a - e).abs() < 1e-3, "roi {k} ch {ch}: {g:?} vs {n:?}");
                        }
                    }
                }
            }
        }
    }

    /// Random multi-level RoIs (some outside, some on a missing image, some inverted).
    fn pyramid(seed: i64, kind: Kind) -> (Vec<Tensor>, Tensor) {
        tch::manual_seed(seed);
        let opts = (kind, Device::Cpu);
        let levels: Vec<Tensor> = [(24, 30), (12, 15), (6, 8)]
            .iter()
            .map(|&(h, w)| Tensor::randn([2, 5, h, w], opts))
            .collect();
        let n = 60;
        let xy = Tensor::rand([n, 2], opts) * 70.0 - 10.0;
        let wh = Tensor::rand([n, 2], opts) * 60.0 - 5.0;
        let img = Tensor::randint(3, [n, 1], opts); // image 2 does not exist
        let rois = Tensor::cat(&[img, xy.shallow_clone(), &xy + wh], 1);
        (levels, rois)
    }

    #[test]
    fn kernel_equals_the_grid_construction_over_levels_with_gradients() {
        for kind in [Kind::Float, Kind::Double] {
            let (levels, rois) = pyramid(3, kind);
            let level = Tensor::randint(3, [rois.size()[0]], (Kind::Int64, Device::Cpu));
            let weights = Tensor::randn([rois.size()[0], 5, 7, 7], (kind, Device::Cpu));
            let mut results = Vec::new();
            for grid in [false, true] {
                let leaves: Vec<Tensor> =
                    levels.iter().map(|l| l.copy().set_requires_grad(true)).collect();
                let refs: Vec<&Tensor> = leaves.iter().collect();
                let scales = [1.0 / 2.0, 1.0 / 4.0, 1.0 / 8.0];
                let out = if grid {
                    roi_align_levels_grid(&refs, &scales, &rois, &level, 7, 0, true)
                } else {
                    roi_align_levels(&refs, &scales, &rois, &level, 7, 0, true)
                };
                (&out * &weights).sum(kind).backward();
                let grads: Vec<Tensor> = leaves.iter().map(Tensor::grad).collect();
                results.push((out, grads));
            }
            // The grid construction computes its sample coordinates in float32 for both dtypes
            // (measured: 6e-6 in float64), the kernel in the features' dtype.
            let tol = 1e-4;
            let diff = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap();
            let (out_k, grads_k) = &results[0];
            let (out_g, grads_g) = &results[1];
            assert!(diff(out_k, out_g) < tol, "{kind:?} output: {}", diff(out_k, out_g));
            for (l, (a, b)) in grads_k.iter().zip(grads_g).enumerate() {
                assert!(diff(a, b) < tol, "{kind:?} gradient of level {l}: {}", diff(a, b));
                assert!(
                    f64::try_from(a.abs().sum(Kind::Double)).unwrap() > 1.0,
                    "level {l} got no gradient"
                );
            }
        }
    }

    #[test]
    fn kernel_results_do_not_depend_on_the_thread_count() {
        let (levels, rois) = pyramid(4, Kind::Float);
        let level = Tensor::randint(3, [rois.size()[0]], (Kind::Int64, Device::Cpu));
        let scales = [0.5, 0.25, 0.125];
        let run = |threads: i32| {
            let before = tch::get_num_threads();
            tch::set_num_threads(threads);
            let leaves: Vec<Tensor> =
                levels.iter().map(|l| l.copy().set_requires_grad(true)).collect();
            let refs: Vec<&Tensor> = leaves.iter().collect();
            let out = roi_align_levels(&refs, &scales, &rois, &level, 7, 0, true);
            out.sum(Kind::Float).backward();
            tch::set_num_threads(before);
            (out, leaves.iter().map(Tensor::grad).collect::<Vec<_>>())
        };
        let (o1, g1) = run(1);
        let (o4, g4) = run(4);
        assert!(o1.equal(&o4), "forward differs between 1 and 4 threads");
        for (a, b) in g1.iter().zip(&g4) {
            assert!(a.equal(b), "gradient differs between 1 and 4 threads");
        }
    }

    #[test]
    fn kernel_errors_name_the_shapes() {
        let f = Tensor::zeros([1, 2, 4, 4], (Kind::Float, Device::Cpu));
        let bad = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
        let level = Tensor::zeros([3], (Kind::Int64, Device::Cpu));
        let err =
            crate::ops::roi_align_cpu::roi_align_levels(&[&f], &[1.0], &bad, &level, 7, 0, true)
                .unwrap_err();
        assert!(err.to_string().contains("[R, 5]") && err.to_string().contains("[3, 4]"), "{err}");
    }

    #[test]
    fn level_mapping_buckets() {
        let r = Tensor::from_slice(&[
            0f32, 0., 0., 111., 111., 0., 0., 0., 112., 112., 0., 0., 0., 500., 500.,
        ])
        .view([-1, 5]);
        assert_eq!(Vec::<i64>::try_from(map_roi_levels(&r, 4, 56.0)).unwrap(), vec![0, 1, 3]);
    }
}
