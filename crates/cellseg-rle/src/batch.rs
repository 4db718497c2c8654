//! Many COCO masks of one image in one buffer, for fast pairwise intersections.
//!
//! A [`CocoBatch`] keeps each mask as its column-major runs `[start, end)` (absolute pixel
//! positions, zero-length runs dropped) in one shared buffer, parsed straight from a compressed
//! `counts` string (a per-value loop with a one-character fast path), with the mask's area and
//! exact pixel bounds. When both masks have one run per column (most cells), an intersection is
//! one interval overlap per shared column, a loop without dependencies; otherwise the shared
//! columns are walked one at a time, each side's runs of a column found independently (one
//! interval overlap when each side has one run there). Candidate pairs come from testing every
//! pair of boxes in a loop without branches (small batches) or from a coarse grid (large ones).
//! [`CocoBatch::for_each_iou_above`] also skips pairs whose areas and box overlap already bound
//! the IoU to at most a floor, without intersecting them (the competition metric's 0.5).
//! Results are the exact integers that [`CocoRle::intersection_area`] and [`CocoRle::area`] give,
//! so IoUs computed from them are bit-identical to pycocotools'.
//!
//! ```
//! use cellseg_core::ImageSize;
//! use cellseg_rle::{CocoRle, batch::CocoBatch};
//!
//! let size = ImageSize::new(10, 10);
//! let a = CocoRle::from_polygons(&[vec![1.0, 1.0, 8.0, 1.0, 1.0, 8.0]], 10, 10)?;
//! let mut batch = CocoBatch::new(size)?;
//! batch.push_counts_str(&a.to_counts_string())?;
//! batch.push(&a)?;
//! assert_eq!(batch.len(), 2);
//! assert_eq!(batch.area(0), a.area());
//! assert_eq!(batch.intersection_area(0, &batch, 1), a.area());
//! let mut pairs = Vec::new();
//! batch.for_each_candidate(&batch, |t, p| pairs.push((t, p)));
//! assert_eq!(pairs.len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::thread::LocalKey;

use cellseg_core::ImageSize;

use crate::overlap::Bounds;
use crate::{CocoRle, Error, Result, runs};

/// Bounds of an empty mask: no box test can succeed against it.
const EMPTY: [u32; 4] = [u32::MAX, u32::MAX, 0, 0];
/// Up to this many pairs, [`CocoBatch::for_each_candidate`] tests every pair of boxes.
pub const BRUTE_FORCE_PAIRS: usize = 1 << 16;
/// Side of a grid cell of [`CocoBatch::for_each_candidate`], in pixels.
const CELL: u32 = 64;

/// COCO masks of one image size as runs in one buffer, with areas and bounds (see the module
/// docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CocoBatch {
    size: ImageSize,
    /// `[start, end)` of every run of every mask, mask after mask.
    runs: Vec<[u32; 2]>,
    /// Mask `i` owns `runs[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    /// Inclusive `[r0, c0, r1, c1]`; [`EMPTY`] for an empty mask.
    bounds: Vec<[u32; 4]>,
    areas: Vec<u64>,
    /// Whether run `k` of the mask lies in column `c0 + k` and no run crosses a column (most
    /// cells): intersections of two such masks need no merge walk, one interval overlap per
    /// shared column.
    simple: Vec<bool>,
}

impl CocoBatch {
    /// An empty batch for masks of `size`.
    ///
    /// # Errors
    /// [`Error::ImageTooLarge`] when the image has more than `u32::MAX` pixels.
    pub fn new(size: ImageSize) -> Result<Self> {
        runs::check_size(size)?;
        Ok(Self {
            size,
            runs: Vec::new(),
            offsets: vec![0],
            bounds: Vec::new(),
            areas: Vec::new(),
            simple: Vec::new(),
        })
    }

    /// Empties the batch, keeping its buffers, for masks of `size`.
    ///
    /// # Errors
    /// [`Error::ImageTooLarge`].
    pub fn reset(&mut self, size: ImageSize) -> Result<()> {
        runs::check_size(size)?;
        self.size = size;
        self.runs.clear();
        self.offsets.clear();
        self.offsets.push(0);
        self.bounds.clear();
        self.areas.clear();
        self.simple.clear();
        Ok(())
    }

