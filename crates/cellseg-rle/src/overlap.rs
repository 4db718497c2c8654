//! Finding the pairs of masks whose bounding boxes meet without testing all of them: a coarse grid
//! over the image, each prediction registered in the cells its box covers.

use crate::CocoRle;

/// Inclusive pixel bounds `(r0, c0, r1, c1)` of a mask; `None` when empty.
pub type Bounds = Option<(usize, usize, usize, usize)>;

/// Pairs `(truth, pred)` whose bounds intersect, found with a coarse grid instead of testing all
/// `n_truth × n_pred` pairs (an image holds up to several hundred cells). Sorted row-major.
pub fn candidate_pairs(truth: &[Bounds], pred: &[Bounds]) -> Vec<(usize, usize)> {
    const CELL: usize = 32;
    let (mut rows, mut cols) = (0usize, 0usize);
    for &(_, _, r1, c1) in truth.iter().chain(pred).flatten() {
        rows = rows.max(r1 / CELL + 1);
        cols = cols.max(c1 / CELL + 1);
    }
    let mut grid: Vec<Vec<u32>> = vec![Vec::new(); rows * cols];
    for (p, b) in pred.iter().enumerate() {
        if let Some((r0, c0, r1, c1)) = *b {
            for gr in r0 / CELL..=r1 / CELL {
                for gc in c0 / CELL..=c1 / CELL {
                    grid[gr * cols + gc].push(p as u32);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut stamp = vec![usize::MAX; pred.len()];
    for (t, b) in truth.iter().enumerate() {
        let Some((r0, c0, r1, c1)) = *b else { continue };
        let start = out.len();
        for gr in r0 / CELL..=r1 / CELL {
            for gc in c0 / CELL..=c1 / CELL {
                for &p in &grid[gr * cols + gc] {
                    let p = p as usize;
                    if stamp[p] == t {
                        continue;
                    }
                    stamp[p] = t;
                    if let Some((q0, d0, q1, d1)) = pred[p]
                        && q0 <= r1
                        && r0 <= q1
                        && d0 <= c1
                        && c0 <= d1
                    {
                        out.push((t, p));
                    }
                }
            }
        }
        out[start..].sort_unstable();
    }
    out
}

/// Exact pixel bounds of a COCO RLE, walking the counts with one division (the column of the first
/// run) and additions after that.
pub fn coco_bounds(m: &CocoRle) -> Bounds {
    let h = m.size().height as u64;
    if h == 0 {
        return None;
    }
    let (mut r0, mut c0, mut r1, mut c1) = (usize::MAX, usize::MAX, 0usize, 0usize);
    let (mut pos, mut col, mut col_start) = (0u64, 0u64, 0u64);
    let mut started = false;
    for (j, &c) in m.counts().iter().enumerate() {
        let c = c as u64;
        if j % 2 == 1 && c > 0 {
            // The run [pos, pos + c): find its first and last column.
            if !started || pos >= col_start + 4 * h {
                col = pos / h;
                col_start = col * h;
                started = true;
            }
            while pos >= col_start + h {
                col += 1;
                col_start += h;
            }
            let (y0, x0) = (pos - col_start, col);
            let last = pos + c - 1;
            while last >= col_start + h {
                col += 1;
                col_start += h;
            }
            let (y1, x1) = (last - col_start, col);
            c0 = c0.min(x0 as usize);
            c1 = c1.max(x1 as usize);
            if x1 > x0 {
                r0 = 0;
                r1 = h as usize - 1;
            } else {
                r0 = r0.min(y0 as usize);
                r1 = r1.max(y1 as usize);
            }
        }
        pos += c;
    }
    started.then_some((r0, c0, r1, c1))
}
