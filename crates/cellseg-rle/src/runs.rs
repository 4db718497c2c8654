//! Runs of set pixels over a flattened image, shared by the Kaggle (row-major) and DSB
//! (column-major) encodings.
//!
//! A [`Run`] is 0-based and half-open in the flattening order of the encoding that owns it; the
//! order itself is carried by the owning type ([`crate::KaggleRle`] or [`crate::DsbRle`]), never by
//! the runs, so runs of different orders are never compared by accident.

use cellseg_core::{BitMask, CroppedMask, ImageSize};

use crate::{Error, Result};

/// One run of set pixels: `len` pixels from the 0-based flat index `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Run {
    /// 0-based flat index of the first pixel.
    pub start: u32,
    /// Number of pixels, at least 1.
    pub len: u32,
}

impl Run {
    /// One past the last pixel.
    pub fn end(&self) -> u32 {
        self.start + self.len
    }
}

/// Flattening order of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// index = row * width + col (Kaggle / Sartorius).
    RowMajor,
    /// index = col * height + row (DSB2018, COCO).
    ColumnMajor,
}

impl Order {
    /// `(outer, inner)` extents: the outer index changes slowest.
    fn dims(self, size: ImageSize) -> (usize, usize) {
        match self {
            Order::RowMajor => (size.height, size.width),
            Order::ColumnMajor => (size.width, size.height),
        }
    }
}

pub(crate) fn check_size(size: ImageSize) -> Result<()> {
    if size.height.checked_mul(size.width).is_none_or(|p| p > u32::MAX as usize) {
        return Err(Error::ImageTooLarge { height: size.height, width: size.width });
    }
    Ok(())
}

/// Appends `[start, start+len)` to `runs`, merging it with the last run when they touch.
#[inline]
fn push_run(runs: &mut Vec<Run>, start: u32, len: u32) {
    if let Some(last) = runs.last_mut()
        && last.end() == start
    {
        last.len += len;
        return;
    }
    runs.push(Run { start, len });
}

/// Parses `"start length …"` with 1-based starts into validated, merged 0-based runs.
pub(crate) fn parse(s: &str, size: ImageSize) -> Result<Vec<Run>> {
    check_size(size)?;
    let total = size.pixels() as u64;
    let mut values = Vec::new();
    for (index, token) in s.split_ascii_whitespace().enumerate() {
        let v: u64 = token
            .parse()
            .ok()
            .filter(|_| token.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| Error::Token { index, token: token.chars().take(32).collect() })?;
        values.push(v);
    }
    if values.len() % 2 == 1 {
        return Err(Error::OddTokenCount { count: values.len() });
    }
    let mut runs: Vec<Run> = Vec::with_capacity(values.len() / 2);
    let mut previous_end = 0u64; // 0-based, exclusive
    for (run, pair) in values.chunks_exact(2).enumerate() {
        let (start, len) = (pair[0], pair[1]);
        if start == 0 {
            return Err(Error::ZeroStart { run });
        }
        if len == 0 {
            return Err(Error::ZeroLength { run, start });
        }
        let end = (start - 1).saturating_add(len); // 0-based exclusive
        if end > total {
            return Err(Error::RunOutOfBounds { run, end, height: size.height, width: size.width });
        }
        if run > 0 && start - 1 < previous_end {
            return Err(Error::UnsortedRuns { run, start, previous_end });
        }
        previous_end = end;
        push_run(&mut runs, (start - 1) as u32, len as u32);
    }
    Ok(runs)
}

/// Formats runs as `"start length …"` with 1-based starts.
pub(crate) fn format(runs: &[Run]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(runs.len() * 12);
    for (i, r) in runs.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{} {}", r.start as u64 + 1, r.len);
    }
    s
}

/// Number of pixels covered.
pub(crate) fn area(runs: &[Run]) -> u64 {
    runs.iter().map(|r| r.len as u64).sum()
}