    /// Runs `f` on two empty batches of `size`, reused from call to call on this thread (no
    /// reallocation once warm: the per-image work of an IoU matrix or a metric over many images).
    /// A call from inside `f` gets two new batches.
    ///
    /// # Errors
    /// [`Error::ImageTooLarge`] (as [`CocoBatch::new`]), or `f`'s error.
    pub fn with_pair<R, E: From<Error>>(
        size: ImageSize,
        f: impl FnOnce(&mut Self, &mut Self) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        thread_local! {
            static PAIR: RefCell<Option<(CocoBatch, CocoBatch)>> = const { RefCell::new(None) };
        }
        with_scratch(&PAIR, |slot| {
            let (a, b) = match slot {
                Some((a, b)) => {
                    a.reset(size)?;
                    b.reset(size)?;
                    (a, b)
                }
                None => {
                    let (a, b) = slot.insert((Self::new(size)?, Self::new(size)?));
                    (a, b)
                }
            };
            f(a, b)
        })
    }

    /// The image size.
    pub fn size(&self) -> ImageSize {
        self.size
    }

    /// Number of masks.
    pub fn len(&self) -> usize {
        self.areas.len()
    }

    /// Whether the batch holds no mask.
    pub fn is_empty(&self) -> bool {
        self.areas.is_empty()
    }

    /// Area of mask `i` (as [`CocoRle::area`]).
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn area(&self, i: usize) -> u64 {
        self.areas[i]
    }

    /// Exact inclusive pixel bounds of mask `i` (as [`crate::overlap::coco_bounds`]).
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn bounds(&self, i: usize) -> Bounds {
        let b = self.bounds[i];
        (b != EMPTY).then(|| (b[0] as usize, b[1] as usize, b[2] as usize, b[3] as usize))
    }

