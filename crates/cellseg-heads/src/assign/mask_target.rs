//! Mask targets (mmdet `mask_target` + `BitmapMasks.crop_and_resize`): each positive RoI, clipped
//! to the image, is RoIAligned (spatial scale 1, adaptive sampling, aligned) over its GT mask and
//! binarised at 0.5.
//!
//! GT masks are box-cropped ([`CroppedMask`]); each is sampled from a window with a 2-pixel zero
//! margin, with the validity and clamping rules of the full image, which gives the same numbers as
//! RoIAlign over the full-image bitmap without ever building one.

use std::collections::BTreeMap;

use cellseg_core::{CroppedMask, ImageSize};
use tch::{Device, Kind, Tensor};

use crate::ops::roi_align::{axis_samples, grid_from};

const MARGIN: usize = 2;

/// One image's positive RoIs for [`mask_targets_batch`], on the host.
#[derive(Debug, Clone, Copy)]
pub struct MaskTargetJob<'a> {
    /// `[P * 4]` xyxy boxes, row-major.
    pub boxes: &'a [f32],
    /// `[P]` GT index of each box (0-based into `masks`).
    pub gt_index: &'a [i64],
    /// The GT masks of the image.
    pub masks: &'a [CroppedMask],
    /// The size of the bitmap the RoIs are aligned over (mmdet: the padded image; the masks'
    /// rectangles lie inside it).
    pub size: ImageSize,
}

/// `[P, M, M]` float targets for `boxes` `[P, 4]` whose GTs are `gt_index` `[P]` (0-based into `masks`).
pub fn mask_targets(
    boxes: &Tensor,
    gt_index: &Tensor,
    masks: &[CroppedMask],
    size: ImageSize,
    m: i64,
    aligned: bool,
    binarize: bool,
) -> Tensor {
    let dev = boxes.device();
    let p = boxes.size()[0];
    if p == 0 || masks.is_empty() {
        return Tensor::zeros([p, m, m], (Kind::Float, dev));
    }
    let b =
        Vec::<f32>::try_from(crate::transfers::download(&boxes.to_kind(Kind::Float)).reshape([-1]))
            .expect("float32 converts");
    let gi = Vec::<i64>::try_from(
        crate::transfers::download(&gt_index.to_kind(Kind::Int64)).reshape([-1]),
    )
    .expect("int64 converts");
    let job = MaskTargetJob { boxes: &b, gt_index: &gi, masks, size };
    mask_targets_batch(&[job], m, aligned, binarize, dev).remove(0)
}

/// One RoI group (same adaptive grid) of a job: where its inputs lie in the payload.
struct GroupPlan {
    gy: i64,
    gx: i64,
    n: i64,
    /// Offset of `starts [n * 4], slots [n], window tops [n], window lefts [n]`.
    off: i64,
}

/// Host-side preparation of one job.
struct JobPlan {
    p: i64,
    h: i64,
    w: i64,
    hm: i64,
    wm: i64,
    slots: i64,
    /// Offset of the GT windows `[slots, hm, wm]`.
    win_off: i64,
    groups: Vec<GroupPlan>,
    /// Offset of the `[p]` permutation from group order back to RoI order.
    inv_off: i64,
}