/// Number of pixels covered by both sorted, disjoint run lists (one linear merge).
pub fn intersection(a: &[Run], b: &[Run]) -> u64 {
    let (mut i, mut j, mut n) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        let (ra, rb) = (a[i], b[j]);
        let lo = ra.start.max(rb.start);
        let hi = ra.end().min(rb.end());
        if hi > lo {
            n += (hi - lo) as u64;
        }
        if ra.end() <= rb.end() {
            i += 1;
        } else {
            j += 1;
        }
    }
    n
}

/// Scans `row` (pixel values, non-zero = set) and appends its runs, `base` being the flat index of
/// `row[0]`.
#[inline]
fn scan_contiguous(runs: &mut Vec<Run>, row: &[u8], base: u32) {
    let mut k = 0;
    let n = row.len();
    while k < n {
        // Skip background quickly, eight bytes at a time.
        while k + 8 <= n && u64::from_ne_bytes(row[k..k + 8].try_into().unwrap_or([0; 8])) == 0 {
            k += 8;
        }
        while k < n && row[k] == 0 {
            k += 1;
        }
        if k >= n {
            break;
        }
        let s = k;
        while k < n && row[k] != 0 {
            k += 1;
        }
        push_run(runs, base + s as u32, (k - s) as u32);
    }
}

#[inline]
fn any_set(row: &[u8]) -> bool {
    row.iter().fold(0u8, |a, &b| a | b) != 0
}

/// Inclusive `(r0, c0, r1, c1)` bounds of a row-major buffer of `width` columns.
pub(crate) fn buffer_bounds(data: &[u8], width: usize) -> Option<(usize, usize, usize, usize)> {
    if width == 0 {
        return None;
    }
    let mut b: Option<(usize, usize, usize, usize)> = None;
    for (r, row) in data.chunks_exact(width).enumerate() {
        if !any_set(row) {
            continue;
        }
        let first = row.iter().position(|&v| v != 0).unwrap_or(0);
        let last = row.iter().rposition(|&v| v != 0).unwrap_or(first);
        b = Some(match b {
            None => (r, first, r, last),
            Some((r0, c0, _, c1)) => (r0, c0.min(first), r, c1.max(last)),
        });
    }
    b
}

/// Runs of a rectangle `(top, left, height, width)` of row-major pixels `data` placed in an image
/// of `size`, in `order`.
fn rect_runs(
    data: &[u8],
    stride: usize,
    rect: (usize, usize, usize, usize),
    size: ImageSize,
    order: Order,
) -> Vec<Run> {
    let (top, left, h, w) = rect;
    let mut runs = Vec::new();
    match order {
        Order::RowMajor => {
            for r in 0..h {
                let row = &data[r * stride..r * stride + w];
                if any_set(row) {
                    scan_contiguous(&mut runs, row, ((top + r) * size.width + left) as u32);
                }
            }
        }
        Order::ColumnMajor => {
            for c in 0..w {
                let base = ((left + c) * size.height + top) as u32;
                let mut r = 0;
                while r < h {
                    while r < h && data[r * stride + c] == 0 {
                        r += 1;
                    }
                    if r >= h {
                        break;
                    }
                    let s = r;
                    while r < h && data[r * stride + c] != 0 {
                        r += 1;
                    }
                    push_run(&mut runs, base + s as u32, (r - s) as u32);
                }
            }
        }
    }
    runs
}

/// Runs of a full-image mask in `order`.
pub(crate) fn from_bitmask(mask: &BitMask, order: Order) -> Vec<Run> {
    let size = mask.size();
    let data = mask.as_slice();
    match order {
        Order::RowMajor => {
            let mut runs = Vec::new();
            if size.width == 0 {
                return runs;
            }
            for (r, row) in data.chunks_exact(size.width).enumerate() {
                if any_set(row) {
                    scan_contiguous(&mut runs, row, (r * size.width) as u32);
                }
            }
            runs
        }
        Order::ColumnMajor => match buffer_bounds(data, size.width) {
            None => Vec::new(),
            Some((r0, c0, r1, c1)) => {
                let sub = &data[r0 * size.width + c0..];
                rect_runs(sub, size.width, (r0, c0, r1 - r0 + 1, c1 - c0 + 1), size, order)
            }
        },
    }
}