    /// Column-major runs `[start, end)` of mask `i`, sorted, disjoint, none empty.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn runs(&self, i: usize) -> &[[u32; 2]] {
        &self.runs[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Appends a mask from a compressed `counts` string, parsing it straight into runs.
    ///
    /// # Errors
    /// Exactly those of [`CocoRle::from_counts_str`] for this string and size; the batch is then
    /// unchanged.
    pub fn push_counts_str(&mut self, s: &str) -> Result<()> {
        let first = self.runs.len();
        let total = self.size.pixels() as u64;
        let (ok, area) = parse_runs(s.as_bytes(), total, &mut self.runs);
        if !ok {
            self.runs.truncate(first);
            // The reference parser names the exact error.
            return match CocoRle::from_counts_str(s, self.size) {
                Err(e) => Err(e),
                Ok(rle) => self.push(&rle),
            };
        }
        self.finish_mask(first, area);
        Ok(())
    }

    /// Appends a parsed mask.
    ///
    /// # Errors
    /// [`Error::SizeMismatch`] when its size differs from the batch's.
    pub fn push(&mut self, rle: &CocoRle) -> Result<()> {
        if rle.size() != self.size {
            return Err(Error::SizeMismatch {
                index: self.len(),
                got: rle.size(),
                want: self.size,
            });
        }
        let first = self.runs.len();
        let (mut pos, mut area) = (0u64, 0u64);
        for (j, &c) in rle.counts().iter().enumerate() {
            let len = c as u64;
            if j % 2 == 1 && len > 0 {
                self.runs.push([pos as u32, (pos + len) as u32]);
                area += len;
            }
            pos += len;
        }
        self.finish_mask(first, area);
        Ok(())
    }

    /// Records offsets, area, bounds and simplicity of the mask whose runs start at `first`.
    fn finish_mask(&mut self, first: usize, area: u64) {
        let runs = &self.runs[first..];
        let h = self.size.height as u32;
        let mut b = EMPTY;
        let mut simple = true;
        if let (Some(lo), Some(hi)) = (runs.first(), runs.last()) {
            b[1] = lo[0] / h;
            b[3] = (hi[1] - 1) / h;
            // Most masks have run k alone in column c0 + k: check that and take the rows in one
            // loop without branches.
            simple = runs.len() as u32 == b[3] - b[1] + 1;
            if simple {
                let (mut r0, mut r1, mut top) = (u32::MAX, 0, 0);
                let mut col_start = b[1] * h;
                for &[s, e] in runs {
                    // Either wraps to a huge value when the run is not inside the column.
                    let (y0, y1) = (s.wrapping_sub(col_start), (e - 1).wrapping_sub(col_start));
                    r0 = r0.min(y0);
                    r1 = r1.max(y1);
                    top = top.max(y0);
                    // (c1 + 1) * h <= height * width.
                    col_start += h;
                }
                simple = r1 < h && top < h;
                b[0] = r0;
                b[2] = r1;
            }
            if !simple {
                b[0] = u32::MAX;
                b[2] = 0;
                let mut cols = ColumnWalk::new(b[1], h);
                for &[s, e] in runs {
                    let col0 = cols.start_of(s);
                    let (y0, y1) = (s - col0, e - 1 - col0);
                    if y1 >= h {
                        // The run crosses a column boundary: every row is covered.
                        b[0] = 0;
                        b[2] = h - 1;
                        break;
                    }
                    b[0] = b[0].min(y0);
                    b[2] = b[2].max(y1);
                }
            }
        }
        self.offsets.push(self.runs.len() as u32);
        self.bounds.push(b);
        self.areas.push(area);
        self.simple.push(simple);
    }

    /// Number of pixels set in both mask `i` of `self` and mask `j` of `other` (equal to
    /// [`CocoRle::intersection_area`] of the two). Only the columns both masks cover are walked.
    ///
    /// # Panics
    /// When an index is out of range. Batches of different image sizes give 0 (use
    /// [`CocoBatch::size`] to check first).
    pub fn intersection_area(&self, i: usize, other: &Self, j: usize) -> u64 {
        if self.size != other.size {
            return 0;
        }
        let (ba, bb) = (self.bounds[i], other.bounds[j]);
        let (c0, c1) = (ba[1].max(bb[1]), ba[3].min(bb[3]));
        if c0 > c1 || ba[0] > bb[2] || bb[0] > ba[2] {
            return 0;
        }
        match (self.simple[i], other.simple[j]) {
            (true, true) => {
                // One run per column on both sides, run k in column c0 + k.
                let n = (c1 - c0 + 1) as usize;
                let a = &self.runs(i)[(c0 - ba[1]) as usize..][..n];
                let b = &other.runs(j)[(c0 - bb[1]) as usize..][..n];
                // The total is at most the area, which fits in u32.
                let inter: u32 = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| x[1].min(y[1]).saturating_sub(x[0].max(y[0])))
                    .sum();
                return inter as u64;
            }
            (true, false) => return self.simple_and_runs(i, other, j, c0, c1),
            (false, true) => return other.simple_and_runs(j, self, i, c0, c1),
            (false, false) => {}
        }
        // Column by column, from the first shared column to the last: the runs of each side
        // in one column are found independently of the other side's, and a column with one run
        // on each side (most columns, even here) is one interval overlap.
        let h = self.size.height as u32;
        let (lo, hi) = (c0 * h, (c1 + 1) * h);
        let (a, b) = (self.runs(i), other.runs(j));
        let mut ia = a.partition_point(|r| r[1] <= lo);
        let mut ib = b.partition_point(|r| r[1] <= lo);
        // The total is at most the area, which fits in u32.
        let mut inter = 0u32;
        let mut col_start = lo;
        while col_start < hi && ia < a.len() && ib < b.len() {
            let col_end = col_start + h;
            // Runs overlapping this column: from ia (or ib) while they start before its end.
            let na = a[ia..].iter().take_while(|r| r[0] < col_end).count();
            let nb = b[ib..].iter().take_while(|r| r[0] < col_end).count();
            let (ra, rb) = (&a[ia..ia + na], &b[ib..ib + nb]);
            // Clipped to the column: a run crossing into the next one counts there too.
            let overlap = |x: &[u32; 2], y: &[u32; 2]| {
                x[1].min(y[1]).min(col_end).saturating_sub(x[0].max(y[0]).max(col_start))
            };
            if let ([x], [y]) = (ra, rb) {
                inter += overlap(x, y);
            } else {
                for x in ra {
                    for y in rb {
                        inter += overlap(x, y);
                    }
                }
            }
            // Keep a last run that goes on into the next column.
            ia += na - ra.last().is_some_and(|r| r[1] > col_end) as usize;
            ib += nb - rb.last().is_some_and(|r| r[1] > col_end) as usize;
            col_start = col_end;
        }
        inter as u64
    }

    /// Intersection of simple mask `i` of `self` with mask `j` of `other` over the columns
    /// `c0..=c1`: one pass over the other's runs, each compared with the single run of its column.
    fn simple_and_runs(&self, i: usize, other: &Self, j: usize, c0: u32, c1: u32) -> u64 {
        let h = self.size.height as u32;
        let first_col = self.bounds[i][1];
        let a = self.runs(i);
        let (lo, hi) = (c0 * h, (c1 + 1) * h);
        let b = other.runs(j);
        let start = b.partition_point(|r| r[1] <= lo);
        let mut cols = ColumnWalk::new(c0, h);
        // The total is at most the area, which fits in u32.
        let mut inter = 0u32;
        for &[s, e] in &b[start..] {
            let mut s = s.max(lo);
            if s >= hi {
                break;
            }
            let e = e.min(hi);
            while s < e {
                let col0 = cols.start_of(s);
                let piece_end = e.min(col0 + h);
                // Columns c0..=c1 all lie inside the simple mask's columns.
                let [sa, ea] = a[(cols.col - first_col) as usize];
                inter += piece_end.min(ea).saturating_sub(s.max(sa));
                s = piece_end;
            }
        }
        inter as u64
    }

