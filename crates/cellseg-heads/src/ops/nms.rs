//! Batched, class-aware NMS on the device of the tensors (mmcv 1.3.17 `ops/nms.py` semantics:
//! suppress when IoU > thr, strictly; result sorted by score).
//!
//! The IoU matrix is computed on the device in chunks and packed into 64-bit words there
//! ([`overlap_bits`]); one host copy of the packed bits feeds the greedy scan ([`greedy_keep`]),
//! so there is no per-box synchronisation. Both are public so that callers with many independent
//! NMS problems (the RPN: images × levels) can pack all of them and copy them in one transfer.

use tch::{Device, Kind, Tensor};

use crate::assign::assigner::pairwise_iou;

/// Above this many boxes, [`batched_nms`] runs one NMS per id instead of the offset trick.
pub(crate) const SPLIT_THR: i64 = 4000;
/// Elements of one chunk of the IoU matrix.
const CHUNK_ELEMENTS: i64 = 1 << 22;

/// Packed "IoU > `iou_thr`" bits of the boxes of each batch row with each other, computed on
/// the device of `boxes`: `boxes` `[B, N, 4]` (float32) gives `[B, N, W]` int64 with
/// `W = ceil(N / 64)`; bit `j % 64` of word `j / 64` of row `i` is set when
/// IoU(box i, box j) > `iou_thr`.
///
/// Works in chunks of at most `CHUNK_ELEMENTS` IoU values (several batch rows at once when they
/// fit, else row ranges of one batch row). No host synchronisation.
pub fn overlap_bits(boxes: &Tensor, iou_thr: f64) -> Tensor {
    let (b, n) = (boxes.size()[0], boxes.size()[1]);
    let dev = boxes.device();
    let words = (n + 63) / 64;
    if b == 0 || n == 0 {
        return Tensor::zeros([b, n, words], (Kind::Int64, dev));
    }
    // 1 << i for i in 0..64, built on the device (bit 63 is i64::MIN).
    let weights = Tensor::ones([64], (Kind::Int64, dev))
        .bitwise_left_shift(&Tensor::arange(64, (Kind::Int64, dev)));
    let (imgs, rows) = if n * n <= CHUNK_ELEMENTS {
        ((CHUNK_ELEMENTS / (n * n)).clamp(1, b), n)
    } else {
        (1, (CHUNK_ELEMENTS / n).max(1))
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b {
        let ie = (i + imgs).min(b);
        let bx = boxes.slice(0, i, ie, 1);
        let mut parts = Vec::new();
        let mut s = 0;
        while s < n {
            let e = (s + rows).min(n);
            let over = pairwise_iou(&bx.slice(1, s, e, 1), &bx).gt(iou_thr);
            let over = over.constant_pad_nd([0, words * 64 - n]).view([ie - i, e - s, words, 64]);
            parts.push((over.to_kind(Kind::Int64) * &weights).sum_dim_intlist(
                3,
                false,
                Kind::Int64,
            ));
            s = e;
        }
        out.push(Tensor::cat(&parts, 1));
        i = ie;
    }
    Tensor::cat(&out, 0)
}

/// Greedy scan (on the host) over the packed bits of `n` boxes in score order (`bits` row-major
/// `[n, ceil(n / 64)]`, as one batch row of [`overlap_bits`]): the kept positions, ascending.
/// Boxes with `skip(i)` are neither kept nor suppress others (as if they had been removed first).
pub fn greedy_keep(bits: &[i64], n: usize, skip: impl Fn(usize) -> bool) -> Vec<usize> {
    let w = n.div_ceil(64);
    let mut removed = vec![0u64; w];
    let mut keep = Vec::new();
    for i in 0..n {
        if skip(i) || removed[i / 64] >> (i % 64) & 1 == 1 {
            continue;
        }
        keep.push(i);
        for (r, &b) in removed.iter_mut().zip(&bits[i * w..(i + 1) * w]) {
            *r |= b as u64;
        }
    }
    keep
}

/// Greedy NMS on the host of boxes `[n * 4]` (xyxy, already in score order): the kept
/// positions, ascending. The IoU is [`pairwise_iou`]'s float32 arithmetic step by step (so the
/// result equals [`overlap_bits`] + [`greedy_keep`]), computed only between each kept box and the
/// boxes after it that are still alive.
pub fn greedy_scan(boxes: &[f32], iou_thr: f64) -> Vec<usize> {
    greedy_scan_masked(boxes, iou_thr, &vec![true; boxes.len() / 4])
}

/// [`greedy_scan`] of the boxes with `alive[i]`; the others are neither kept nor suppress (as
/// [`greedy_keep`]'s `skip`).
pub fn greedy_scan_masked(boxes: &[f32], iou_thr: f64, alive: &[bool]) -> Vec<usize> {
    let n = boxes.len() / 4;
    let thr = iou_thr as f32;
    let b = |i: usize| &boxes[i * 4..i * 4 + 4];
    let area = |v: &[f32]| (v[2] - v[0]) * (v[3] - v[1]);
    let areas: Vec<f32> = (0..n).map(|i| area(b(i))).collect();
    let mut removed: Vec<bool> = alive.iter().map(|a| !a).collect();
    let mut keep = Vec::new();
    for i in 0..n {
        if removed[i] {
            continue;
        }
        keep.push(i);
        let p = b(i);
        for j in i + 1..n {
            if removed[j] {
                continue;
            }
            let q = b(j);
            let w = (p[2].min(q[2]) - p[0].max(q[0])).max(0.0);
            let h = (p[3].min(q[3]) - p[1].max(q[1])).max(0.0);
            let inter = w * h;
            let union = (areas[i] + areas[j] - inter).max(1e-6);
            if inter / union > thr {
                removed[j] = true;
            }
        }
    }
    keep
}

/// Greedy NMS of `boxes` `[N, 4]` with `scores` `[N]`: kept indices `[K]` (int64), by score desc.
pub fn nms(boxes: &Tensor, scores: &Tensor, iou_thr: f64) -> Tensor {
    let n = boxes.size()[0];
    let dev = boxes.device();
    if n == 0 {
        return Tensor::zeros([0], (Kind::Int64, dev));
    }
    let (_, order) = scores.sort_stable(true, 0, true);
    let sorted = boxes.index_select(0, &order).to_kind(Kind::Float);
    let keep: Vec<i64> = if dev == Device::Cpu {
        // On the CPU a greedy scan that computes only the IoUs it needs (those of kept boxes
        // with the boxes after them) is far cheaper than the whole packed matrix.
        crate::transfers::note_sync();
        let b = Vec::<f32>::try_from(sorted.reshape([-1])).expect("float32 boxes");
        greedy_scan(&b, iou_thr).into_iter().map(|i| i as i64).collect()
    } else {
        let bits =
            crate::transfers::download(&overlap_bits(&sorted.unsqueeze(0), iou_thr)).reshape([-1]);
        let bits = Vec::<i64>::try_from(bits).expect("int64 overlap bits");
        greedy_keep(&bits, n as usize, |_| false).into_iter().map(|i| i as i64).collect()
    };
    order.index_select(0, &crate::transfers::upload(&Tensor::from_slice(&keep), dev))
}

/// NMS within each id of `idxs` `[N]` (class or level): kept indices sorted by score desc.
pub fn batched_nms(boxes: &Tensor, scores: &Tensor, idxs: &Tensor, iou_thr: f64) -> Tensor {
    let n = boxes.size()[0];
    let dev = boxes.device();
    if n == 0 {
        return Tensor::zeros([0], (Kind::Int64, dev));
    }
    let keep = if n <= SPLIT_THR {
        // Offset trick: boxes of different ids never overlap.
        let b = boxes.to_kind(Kind::Float);
        let lo = b.min();
        let span = b.max() - &lo + 1.0;
        let shifted = (&b - &lo) + (idxs.to_kind(Kind::Float) * span).unsqueeze(1);
        nms(&shifted, scores, iou_thr)
    } else {
        let ids = Vec::<i64>::try_from(crate::transfers::download(
            &idxs.to_kind(Kind::Int64).unique_dim(0, true, false, false).0,
        ))
        .expect("a 1-d int64 tensor converts to Vec<i64>");
        let mut parts = Vec::new();
        for id in ids {
            let m = crate::transfers::nonzero_positions(&idxs.eq(id));
            let k = nms(&boxes.index_select(0, &m), &scores.index_select(0, &m), iou_thr);
            parts.push(m.index_select(0, &k));
        }
        Tensor::cat(&parts, 0)
    };
    let (_, o) = scores.index_select(0, &keep).sort_stable(true, 0, true);
    keep.index_select(0, &o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(boxes: &[[f32; 4]], scores: &[f32], thr: f32) -> Vec<i64> {
        let mut order: Vec<usize> = (0..boxes.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let iou = |a: &[f32; 4], b: &[f32; 4]| {
            let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
            let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
            let i = iw * ih;
            i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i).max(1e-6)
        };
        let mut keep: Vec<usize> = Vec::new();
        for &i in &order {
            if keep.iter().all(|&k| iou(&boxes[k], &boxes[i]) <= thr) {
                keep.push(i);
            }
        }
        keep.into_iter().map(|i| i as i64).collect()
    }

    #[test]
    fn equals_naive_greedy() {
        tch::manual_seed(7);
        let n = 500;
        let xy = Tensor::rand([n, 2], (Kind::Float, Device::Cpu)) * 100.0;
        let wh = Tensor::rand([n, 2], (Kind::Float, Device::Cpu)) * 30.0 + 1.0;
        let b = Tensor::cat(&[&xy, &(&xy + wh)], 1);
        let s = Tensor::rand([n], (Kind::Float, Device::Cpu));
        let bv: Vec<[f32; 4]> = Vec::<f32>::try_from(b.reshape([-1]))
            .unwrap()
            .chunks(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect();
        let sv = Vec::<f32>::try_from(&s).unwrap();
        for thr in [0.3, 0.5, 0.7] {
            let got = Vec::<i64>::try_from(nms(&b, &s, thr)).unwrap();
            assert_eq!(got, naive(&bv, &sv, thr as f32));
        }
        // Class-aware: two classes never suppress each other; split path equals the offset path.
        let ids = Tensor::randint(3, [n], (Kind::Int64, Device::Cpu));
        let a = Vec::<i64>::try_from(batched_nms(&b, &s, &ids, 0.5)).unwrap();
        let mut want = Vec::new();
        for c in 0..3 {
            let m = Vec::<i64>::try_from(ids.eq(c).nonzero().view([-1])).unwrap();
            let sub: Vec<[f32; 4]> = m.iter().map(|&i| bv[i as usize]).collect();
            let ss: Vec<f32> = m.iter().map(|&i| sv[i as usize]).collect();
            want.extend(naive(&sub, &ss, 0.5).into_iter().map(|k| m[k as usize]));
        }
        want.sort_by(|&x, &y| sv[y as usize].total_cmp(&sv[x as usize]));
        assert_eq!(a, want);
    }

    #[test]
    fn the_host_scan_equals_the_packed_bits() {
        // Shifted boxes as batched_nms builds them (coordinates up to ~1e4) and exact duplicates.
        tch::manual_seed(3);
        let n = 700;
        let xy = Tensor::rand([n, 2], (Kind::Float, Device::Cpu)) * 300.0;
        let wh = Tensor::rand([n, 2], (Kind::Float, Device::Cpu)) * 40.0 + 0.5;
        let b = Tensor::cat(&[&xy, &(&xy + wh)], 1);
        let shift = Tensor::randint(3, [n, 1], (Kind::Float, Device::Cpu)) * 4000.0;
        let b = Tensor::cat(&[&b + shift, b.narrow(0, 0, 50)], 0);
        let m = b.size()[0] as usize;
        let host = Vec::<f32>::try_from(b.reshape([-1])).unwrap();
        for thr in [0.0, 0.1, 0.3, 0.5, 0.7, 0.95] {
            let bits =
                Vec::<i64>::try_from(overlap_bits(&b.unsqueeze(0), thr).reshape([-1])).unwrap();
            assert_eq!(greedy_scan(&host, thr), greedy_keep(&bits, m, |_| false), "thr {thr}");
        }
    }
}