/// [`mask_targets`] of several images (one `[P_b, M, M]` tensor each, on `dev`) with ONE
/// host-to-device copy for all of them: the GT windows, the RoI starts and the group indices of
/// every image travel in one float32 payload (indices are exact in float32). Each image keeps
/// its own window size and RoI groups, so every number equals the per-image [`mask_targets`].
pub fn mask_targets_batch(
    jobs: &[MaskTargetJob<'_>],
    m: i64,
    aligned: bool,
    binarize: bool,
    dev: Device,
) -> Vec<Tensor> {
    let mut payload: Vec<f32> = Vec::new();
    let plans: Vec<Option<JobPlan>> =
        jobs.iter().map(|j| plan_job(j, m, aligned, &mut payload)).collect();
    let payload = if payload.is_empty() {
        Tensor::zeros([0], (Kind::Float, dev))
    } else {
        crate::transfers::upload(&Tensor::from_slice(&payload), dev)
    };
    jobs.iter()
        .zip(plans)
        .map(|(job, plan)| {
            let Some(pl) = plan else {
                let p = (job.boxes.len() / 4) as i64;
                return Tensor::zeros([p, m, m], (Kind::Float, dev));
            };
            let out = run_job(&payload, &pl, m);
            if binarize { out.ge(0.5).to_kind(Kind::Float) } else { out }
        })
        .collect()
}

/// Appends the inputs of `job` to `payload`; `None` when it has no RoI or no mask (zeros).
fn plan_job(
    job: &MaskTargetJob<'_>,
    m: i64,
    aligned: bool,
    payload: &mut Vec<f32>,
) -> Option<JobPlan> {
    let p = (job.boxes.len() / 4) as i64;
    let masks = job.masks;
    let size = job.size;
    if p == 0 || masks.is_empty() {
        return None;
    }
    let (h, w) = (size.height as i64, size.width as i64);
    let b = Tensor::from_slice(job.boxes).view([p, 4]);
    let bx = Tensor::stack(
        &[
            b.select(1, 0).clamp(0.0, w as f64),
            b.select(1, 1).clamp(0.0, h as f64),
            b.select(1, 2).clamp(0.0, w as f64),
            b.select(1, 3).clamp(0.0, h as f64),
        ],
        1,
    );
    let gi = job.gt_index;
    // Windows of the GTs in use.
    let mut used: BTreeMap<i64, usize> = BTreeMap::new();
    for &g in gi {
        let next = used.len();
        used.entry(g).or_insert(next);
    }
    let mut wins: Vec<(usize, usize, usize, usize)> = vec![(0, 0, 1, 1); used.len()];
    for (&g, &slot) in &used {
        let (t, l, hh, ww) = masks[g as usize].rect();
        let t0 = t.saturating_sub(MARGIN);
        let l0 = l.saturating_sub(MARGIN);
        let t1 = (t + hh + MARGIN).min(size.height);
        let l1 = (l + ww + MARGIN).min(size.width);
        wins[slot] = (t0, l0, (t1 - t0).max(1), (l1 - l0).max(1));
    }
    let hm = wins.iter().map(|r| r.2).max().unwrap_or(1);
    let wm = wins.iter().map(|r| r.3).max().unwrap_or(1);
    let win_off = payload.len();
    payload.resize(win_off + used.len() * hm * wm, 0.0);
    let buf = &mut payload[win_off..];
    for (&g, &slot) in &used {
        let mk = &masks[g as usize];
        let (t, l, hh, ww) = mk.rect();
        let (t0, l0, _, _) = wins[slot];
        let data = mk.as_slice();
        for r in 0..hh {
            for c in 0..ww {
                if data[r * ww + c] != 0 {
                    buf[slot * hm * wm + (t + r - t0) * wm + (l + c - l0)] = 1.0;
                }
            }
        }
    }
    let slots: Vec<usize> = gi.iter().map(|g| used[g]).collect();
    let off = if aligned { 0.5 } else { 0.0 };
    let bxv = Vec::<f32>::try_from(bx.reshape([-1])).expect("float32 CPU boxes convert");
    // Group the RoIs by their adaptive grid.
    let mut groups: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
    let mut starts = Vec::with_capacity(p as usize * 4);
    for (i, r) in bxv.chunks(4).enumerate() {
        let (x1, y1) = (r[0] - off, r[1] - off);
        let (mut rw, mut rh) = ((r[2] - off) - x1, (r[3] - off) - y1);
        if !aligned {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        starts.extend_from_slice(&[x1, y1, rw / m as f32, rh / m as f32]);
        let gy = (rh / m as f32).ceil().max(0.0) as i64;
        let gx = (rw / m as f32).ceil().max(0.0) as i64;
        groups.entry((gy, gx)).or_default().push(i);
    }
    let mut plans = Vec::with_capacity(groups.len());
    let mut order = Vec::with_capacity(p as usize);
    for ((gy, gx), members) in groups {
        plans.push(GroupPlan { gy, gx, n: members.len() as i64, off: payload.len() as i64 });
        for &i in &members {
            payload.extend_from_slice(&starts[i * 4..i * 4 + 4]);
        }
        payload.extend(members.iter().map(|&i| slots[i] as f32));
        payload.extend(members.iter().map(|&i| wins[slots[i]].0 as f32));
        payload.extend(members.iter().map(|&i| wins[slots[i]].1 as f32));
        order.extend(members);
    }
    // Row i of the result is row inv[i] of the groups' concatenation.
    let mut inv = vec![0f32; order.len()];
    for (j, &i) in order.iter().enumerate() {
        inv[i] = j as f32;
    }
    let inv_off = payload.len() as i64;
    payload.extend(inv);
    Some(JobPlan {
        p,
        h,
        w,
        hm: hm as i64,
        wm: wm as i64,
        slots: used.len() as i64,
        win_off: win_off as i64,
        groups: plans,
        inv_off,
    })
}

/// The `[P, M, M]` (not binarised) targets of one planned job, from the device `payload`.
fn run_job(payload: &Tensor, pl: &JobPlan, m: i64) -> Tensor {
    let dev = payload.device();
    // Sampled and pooled in float64: in float32 the grid normalisation of `grid_sample` turns
    // mmdet's exact 0.5 averages into 0.49999997, which the `>= 0.5` binarisation flips (found
    // against mmdet 2.17, tests/mmdet_parity.rs).
    let windows = payload
        .narrow(0, pl.win_off, pl.slots * pl.hm * pl.wm)
        .view([pl.slots, 1, pl.hm, pl.wm])
        .to_kind(Kind::Double);
    let mut out_parts = Vec::new();
    for g in &pl.groups {
        let (gy, gx, n) = (g.gy, g.gx, g.n);
        if gy == 0 || gx == 0 {
            out_parts.push(Tensor::zeros([n, m, m], (Kind::Float, dev)));
            continue;
        }
        let s = payload.narrow(0, g.off, 4 * n).view([n, 4]);
        let sl = payload.narrow(0, g.off + 4 * n, n).to_kind(Kind::Int64);
        let top = payload.narrow(0, g.off + 5 * n, n).unsqueeze(1);
        let left = payload.narrow(0, g.off + 6 * n, n).unsqueeze(1);
        let ys = axis_samples(&s.select(1, 1), &s.select(1, 3), m, gy, pl.h);
        let xs = axis_samples(&s.select(1, 0), &s.select(1, 2), m, gx, pl.w);
        let yn = ((ys.coords.to_kind(Kind::Double) - top) * 2.0 + 1.0) / (pl.hm as f64) - 1.0;
        let xn = ((xs.coords.to_kind(Kind::Double) - left) * 2.0 + 1.0) / (pl.wm as f64) - 1.0;
        let grid = grid_from(&xn, &yn);
        // bilinear, zero padding: outside the window the mask is 0.
        let sampled = windows.index_select(0, &sl).grid_sampler_2d(&grid, 0, 0, false);
        let valid = ys
            .valid
            .unsqueeze(2)
            .logical_and(&xs.valid.unsqueeze(1))
            .unsqueeze(1)
            .to_kind(Kind::Double);
        let pooled =
            (sampled * valid).avg_pool2d([gy, gx], [gy, gx], [0, 0], false, true, None::<i64>);
        out_parts.push(pooled.squeeze_dim(1).to_kind(Kind::Float));
    }
    let inv = payload.narrow(0, pl.inv_off, pl.p).to_kind(Kind::Int64);
    Tensor::cat(&out_parts, 0).index_select(0, &inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::BitMask;

    #[test]
    fn equals_roi_align_over_full_bitmap() {
        let size = ImageSize::new(40, 50);
        let mut a = BitMask::zeros(size);
        let mut b = BitMask::zeros(size);
        for r in 5..20usize {
            for c in 8..30usize {
                let (dr, dc) = (r as i64 - 12, c as i64 - 19);
                if dr * dr + dc * dc < 60 {
                    a.set(r, c, true);
                }
            }
        }
        for r in 30..40 {
            for c in 40..50 {
                b.set(r, c, true);
            }
        }
        let masks = vec![a.to_cropped(), b.to_cropped()];
        let boxes = Tensor::from_slice(&[
            6f32, 4.5, 31.0, 21.0, 2.0, 2.0, 45.0, 38.0, 38.0, 29.0, 55.0, 44.0, 40.0, 31.0, 49.0,
            39.0,
        ])
        .view([4, 4]);
        let gi = Tensor::from_slice(&[0i64, 0, 1, 1]);
        let got = mask_targets(&boxes, &gi, &masks, size, 7, true, false);
        let full = |m: &BitMask| {
            Tensor::from_slice(&m.as_slice().iter().map(|&v| v as f32).collect::<Vec<_>>())
                .view([1, 1, 40, 50])
        };
        for (i, g) in [0usize, 0, 1, 1].iter().enumerate() {
            let bv = Vec::<f32>::try_from(boxes.get(i as i64)).unwrap();
            let cl = [
                bv[0].clamp(0.0, 50.0),
                bv[1].clamp(0.0, 40.0),
                bv[2].clamp(0.0, 50.0),
                bv[3].clamp(0.0, 40.0),
            ];
            let roi = Tensor::from_slice(&[0.0, cl[0], cl[1], cl[2], cl[3]]).view([1, 5]);
            let want = crate::ops::roi_align::roi_align(
                &full(if *g == 0 { &a } else { &b }),
                &roi,
                7,
                1.0,
                0,
                true,
            );
            let err = f64::try_from((want.view([7, 7]) - got.get(i as i64)).abs().max()).unwrap();
            assert!(err < 1e-5, "roi {i}: {err}");
        }
    }
}