    /// Calls `f(i, j)` once for every mask `i` of `self` and `j` of `other` whose pixel bounds
    /// meet (empty masks meet nothing). Up to [`BRUTE_FORCE_PAIRS`] pairs, every box is tested,
    /// in a loop without branches over `other`'s bounds; above, a coarse grid finds the pairs.
    /// Pairs come grouped by `i` in increasing order; the `j` of one `i` are in no particular
    /// order.
    pub fn for_each_candidate(&self, other: &Self, f: impl FnMut(usize, usize)) {
        if self.is_empty() || other.is_empty() || self.size != other.size {
            return;
        }
        // Rows and columns as i32 (both below 2^31) let the compares vectorise.
        let small = self.size.height < 1 << 31 && self.size.width < 1 << 31;
        if small && self.len() * other.len() <= BRUTE_FORCE_PAIRS {
            self.candidates_by_testing_all(other, f);
        } else {
            self.candidates_from_grid(other, f);
        }
    }

    /// [`CocoBatch::for_each_candidate`] by testing every pair of boxes: for each mask of `self`,
    /// a byte per mask of `other` (whether the boxes meet) in one pass without branches, then
    /// the set bytes eight at a time.
    fn candidates_by_testing_all(&self, other: &Self, f: impl FnMut(usize, usize)) {
        thread_local! {
            static SCRATCH: RefCell<(Vec<[i32; 4]>, Vec<u8>)> =
                const { RefCell::new((Vec::new(), Vec::new())) };
        }
        with_scratch(&SCRATCH, |scratch| self.test_all(other, scratch, f));
    }

    /// The work of [`CocoBatch::candidates_by_testing_all`], in the buffers given.
    fn test_all(
        &self,
        other: &Self,
        (boxes, hits): &mut (Vec<[i32; 4]>, Vec<u8>),
        mut f: impl FnMut(usize, usize),
    ) {
        boxes.clear();
        // An empty mask's bounds meet nothing: r0 = MAX is above every r1.
        boxes.extend(other.bounds.iter().map(|b| b.map(|v| v.min(i32::MAX as u32) as i32)));
        hits.clear();
        hits.resize(other.len().next_multiple_of(8), 0);
        for (i, a) in self.bounds.iter().enumerate().filter(|(_, b)| **b != EMPTY) {
            let a = a.map(|v| v as i32);
            for (hit, b) in hits.iter_mut().zip(boxes.iter()) {
                *hit = ((a[0] <= b[2]) & (b[0] <= a[2]) & (a[1] <= b[3]) & (b[1] <= a[3])) as u8;
            }
            for (k, chunk) in hits.chunks_exact(8).enumerate() {
                let mut word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
                while word != 0 {
                    f(i, 8 * k + (word.trailing_zeros() / 8) as usize);
                    word &= word - 1;
                }
            }
        }
    }

    /// [`CocoBatch::for_each_candidate`] through a coarse grid over the image.
    fn candidates_from_grid(&self, other: &Self, f: impl FnMut(usize, usize)) {
        thread_local! {
            static GRID: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
        }
        with_scratch(&GRID, |scratch| self.grid(other, scratch, f));
    }