/// Runs of a cropped mask in `order`.
pub(crate) fn from_cropped(mask: &CroppedMask, order: Order) -> Vec<Run> {
    let rect = mask.rect();
    rect_runs(mask.as_slice(), rect.3, rect, mask.image_size(), order)
}

/// Inclusive `(r0, c0, r1, c1)` pixel bounds of runs in `order`, `None` when empty.
pub(crate) fn bounds(
    runs: &[Run],
    size: ImageSize,
    order: Order,
) -> Option<(usize, usize, usize, usize)> {
    let (_, minor) = order.dims(size);
    let (mut o_min, mut o_max, mut i_min, mut i_max) = (usize::MAX, 0, usize::MAX, 0);
    for r in runs {
        let (p0, p1) = (r.start as usize, r.end() as usize - 1);
        let (o0, i0, o1, i1) = (p0 / minor, p0 % minor, p1 / minor, p1 % minor);
        o_min = o_min.min(o0);
        o_max = o_max.max(o1);
        if o1 > o0 {
            i_min = 0;
            i_max = minor - 1;
        } else {
            i_min = i_min.min(i0);
            i_max = i_max.max(i1);
        }
    }
    if runs.is_empty() {
        return None;
    }
    Some(match order {
        Order::RowMajor => (o_min, i_min, o_max, i_max),
        Order::ColumnMajor => (i_min, o_min, i_max, o_max),
    })
}

/// Calls `f(outer, inner_start, inner_end_exclusive)` for every single-line piece of the runs.
#[inline]
fn for_each_segment(runs: &[Run], minor: usize, mut f: impl FnMut(usize, usize, usize)) {
    for r in runs {
        let (mut p, end) = (r.start as usize, r.end() as usize);
        while p < end {
            let (o, i) = (p / minor, p % minor);
            let stop = (end - o * minor).min(minor);
            f(o, i, stop);
            p = o * minor + stop;
        }
    }
}

/// Paints runs into a cropped mask.
pub(crate) fn to_cropped(runs: &[Run], size: ImageSize, order: Order) -> CroppedMask {
    let Some((r0, c0, r1, c1)) = bounds(runs, size, order) else {
        return CroppedMask::empty(size);
    };
    let (h, w) = (r1 - r0 + 1, c1 - c0 + 1);
    let mut data = vec![0u8; h * w];
    let (_, minor) = order.dims(size);
    match order {
        Order::RowMajor => for_each_segment(runs, minor, |row, a, b| {
            let base = (row - r0) * w;
            data[base + a - c0..base + b - c0].fill(1);
        }),
        Order::ColumnMajor => for_each_segment(runs, minor, |col, a, b| {
            for row in a..b {
                data[(row - r0) * w + col - c0] = 1;
            }
        }),
    }
    // The rectangle is inside the image and the buffer has h*w bytes, so this cannot fail.
    CroppedMask::new(size, r0, c0, h, w, data).unwrap_or_else(|_| CroppedMask::empty(size))
}

/// Paints runs into a full-image mask.
pub(crate) fn to_bitmask(runs: &[Run], size: ImageSize, order: Order) -> BitMask {
    let mut mask = BitMask::zeros(size);
    let (_, minor) = order.dims(size);
    let w = size.width;
    let data = mask.as_mut_slice();
    match order {
        Order::RowMajor => {
            for r in runs {
                data[r.start as usize..r.end() as usize].fill(1);
            }
        }
        Order::ColumnMajor => for_each_segment(runs, minor, |col, a, b| {
            for row in a..b {
                data[row * w + col] = 1;
            }
        }),
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_counts_shared_pixels() {
        let a = [Run { start: 0, len: 5 }, Run { start: 10, len: 5 }];
        let b = [Run { start: 3, len: 9 }];
        assert_eq!(intersection(&a, &b), 2 + 2);
    }

    #[test]
    fn parse_merges_touching_runs() {
        let runs = parse("1 2 3 2", ImageSize::new(2, 3)).unwrap();
        assert_eq!(runs, vec![Run { start: 0, len: 4 }]);
    }
}
