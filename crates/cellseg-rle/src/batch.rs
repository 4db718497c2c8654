//! Many COCO masks of one image in one buffer, for fast pairwise intersections.
//!
//! A [`CocoBatch`] keeps each mask as its column-major runs `[start, end)` (absolute pixel
//! positions, zero-length runs dropped) in one shared buffer, with the mask's area and exact pixel
//! bounds computed while parsing. When both masks have one run per column (most cells), an
//! intersection is one interval overlap per shared column, a loop without dependencies; otherwise
//! both run lists are walked once, from the first column both masks cover (a binary search) to
//! the last. Candidate pairs come from a flat (CSR) grid over the image. Results are the exact integers that
//! [`CocoRle::intersection_area`] and [`CocoRle::area`] give, so IoUs computed from them are
//! bit-identical to pycocotools'.
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

use cellseg_core::ImageSize;

use crate::overlap::Bounds;
use crate::{CocoRle, Error, Result, runs};

/// Bounds of an empty mask: no box test can succeed against it.
const EMPTY: [u32; 4] = [u32::MAX, u32::MAX, 0, 0];
/// Side of a grid cell of [`CocoBatch::for_each_candidate`], in pixels.
const CELL: u32 = 32;

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
        let (mut x, mut k) = (0i64, 0u32);
        let (mut m, mut prev1, mut prev2) = (0usize, 0i64, 0i64);
        let (mut pos, mut area) = (0u64, 0u64);
        let mut ok = true;
        for &byte in s.as_bytes() {
            let c = byte.wrapping_sub(48);
            if c > 63 || k == 7 {
                ok = false;
                break;
            }
            x |= ((c & 0x1f) as i64) << (5 * k);
            k += 1;
            if c & 0x20 != 0 {
                continue;
            }
            if c & 0x10 != 0 {
                x |= -1i64 << (5 * k);
            }
            if m > 2 {
                x += prev2;
            }
            // A negative count, or counts adding up past the image, can never be valid.
            if x < 0 || x > u32::MAX as i64 || pos + x as u64 > total {
                ok = false;
                break;
            }
            let len = x as u64;
            if m % 2 == 1 && len > 0 {
                // pos + len <= total <= u32::MAX.
                self.runs.push([pos as u32, (pos + len) as u32]);
                area += len;
            }
            pos += len;
            prev2 = prev1;
            prev1 = x;
            m += 1;
            x = 0;
            k = 0;
        }
        if !ok || k != 0 || pos != total {
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
            let mut cols = ColumnWalk::new(b[1], h);
            for (k, &[s, e]) in runs.iter().enumerate() {
                let col0 = cols.start_of(s);
                simple &= cols.col - b[1] == k as u32;
                let (y0, y1) = (s - col0, e - 1 - col0);
                if y1 >= h {
                    // The run crosses a column boundary: every row is covered.
                    b[0] = 0;
                    b[2] = h - 1;
                    simple = false;
                    break;
                }
                b[0] = b[0].min(y0);
                b[2] = b[2].max(y1);
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
        // Merge walk over both run lists, from the first shared column to the last.
        let h = self.size.height as u32;
        let (lo, hi) = (c0 * h, (c1 + 1) * h);
        let (a, b) = (self.runs(i), other.runs(j));
        let mut ia = a.partition_point(|r| r[1] <= lo);
        let mut ib = b.partition_point(|r| r[1] <= lo);
        let mut inter = 0u64;
        while ia < a.len() && ib < b.len() {
            let ([s1, e1], [s2, e2]) = (a[ia], b[ib]);
            if s1 >= hi || s2 >= hi {
                break;
            }
            inter += e1.min(e2).saturating_sub(s1.max(s2)) as u64;
            ia += (e1 <= e2) as usize;
            ib += (e2 <= e1) as usize;
        }
        inter
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
    /// meet (empty masks meet nothing), found through a coarse grid rather than all pairs. Pairs
    /// come grouped by `i` in increasing order; the `j` of one `i` are in no particular order.
    pub fn for_each_candidate(&self, other: &Self, mut f: impl FnMut(usize, usize)) {
        if self.is_empty() || other.is_empty() || self.size != other.size {
            return;
        }
        let rows = (self.size.height as u32).div_ceil(CELL) as usize;
        let cols = (self.size.width as u32).div_ceil(CELL) as usize;
        let cells = |b: &[u32; 4]| {
            (
                (b[0] / CELL) as usize..=(b[2] / CELL) as usize,
                (b[1] / CELL) as usize..=(b[3] / CELL) as usize,
            )
        };
        // CSR grid of `other`: counts, prefix sums, fill.
        let mut start = vec![0u32; rows * cols + 1];
        for b in other.bounds.iter().filter(|b| **b != EMPTY) {
            let (rr, cr) = cells(b);
            for gr in rr {
                for gc in cr.clone() {
                    start[gr * cols + gc + 1] += 1;
                }
            }
        }
        for k in 1..start.len() {
            start[k] += start[k - 1];
        }
        let mut fill = start.clone();
        let mut items = vec![0u32; start[rows * cols] as usize];
        for (j, b) in other.bounds.iter().enumerate().filter(|(_, b)| **b != EMPTY) {
            let (rr, cr) = cells(b);
            for gr in rr {
                for gc in cr.clone() {
                    let slot = &mut fill[gr * cols + gc];
                    items[*slot as usize] = j as u32;
                    *slot += 1;
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
                        if a[0] <= b[2] && b[0] <= a[2] && a[1] <= b[3] && b[1] <= a[3] {
                            // Report the pair only in the cell holding the top-left corner of
                            // the boxes' intersection, so each pair comes once.
                            let top = a[0].max(b[0]) / CELL;
                            let left = a[1].max(b[1]) / CELL;
                            if top as usize == gr && left as usize == gc {
                                f(i, j as usize);
                            }
                        }
                    }
                }
            }
        }
    }
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

    proptest! {
        #[test]
        fn matches_coco_rle(a in arb_rles(ImageSize::new(13, 17)), b in arb_rles(ImageSize::new(13, 17))) {
            let size = ImageSize::new(13, 17);
            let mut ba = CocoBatch::new(size).unwrap();
            let mut bb = CocoBatch::new(size).unwrap();
            for r in &a {
                ba.push_counts_str(&r.to_counts_string()).unwrap();
            }
            for r in &b {
                bb.push(r).unwrap();
            }
            for (i, r) in a.iter().enumerate() {
                prop_assert_eq!(ba.area(i), r.area());
                prop_assert_eq!(ba.bounds(i), coco_bounds(r));
            }
            let mut found = Vec::new();
            ba.for_each_candidate(&bb, |i, j| found.push((i, j)));
            found.sort_unstable();
            let mut want = crate::overlap::candidate_pairs(
                &a.iter().map(coco_bounds).collect::<Vec<_>>(),
                &b.iter().map(coco_bounds).collect::<Vec<_>>(),
            );
            want.sort_unstable();
            prop_assert_eq!(found, want);
            for (i, ra) in a.iter().enumerate() {
                for (j, rb) in b.iter().enumerate() {
                    prop_assert_eq!(ba.intersection_area(i, &bb, j), ra.intersection_area(rb).unwrap());
                }
            }
        }
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