    /// The work of [`CocoBatch::candidates_from_grid`], in the buffers given.
    fn grid(
        &self,
        other: &Self,
        (start, items): &mut (Vec<u32>, Vec<u32>),
        mut f: impl FnMut(usize, usize),
    ) {
        let rows = (self.size.height as u32).div_ceil(CELL) as usize;
        let cols = (self.size.width as u32).div_ceil(CELL) as usize;
        let cells = |b: &[u32; 4]| {
            (
                (b[0] / CELL) as usize..=(b[2] / CELL) as usize,
                (b[1] / CELL) as usize..=(b[3] / CELL) as usize,
            )
        };
        // CSR grid of `other`: counts, prefix sums, fill (moving each cell's start up by
        // one slot per item, then back).
        start.clear();
        start.resize(rows * cols + 1, 0);
        for b in other.bounds.iter().filter(|b| **b != EMPTY) {
            let (rr, cr) = cells(b);
            for gr in rr {
                for gc in cr.clone() {
                    start[gr * cols + gc] += 1;
                }
            }
        }
        let mut sum = 0;
        for v in start.iter_mut() {
            sum += *v;
            *v = sum;
        }
        // Now start[c] is the end of cell c; filling from the end moves it to its start.
        items.clear();
        items.resize(sum as usize, 0);
        for (j, b) in other.bounds.iter().enumerate().rev().filter(|(_, b)| **b != EMPTY) {
            let (rr, cr) = cells(b);
            for gr in rr {
                for gc in cr.clone() {
                    let slot = &mut start[gr * cols + gc];
                    *slot -= 1;
                    items[*slot as usize] = j as u32;
                }
            }
        }
        for (i, a) in self.bounds.iter().enumerate().filter(|(_, b)| **b != EMPTY) {
            let (rr, cr) = cells(a);
            for gr in rr {
                for gc in cr.clone() {
                    let cell = gr * cols + gc;
                    for &j in &items[start[cell] as usize..start[cell + 1] as usize] {
                        let b = &other.bounds[j as usize];
                        // Report the pair only in the cell holding the top-left corner of
                        // the boxes' intersection, so each pair comes once. One branch.
                        let top = (a[0].max(b[0]) / CELL) as usize;
                        let left = (a[1].max(b[1]) / CELL) as usize;
                        if (a[0] <= b[2])
                            & (b[0] <= a[2])
                            & (a[1] <= b[3])
                            & (b[1] <= a[3])
                            & (top == gr)
                            & (left == gc)
                        {
                            f(i, j as usize);
                        }
                    }
                }
            }
        }
    }

    /// The IoU matrix of the detections in `self` against the ground truths in `gt`, exactly as
    /// pycocotools `iou(dt, gt, iscrowd)` (and [`crate::coco::iou_matrix`]): row-major
    /// `[self.len()][gt.len()]`; with `iscrowd[g]` the union is the detection's area. Only pairs
    /// whose pixel bounds meet are intersected; the others are 0, as pycocotools' box pre-filter
    /// or its run walk gives them.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `iscrowd.len() != gt.len()`; [`Error::SizeMismatch`] when
    /// the batches' image sizes differ.
    pub fn iou_matrix(&self, gt: &Self, iscrowd: &[bool]) -> Result<Vec<f64>> {
        if iscrowd.len() != gt.len() {
            return Err(Error::LengthMismatch {
                what: "iou_matrix gt/iscrowd",
                left: gt.len(),
                right: iscrowd.len(),
            });
        }
        if self.size != gt.size && !self.is_empty() && !gt.is_empty() {
            return Err(Error::SizeMismatch { index: 0, got: gt.size, want: self.size });
        }
        let mut out = vec![0.0; self.len() * gt.len()];
        self.for_each_candidate(gt, |d, g| {
            let inter = self.intersection_area(d, gt, g);
            if inter > 0 {
                // The same integers and division as pycocotools' rleIou.
                let union =
                    if iscrowd[g] { self.areas[d] } else { self.areas[d] + gt.areas[g] - inter };
                out[d * gt.len() + g] = inter as f64 / union as f64;
            }
        });
        Ok(out)
    }

    /// Calls `f(i, j, iou)` for every mask `i` of `self` (the detections) and `j` of `other`
    /// whose IoU (pycocotools `iou` with `iscrowd = 0`: the same integers and division) is above
    /// `floor`, grouped by `i` in increasing order. A pair is skipped without intersecting its
    /// runs when its areas and the overlap of its boxes already bound the IoU to at most `floor`,
    /// so a high `floor` (the 0.5 of the competition metric) leaves few pairs to intersect;
    /// `floor = 0.0` gives every pair with a non-zero IoU.
    pub fn for_each_iou_above(
        &self,
        other: &Self,
        floor: f64,
        mut f: impl FnMut(usize, usize, f64),
    ) {
        self.for_each_candidate(other, |i, j| {
            let (a, b) = (self.areas[i], other.areas[j]);
            if floor > 0.0 {
                // The intersection is at most both areas and the boxes' overlap, and
                // x / (a + b - x) grows with x: the IoU is at most `upper` (division is
                // correctly rounded, hence monotone, so this holds after rounding too).
                let (p, q) = (self.bounds[i], other.bounds[j]);
                let rows = p[2].min(q[2]) - p[0].max(q[0]) + 1;
                let cols = p[3].min(q[3]) - p[1].max(q[1]) + 1;
                let m = a.min(b).min(rows as u64 * cols as u64);
                if m as f64 / (a + b - m) as f64 <= floor {
                    return;
                }
            }
            let inter = self.intersection_area(i, other, j);
            if inter > 0 {
                let iou = inter as f64 / (a + b - inter) as f64;
                if iou > floor {
                    f(i, j, iou);
                }
            }
        });
    }
}

/// Parses a compressed `counts` string (pycocotools' code: 6 bits per character from `'0'`, 5 of
/// them data, bit 0x20 = more characters follow, bit 0x10 of the last one = sign; each value after
/// the third adds the value two before) into runs appended to `runs`. Returns whether the string
/// is valid for `total` pixels (false for anything the reference parser would reject) and the
/// area.
#[inline]
fn parse_runs(s: &[u8], total: u64, runs: &mut Vec<[u32; 2]>) -> (bool, u64) {
    const MAX: u64 = u32::MAX as u64;
    let mut p = 0usize;
    let (mut pos, mut bg, mut fg, mut area) = (0u64, 0i64, 0i64, 0u64);
    // The next value; leaves the block `$done` at the end of the string.
    macro_rules! value {
        ($done:lifetime) => {{
            let Some(&byte) = s.get(p) else { break $done };
            let c = byte.wrapping_sub(48);
            if c < 0x20 {
                // One character (most values): 5 bits, sign-extended.
                p += 1;
                ((c as i64) << 59) >> 59
            } else {
                let (v, next) = long_value(s, p);
                if next == usize::MAX {
                    return (false, 0);
                }
                p = next;
                v
            }
        }};
    }
    // Background count k (value 2k), then foreground count k (value 2k + 1).
    macro_rules! pair {
        ($done:lifetime) => {{
            bg += value!($done);
            // A negative i64 is a huge u64.
            if bg as u64 > MAX {
                return (false, 0);
            }
            pos += bg as u64;
            fg += value!($done);
            // pos <= total + MAX: no overflow before the checks.
            let end = pos.wrapping_add(fg as u64);
            if fg as u64 > MAX || end > total {
                return (false, 0);
            }
            if fg > 0 {
                // end <= total <= u32::MAX.
                runs.push([pos as u32, end as u32]);
                area += fg as u64;
            }
            pos = end;
        }};
    }
    'done: {
        pair!('done);
        // Value 2 (the second background count) is not a difference; later ones are.
        bg = 0;
        loop {
            pair!('done);
        }
    }
    (pos == total, area)
}

/// A value of two characters or more of a compressed `counts` string starting at `p`, and the
/// position after it (`usize::MAX` when malformed).
#[inline(never)]
fn long_value(s: &[u8], mut p: usize) -> (i64, usize) {
    let mut x = 0i64;
    for shift in (0..35).step_by(5) {
        let Some(&byte) = s.get(p) else { break };
        let c = byte.wrapping_sub(48);
        p += 1;
        if c > 63 {
            break;
        }
        x |= ((c & 0x1f) as i64) << shift;
        if c < 0x20 {
            if c & 0x10 != 0 {
                x |= -1i64 << (shift + 5);
            }
            return (x, p);
        }
    }
    (0, usize::MAX)
}

/// Runs `f` on this thread's value of `key`, reused from call to call (buffers keep their
/// capacity); a call made while the value is in use (from inside `f`) gets a fresh default.
fn with_scratch<T: Default, R>(
    key: &'static LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut T::default()),
    })
}

/// Finds the column of increasing positions, with additions while they stay close.
struct ColumnWalk {
    col: u32,
    col0: u32,
    h: u32,
}

impl ColumnWalk {
    fn new(col: u32, h: u32) -> Self {
        Self { col, col0: col * h, h }
    }

    /// First position of the column holding `s` (`s` never below the previous one).
    #[inline]
    fn start_of(&mut self, s: u32) -> u32 {
        if s - self.col0 >= self.h {
            if s - self.col0 < self.h.saturating_mul(4) {
                while s - self.col0 >= self.h {
                    self.col += 1;
                    self.col0 += self.h;
                }
            } else {
                self.col = s / self.h;
                self.col0 = self.col * self.h;
            }
        }
        self.col0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlap::coco_bounds;
    use cellseg_core::BitMask;
    use proptest::prelude::*;

    fn arb_rles(size: ImageSize) -> impl Strategy<Value = Vec<CocoRle>> {
        proptest::collection::vec(
            (0..size.height, 0..size.width, 1..9usize, 1..9usize, any::<u64>()),
            0..8,
        )
        .prop_map(move |rects| {
            rects
                .into_iter()
                .map(|(r, c, h, w, bits)| {
                    let mut m = BitMask::zeros(size);
                    for y in r..(r + h).min(size.height) {
                        for x in c..(c + w).min(size.width) {
                            if (bits >> ((y * 7 + x * 3) % 64)) & 1 == 1 || y == r {
                                m.set(y, x, true);
                            }
                        }
                    }
                    CocoRle::from_mask(&m)
                })
                .collect()
        })
    }

    /// Masks of any shape: each pixel set with a per-mask probability (holes, several runs per
    /// column, runs crossing column boundaries, empty and full masks).
    fn arb_any(size: ImageSize) -> impl Strategy<Value = Vec<CocoRle>> {
        let n = size.pixels();
        proptest::collection::vec((0.0f64..1.0, proptest::collection::vec(0.0f64..1.0, n)), 0..6)
            .prop_map(move |masks| {
                masks
                    .into_iter()
                    .map(|(p, u)| {
                        let data = u.into_iter().map(|x| u8::from(x < p)).collect();
                        CocoRle::from_mask(&BitMask::from_vec(size, data).unwrap())
                    })
                    .collect()
            })
    }

    fn arb_sized_any() -> impl Strategy<Value = (ImageSize, Vec<CocoRle>, Vec<CocoRle>)> {
        (1usize..9, 1usize..9).prop_flat_map(|(h, w)| {
            let size = ImageSize::new(h, w);
            (Just(size), arb_any(size), arb_any(size))
        })
    }

    /// Everything a batch computes equals the reference computation on [`CocoRle`]s.
    fn check_against_reference(
        size: ImageSize,
        a: &[CocoRle],
        b: &[CocoRle],
    ) -> std::result::Result<(), TestCaseError> {
        let mut ba = CocoBatch::new(size).unwrap();
        let mut bb = CocoBatch::new(size).unwrap();
        for r in a {
            ba.push_counts_str(&r.to_counts_string()).unwrap();
        }
        for r in b {
            bb.push(r).unwrap();
        }
        for (i, r) in a.iter().enumerate() {
            prop_assert_eq!(ba.area(i), r.area());
            prop_assert_eq!(ba.bounds(i), coco_bounds(r));
            let runs: Vec<[u32; 2]> = r.runs().iter().map(|x| [x.start, x.end()]).collect();
            let covered: u64 = ba.runs(i).iter().map(|x| (x[1] - x[0]) as u64).sum();
            prop_assert_eq!(covered, r.area());
            prop_assert_eq!(runs.first().map(|x| x[0]), ba.runs(i).first().map(|x| x[0]));
        }
        let mut want = crate::overlap::candidate_pairs(
            &a.iter().map(coco_bounds).collect::<Vec<_>>(),
            &b.iter().map(coco_bounds).collect::<Vec<_>>(),
        );
        want.sort_unstable();
        let mut found = Vec::new();
        ba.for_each_candidate(&bb, |i, j| found.push((i, j)));
        prop_assert!(found.windows(2).all(|w| w[0].0 <= w[1].0), "grouped by i");
        found.sort_unstable();
        prop_assert_eq!(&found, &want);
        // Both ways of finding them, whichever the sizes pick.
        if !a.is_empty() && !b.is_empty() {
            for grid in [false, true] {
                let mut found = Vec::new();
                if grid {
                    ba.candidates_from_grid(&bb, |i, j| found.push((i, j)));
                } else {
                    ba.candidates_by_testing_all(&bb, |i, j| found.push((i, j)));
                }
                prop_assert!(found.windows(2).all(|w| w[0].0 <= w[1].0), "grouped by i");
                found.sort_unstable();
                prop_assert_eq!(&found, &want, "grid {}", grid);
            }
        }
        for (i, ra) in a.iter().enumerate() {
            for (j, rb) in b.iter().enumerate() {
                prop_assert_eq!(ba.intersection_area(i, &bb, j), ra.intersection_area(rb).unwrap());
            }
        }
        // The IoU matrix with and without crowd flags, bit for bit as pycocotools' rleIou.
        let crowd: Vec<bool> = (0..b.len()).map(|j| j % 2 == 1).collect();
        let got = ba.iou_matrix(&bb, &crowd).unwrap();
        for (i, ra) in a.iter().enumerate() {
            for (j, rb) in b.iter().enumerate() {
                let want = ra.iou(rb, crowd[j]).unwrap();
                prop_assert_eq!(got[i * b.len() + j].to_bits(), want.to_bits(), "pair {} {}", i, j);
            }
        }
        // The pruned walk gives exactly the pairs above each floor, with the same values.
        for floor in [0.0, 0.3, 0.5, 0.75] {
            let mut above = Vec::new();
            ba.for_each_iou_above(&bb, floor, |i, j, v| above.push((i, j, v.to_bits())));
            above.sort_unstable();
            let mut want = Vec::new();
            for (i, ra) in a.iter().enumerate() {
                for (j, rb) in b.iter().enumerate() {
                    let v = ra.iou(rb, false).unwrap();
                    if v > floor {
                        want.push((i, j, v.to_bits()));
                    }
                }
            }
            prop_assert_eq!(above, want, "floor {}", floor);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn matches_coco_rle(a in arb_rles(ImageSize::new(13, 17)), b in arb_rles(ImageSize::new(13, 17))) {
            check_against_reference(ImageSize::new(13, 17), &a, &b)?;
        }

        #[test]
        fn matches_coco_rle_for_any_shape((size, a, b) in arb_sized_any()) {
            check_against_reference(size, &a, &b)?;
        }

        #[test]
        fn parses_any_string_as_the_reference(s in "[/-p ]{0,12}", h in 1usize..5, w in 1usize..5) {
            let size = ImageSize::new(h, w);
            let mut batch = CocoBatch::new(size).unwrap();
            match (batch.push_counts_str(&s), CocoRle::from_counts_str(&s, size)) {
                (Ok(()), Ok(r)) => {
                    prop_assert_eq!(batch.area(0), r.area());
                    prop_assert_eq!(batch.bounds(0), coco_bounds(&r));
                }
                (Err(e), Err(f)) => prop_assert_eq!(e.to_string(), f.to_string()),
                (got, want) => prop_assert!(false, "{:?} vs {:?}", got, want.map(|_| ())),
            }
        }
    }

    #[test]
    fn candidates_can_be_asked_for_from_inside_the_callback() {
        let size = ImageSize::new(6, 6);
        let mut m = BitMask::zeros(size);
        m.set(1, 1, true);
        m.set(2, 2, true);
        let mut batch = CocoBatch::new(size).unwrap();
        batch.push(&CocoRle::from_mask(&m)).unwrap();
        batch.push(&CocoRle::from_mask(&m)).unwrap();
        let mut n = 0;
        batch.candidates_from_grid(&batch, |_, _| {
            batch.candidates_from_grid(&batch, |_, _| n += 1);
        });
        batch.candidates_by_testing_all(&batch, |_, _| {
            batch.candidates_by_testing_all(&batch, |_, _| n += 1);
        });
        assert_eq!(n, 2 * 4 * 4);
    }

    #[test]
    fn with_pair_gives_empty_batches_even_when_nested() {
        let size = ImageSize::new(3, 3);
        let eye = CocoRle::from_counts(vec![0, 1, 3, 1, 3, 1], size).unwrap();
        for _ in 0..2 {
            CocoBatch::with_pair(size, |a, b| {
                assert!(a.is_empty() && b.is_empty() && a.size() == size);
                a.push(&eye)?;
                CocoBatch::with_pair(ImageSize::new(2, 2), |c, d| {
                    assert!(c.is_empty() && d.is_empty() && c.size() == ImageSize::new(2, 2));
                    Ok::<_, Error>(())
                })?;
                assert_eq!(a.len(), 1);
                Ok::<_, Error>(())
            })
            .unwrap();
        }
        let err = CocoBatch::with_pair(ImageSize::new(1 << 20, 1 << 13), |_, _| Ok::<_, Error>(()));
        assert!(matches!(err, Err(Error::ImageTooLarge { .. })));
    }

    #[test]
    fn bad_strings_give_the_reference_errors_and_leave_the_batch_alone() {
        let size = ImageSize::new(3, 3);
        let mut batch = CocoBatch::new(size).unwrap();
        for s in ["0 1", "0P", "PPPPPPPP0", "1", "O", "99"] {
            let got = batch.push_counts_str(s).unwrap_err().to_string();
            let want = CocoRle::from_counts_str(s, size).unwrap_err().to_string();
            assert_eq!(got, want);
            assert!(batch.is_empty() && batch.runs.is_empty());
        }
        let eye = CocoRle::from_counts(vec![0, 1, 3, 1, 3, 1], size).unwrap();
        batch.push_counts_str(&eye.to_counts_string()).unwrap();
        assert_eq!(batch.runs(0), &[[0, 1], [4, 5], [8, 9]]);
        assert_eq!(batch.bounds(0), Some((0, 0, 2, 2)));
        let other = CocoRle::from_counts(vec![9], ImageSize::new(1, 9)).unwrap();
        assert!(matches!(batch.push(&other), Err(Error::SizeMismatch { index: 1, .. })));
    }
}
