//! COCO RLE exactly as pycocotools (`maskApi.c`) computes it: column-major counts that alternate
//! background/foreground starting with background, the compressed `counts` string, polygons
//! (`frPyObjects` + `merge`, as `COCO.annToRLE` does), boxes, `area`, `toBbox`, `merge` and `iou`
//! with the `iscrowd` flag.
//!
//! Every algorithm follows the semantics of pycocotools 2.0 step by step (including its rounding
//! in polygon rasterisation and its box pre-filter in `iou`), so results are bit-identical; the
//! parity tests check this on every real annotation file of the project.
//!
//! ```
//! use cellseg_rle::CocoRle;
//!
//! // A triangle, rasterised as pycocotools does.
//! let tri = CocoRle::from_polygons(&[vec![1.0, 1.0, 8.0, 1.0, 1.0, 8.0]], 10, 10)?;
//! assert_eq!(tri.area(), 21);
//! let s = tri.to_counts_string();
//! assert_eq!(s, ";64O1O1O1O1On0"); // what pycocotools writes
//! assert_eq!(CocoRle::from_counts_str(&s, tri.size())?, tri);
//! assert_eq!(tri.to_bbox(), [1.0, 1.0, 6.0, 6.0]);
//! assert_eq!(tri.iou(&tri, false)?, 1.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use cellseg_core::{BitMask, BoxXyxy, CroppedMask, ImageSize};

use crate::batch::CocoBatch;
use crate::runs::{self, Order, Run};
use crate::{DsbRle, Error, KaggleRle, Result};

/// A COCO RLE: image size and column-major counts, the first count being background (it may be 0).
///
/// Counts add up to `height * width`. Interior zero counts are accepted (pycocotools accepts and
/// keeps them), so parsing and re-encoding reproduce any pycocotools string exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CocoRle {
    size: ImageSize,
    counts: Vec<u32>,
}

impl CocoRle {
    /// From uncompressed counts (the `counts` list of a COCO json).
    ///
    /// # Errors
    /// [`Error::CountsSum`] when the counts do not add up to `height * width`;
    /// [`Error::ImageTooLarge`].
    pub fn from_counts(counts: Vec<u32>, size: ImageSize) -> Result<Self> {
        runs::check_size(size)?;
        let sum: u64 = counts.iter().map(|&c| c as u64).sum();
        if sum != size.pixels() as u64 {
            return Err(Error::CountsSum { sum, height: size.height, width: size.width });
        }
        let counts = if counts.is_empty() { vec![0] } else { counts };
        Ok(Self { size, counts })
    }

    /// From uncompressed counts given as signed integers (as a JSON parser yields them).
    ///
    /// # Errors
    /// [`Error::CountOutOfRange`] for a negative or too large count, then as
    /// [`CocoRle::from_counts`].
    pub fn from_counts_i64(counts: &[i64], size: ImageSize) -> Result<Self> {
        let mut out = Vec::with_capacity(counts.len());
        for (index, &value) in counts.iter().enumerate() {
            let c = u32::try_from(value).map_err(|_| Error::CountOutOfRange { index, value })?;
            out.push(c);
        }
        Self::from_counts(out, size)
    }

    /// From a compressed `counts` string (pycocotools' LEB128-like code, 6 bits per character,
    /// characters `'0'..='o'`, values after the third as differences to the value two before).
    ///
    /// # Errors
    /// [`Error::CountsByte`], [`Error::CountsTruncated`], [`Error::CountsTooLong`] (with the byte
    /// position), [`Error::CountOutOfRange`], [`Error::CountsSum`].
    pub fn from_counts_str(s: &str, size: ImageSize) -> Result<Self> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0;
        while p < bytes.len() {
            let value_start = p;
            let (mut x, mut k) = (0i64, 0u32);
            loop {
                let Some(&byte) = bytes.get(p) else {
                    return Err(Error::CountsTruncated { position: value_start });
                };
                if !(48..=111).contains(&byte) {
                    return Err(Error::CountsByte { position: p, byte });
                }
                if k == 7 {
                    return Err(Error::CountsTooLong { position: value_start });
                }
                let c = (byte - 48) as i64;
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            let m = counts.len();
            if m > 2 {
                x += counts[m - 2] as i64;
            }
            let c = u32::try_from(x).map_err(|_| Error::CountOutOfRange { index: m, value: x })?;
            counts.push(c);
        }
        Self::from_counts(counts, size)
    }

    /// The compressed `counts` string, byte-identical to pycocotools' `rleToString`.
    pub fn to_counts_string(&self) -> String {
        let mut s = Vec::with_capacity(self.counts.len() * 3);
        for (i, &c) in self.counts.iter().enumerate() {
            let mut x = c as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push(c + 48);
                if !more {
                    break;
                }
            }
        }
        // Every byte is in 48..=111, so this is ASCII.
        String::from_utf8(s).expect("RLE characters are ASCII")
    }

    /// The image size.
    pub fn size(&self) -> ImageSize {
        self.size
    }

    /// The uncompressed counts.
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    fn from_runs(runs: &[Run], size: ImageSize) -> Self {
        let total = size.pixels() as u32;
        let mut counts = Vec::with_capacity(2 * runs.len() + 1);
        let mut pos = 0u32;
        for r in runs {
            counts.push(r.start - pos);
            counts.push(r.len);
            pos = r.end();
        }
        if pos < total || counts.is_empty() {
            counts.push(total - pos);
        }
        Self { size, counts }
    }

    /// Column-major runs of set pixels (zero counts skipped, touching runs merged).
    pub fn runs(&self) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::with_capacity(self.counts.len() / 2);
        let mut pos = 0u32;
        for (j, &c) in self.counts.iter().enumerate() {
            if j % 2 == 1 && c > 0 {
                match out.last_mut() {
                    Some(last) if last.end() == pos => last.len += c,
                    _ => out.push(Run { start: pos, len: c }),
                }
            }
            pos += c;
        }
        out
    }

    /// Encodes a full-image mask (pycocotools `encode` of the Fortran-ordered array).
    ///
    /// # Panics
    /// When the image has more than `u32::MAX` pixels.
    pub fn from_mask(mask: &BitMask) -> Self {
        Self::from_runs(&runs::from_bitmask(mask, Order::ColumnMajor), mask.size())
    }

    /// Encodes a cropped mask, visiting only its rectangle.
    pub fn from_cropped(mask: &CroppedMask) -> Self {
        Self::from_runs(&runs::from_cropped(mask, Order::ColumnMajor), mask.image_size())
    }

    /// Decodes into a full-image, row-major mask.
    pub fn to_mask(&self) -> BitMask {
        runs::to_bitmask(&self.runs(), self.size, Order::ColumnMajor)
    }

    /// Decodes into a mask cropped to its tight bounding rectangle.
    pub fn to_cropped(&self) -> CroppedMask {
        runs::to_cropped(&self.runs(), self.size, Order::ColumnMajor)
    }

    /// From a DSB (column-major) RLE: same pixel order, so only the counts change.
    pub fn from_dsb(rle: &DsbRle) -> Self {
        Self::from_runs(rle.runs(), rle.size())
    }

    /// From a Kaggle (row-major) RLE, through its cropped mask.
    pub fn from_kaggle(rle: &KaggleRle) -> Self {
        Self::from_cropped(&rle.to_cropped())
    }

    /// As a Kaggle (row-major) RLE, through the cropped mask.
    pub fn to_kaggle(&self) -> KaggleRle {
        KaggleRle::from_cropped(&self.to_cropped())
    }

    /// As a DSB (column-major) RLE.
    pub fn to_dsb(&self) -> DsbRle {
        let s = runs::format(&self.runs());
        // The runs come from valid counts: sorted, disjoint, inside the image.
        DsbRle::parse(&s, self.size).unwrap_or_else(|_| DsbRle::from_mask(&self.to_mask()))
    }

    /// Number of set pixels (pycocotools `area`).
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).map(|&c| c as u64).sum()
    }

    /// `[x, y, w, h]` exactly as pycocotools `toBbox` (integer-valued; `[0, 0, 0, 0]` when empty).
    pub fn to_bbox(&self) -> [f64; 4] {
        let h = self.size.height as u32;
        let w = self.size.width as u32;
        let m = self.counts.len() / 2 * 2;
        if m == 0 || h == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u32, 0u32);
        let (mut cc, mut xp) = (0u32, 0u32);
        for j in 0..m {
            cc = cc.wrapping_add(self.counts[j]);
            let t = cc.wrapping_sub((j % 2) as u32);
            let y = t % h;
            let x = (t - y) / h;
            if j % 2 == 0 {
                xp = x;
            } else if xp < x {
                ys = 0;
                ye = h - 1;
            }
            xs = xs.min(x);
            xe = xe.max(x);
            ys = ys.min(y);
            ye = ye.max(y);
        }
        [
            xs as f64,
            ys as f64,
            xe.wrapping_sub(xs).wrapping_add(1) as f64,
            ye.wrapping_sub(ys).wrapping_add(1) as f64,
        ]
    }

    /// [`CocoRle::to_bbox`] as a [`BoxXyxy`].
    pub fn to_box_xyxy(&self) -> BoxXyxy {
        let [x, y, w, h] = self.to_bbox();
        BoxXyxy::from_xywh(x as f32, y as f32, w as f32, h as f32)
    }

    /// Rasterises one polygon `[x0, y0, x1, y1, …]` exactly as pycocotools `rleFrPoly`
    /// (5× upsampled boundary, pixel centres at integer coordinates).
    ///
    /// The boundary is walked in steps of 1/5 pixel, so its cost grows with the distance of the
    /// vertices, wherever they are; pycocotools clips everything outside the image. A vertex more
    /// than one image size (`max(height, width) + 1` pixels) outside the image is refused: it is a
    /// unit or coordinate-order bug, and an edge to `x = 1e9` would need some 10^10 boundary points
    /// (tens of GB) before clipping.
    ///
    /// # Errors
    /// [`Error::PolygonTooShort`] (< 3 points or odd length), [`Error::PolygonCoordinate`]
    /// (NaN or infinite), [`Error::PolygonFarOutside`], [`Error::ImageTooLarge`].
    pub fn from_polygon(xy: &[f64], height: usize, width: usize) -> Result<Self> {
        check_polygon(0, xy)?;
        check_extent(0, xy, height, width)?;
        let size = ImageSize::new(height, width);
        runs::check_size(size)?;
        Ok(Self { size, counts: rasterize_polygon(xy, height, width) })
    }

    /// Rasterises the polygons of one annotation and merges them (union), as `COCO.annToRLE`.
    ///
    /// # Errors
    /// [`Error::Empty`] for no polygon, then as [`CocoRle::from_polygon`] with the polygon index.
    pub fn from_polygons(polygons: &[Vec<f64>], height: usize, width: usize) -> Result<Self> {
        if polygons.is_empty() {
            return Err(Error::Empty { what: "polygons of an annotation" });
        }
        let size = ImageSize::new(height, width);
        runs::check_size(size)?;
        let mut rles = Vec::with_capacity(polygons.len());
        for (i, p) in polygons.iter().enumerate() {
            check_polygon(i, p)?;
            check_extent(i, p, height, width)?;
            rles.push(Self { size, counts: rasterize_polygon(p, height, width) });
        }
        Self::merge(&rles, false)
    }

    /// Rasterises a box `[x, y, w, h]` as pycocotools `frBbox` (a 4-point polygon).
    ///
    /// # Errors
    /// [`Error::PolygonCoordinate`] for a non-finite value, [`Error::PolygonFarOutside`],
    /// [`Error::ImageTooLarge`].
    pub fn from_bbox(xywh: [f64; 4], height: usize, width: usize) -> Result<Self> {
        let [xs, ys, w, h] = xywh;
        let (xe, ye) = (xs + w, ys + h);
        Self::from_polygon(&[xs, ys, xs, ye, xe, ye, xe, ys], height, width)
    }

    /// Union (`intersect = false`) or intersection of masks, as pycocotools `merge`.
    ///
    /// # Errors
    /// [`Error::Empty`] for no mask; [`Error::SizeMismatch`] naming the first mask whose size
    /// differs from the first one's (pycocotools silently returns an empty 0×0 RLE there).
    pub fn merge(rles: &[CocoRle], intersect: bool) -> Result<Self> {
        let Some(first) = rles.first() else {
            return Err(Error::Empty { what: "merge" });
        };
        let size = first.size;
        let mut cnts = first.counts.clone();
        for (index, b) in rles.iter().enumerate().skip(1) {
            if b.size != size {
                return Err(Error::SizeMismatch { index, got: b.size, want: size });
            }
            cnts = merge_pair(&cnts, &b.counts, intersect);
        }
        Ok(Self { size, counts: cnts })
    }

    /// Union of two masks.
    ///
    /// # Errors
    /// [`Error::SizeMismatch`].
    pub fn union(&self, other: &Self) -> Result<Self> {
        Self::merge(&[self.clone(), other.clone()], false)
    }

    /// Intersection of two masks.
    ///
    /// # Errors
    /// [`Error::SizeMismatch`].
    pub fn intersect(&self, other: &Self) -> Result<Self> {
        Self::merge(&[self.clone(), other.clone()], true)
    }

    /// Number of pixels set in both masks, from one walk over both count lists (no bitmap).
    ///
    /// # Errors
    /// [`Error::SizeMismatch`] when the image sizes differ.
    pub fn intersection_area(&self, other: &Self) -> Result<u64> {
        if self.size != other.size {
            return Err(Error::SizeMismatch { index: 1, got: other.size, want: self.size });
        }
        let (a, b) = (&self.counts, &other.counts);
        let (mut ia, mut ib) = (0usize, 0usize);
        // Half-open position ranges of the current count of each list.
        let (mut ea, mut eb) = (a[0] as u64, b[0] as u64);
        let (mut sa, mut sb) = (0u64, 0u64);
        let mut inter = 0u64;
        loop {
            if ia % 2 == 1 && ib % 2 == 1 {
                let lo = sa.max(sb);
                let hi = ea.min(eb);
                if hi > lo {
                    inter += hi - lo;
                }
            }
            if ea <= eb {
                ia += 1;
                if ia >= a.len() {
                    break;
                }
                sa = ea;
                ea += a[ia] as u64;
            } else {
                ib += 1;
                if ib >= b.len() {
                    break;
                }
                sb = eb;
                eb += b[ib] as u64;
            }
        }
        Ok(inter)
    }

    /// IoU of this detection with a ground truth `gt`, as pycocotools `iou([self], [gt], [iscrowd])`.
    ///
    /// With `iscrowd`, the union is the area of `self` (the detection).
    ///
    /// # Errors
    /// [`Error::SizeMismatch`] when the image sizes differ (pycocotools returns -1 there).
    pub fn iou(&self, gt: &Self, iscrowd: bool) -> Result<f64> {
        if self.size != gt.size {
            return Err(Error::SizeMismatch { index: 1, got: gt.size, want: self.size });
        }
        let o = bbox_iou(&self.to_bbox(), &gt.to_bbox(), iscrowd);
        Ok(if o > 0.0 { rle_iou(self, gt, iscrowd) } else { o })
    }
}

fn check_polygon(polygon: usize, xy: &[f64]) -> Result<()> {
    if xy.len() < 6 || xy.len() % 2 == 1 {
        return Err(Error::PolygonTooShort { polygon, coords: xy.len() });
    }
    if let Some((index, &value)) = xy.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::PolygonCoordinate { polygon, index, value });
    }
    Ok(())
}

/// [`Error::PolygonFarOutside`] for a vertex more than `max(h, w) + 1` pixels outside the image
/// (nothing to check for an empty image: nothing is rasterised).
fn check_extent(polygon: usize, xy: &[f64], h: usize, w: usize) -> Result<()> {
    if h == 0 || w == 0 {
        return Ok(());
    }
    let margin = h.max(w) as f64 + 1.0;
    for (index, &value) in xy.iter().enumerate() {
        let extent = if index % 2 == 0 { w } else { h } as f64;
        if !(value >= -margin && value <= extent + margin) {
            return Err(Error::PolygonFarOutside { polygon, index, value, height: h, width: w });
        }
    }
    Ok(())
}

/// pycocotools `rleFrPoly`, step by step.
fn rasterize_polygon(xy: &[f64], h: usize, w: usize) -> Vec<u32> {
    if h == 0 || w == 0 {
        return vec![0];
    }
    let scale = 5.0f64;
    let k = xy.len() / 2;
    // C casts `(int)(scale*v+.5)`: truncation toward zero; `as` saturates instead of overflowing.
    let mut x: Vec<i64> = (0..k).map(|j| (scale * xy[2 * j] + 0.5) as i32 as i64).collect();
    let mut y: Vec<i64> = (0..k).map(|j| (scale * xy[2 * j + 1] + 0.5) as i32 as i64).collect();
    x.push(x[0]);
    y.push(y[0]);
    let mut u: Vec<i64> = Vec::new();
    let mut v: Vec<i64> = Vec::new();
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        if dx >= dy {
            // dx == dy == 0 gives 0/0 in C; that single point's v is never read (its neighbours
            // share its u), so any value works here.
            let s = if dx == 0 { 0.0 } else { (ye - ys) as f64 / dx as f64 };
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + xs);
                v.push((ys as f64 + s * t as f64 + 0.5) as i32 as i64);
            }
        } else {
            let s = (xe - xs) as f64 / dy as f64;
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + ys);
                u.push((xs as f64 + s * t as f64 + 0.5) as i32 as i64);
            }
        }
    }
    // Points on the y-boundary, downsampled.
    let mut a: Vec<u32> = Vec::with_capacity(u.len() / 4 + 1);
    let wmax = (w - 1) as f64;
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let mut xd = (if u[j] < u[j - 1] { u[j] } else { u[j] - 1 }) as f64;
        xd = (xd + 0.5) / scale - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > wmax {
            continue;
        }
        let mut yd = (if v[j] < v[j - 1] { v[j] } else { v[j - 1] }) as f64;
        yd = (yd + 0.5) / scale - 0.5;
        if yd < 0.0 {
            yd = 0.0;
        } else if yd > h as f64 {
            yd = h as f64;
        }
        yd = yd.ceil();
        let (xi, yi) = (xd as i64, yd as i64);
        a.push((xi * h as i64 + yi) as u32);
    }
    a.push((h * w) as u32);
    a.sort_unstable();
    let mut prev = 0u32;
    for e in a.iter_mut() {
        let t = *e;
        *e -= prev;
        prev = t;
    }
    let mut b: Vec<u32> = Vec::with_capacity(a.len());
    let mut j = 0;
    b.push(a[j]);
    j += 1;
    while j < a.len() {
        if a[j] > 0 {
            b.push(a[j]);
            j += 1;
        } else {
            j += 1;
            if j < a.len() {
                if let Some(last) = b.last_mut() {
                    *last += a[j];
                }
                j += 1;
            }
        }
    }
    b
}

/// One step of pycocotools `rleMerge`.
fn merge_pair(a: &[u32], b: &[u32], intersect: bool) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut ca, mut cb) = (a[0], b[0]);
    let (mut v, mut va, mut vb) = (false, false, false);
    let (mut ia, mut ib, mut cc) = (1usize, 1usize, 0u32);
    let mut ct = 1u32;
    while ct > 0 {
        let c = ca.min(cb);
        cc += c;
        ct = 0;
        ca -= c;
        if ca == 0 && ia < a.len() {
            ca = a[ia];
            ia += 1;
            va = !va;
        }
        ct += ca;
        cb -= c;
        if cb == 0 && ib < b.len() {
            cb = b[ib];
            ib += 1;
            vb = !vb;
        }
        ct += cb;
        let vp = v;
        v = if intersect { va && vb } else { va || vb };
        if v != vp || ct == 0 {
            out.push(cc);
            cc = 0;
        }
    }
    out
}

/// pycocotools `bbIou` for one pair of `[x, y, w, h]` boxes (`d` detection, `g` ground truth).
#[inline]
pub(crate) fn bbox_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let ga = g[2] * g[3];
    let da = d[2] * d[3];
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { da } else { da + ga - i };
    i / u
}

/// The run-merging part of pycocotools `rleIou` for one pair.
fn rle_iou(dt: &CocoRle, gt: &CocoRle, crowd: bool) -> f64 {
    let (a, b) = (&dt.counts, &gt.counts);
    let (mut ca, mut cb) = (a[0], b[0]);
    let (mut va, mut vb) = (false, false);
    let (mut ia, mut ib) = (1usize, 1usize);
    let (mut i, mut u) = (0u64, 0u64);
    let mut ct = 1u64;
    while ct > 0 {
        let c = ca.min(cb);
        if va || vb {
            u += c as u64;
            if va && vb {
                i += c as u64;
            }
        }
        ct = 0;
        ca -= c;
        if ca == 0 && ia < a.len() {
            ca = a[ia];
            ia += 1;
            va = !va;
        }
        ct += ca as u64;
        cb -= c;
        if cb == 0 && ib < b.len() {
            cb = b[ib];
            ib += 1;
            vb = !vb;
        }
        ct += cb as u64;
    }
    if i == 0 {
        u = 1;
    } else if crowd {
        u = dt.area();
    }
    i as f64 / u as f64
}

/// The IoU matrix of detections `dt` against ground truths `gt`, as pycocotools
/// `iou(dt, gt, iscrowd)`: row-major `[dt.len()][gt.len()]`.
///
/// # Errors
/// [`Error::LengthMismatch`] when `iscrowd.len() != gt.len()`; [`Error::SizeMismatch`] when two
/// masks of different image sizes would be compared.
pub fn iou_matrix(dt: &[CocoRle], gt: &[CocoRle], iscrowd: &[bool]) -> Result<Vec<f64>> {
    if iscrowd.len() != gt.len() {
        return Err(Error::LengthMismatch {
            what: "iou_matrix gt/iscrowd",
            left: gt.len(),
            right: iscrowd.len(),
        });
    }
    // Pairs whose pixel bounds do not meet have IoU 0, which is also what pycocotools' box
    // pre-filter gives them; the others get pycocotools' exact value.
    let size = dt.first().or(gt.first()).map(CocoRle::size);
    if let Some(size) = size
        && dt.iter().chain(gt).all(|m| m.size == size)
    {
        // One image size (the usual case): both sides as run batches, reused per thread.
        return CocoBatch::with_pair(size, |db, gb| {
            for m in dt {
                db.push(m)?;
            }
            for m in gt {
                gb.push(m)?;
            }
            db.iou_matrix(gb, iscrowd)
        });
    }
    let db: Vec<_> = dt.iter().map(crate::overlap::coco_bounds).collect();
    let gb: Vec<_> = gt.iter().map(crate::overlap::coco_bounds).collect();
    let mut out = vec![0.0; dt.len() * gt.len()];
    for (d, g) in crate::overlap::candidate_pairs(&db, &gb) {
        let (dr, gr) = (&dt[d], &gt[g]);
        if dr.size != gr.size {
            return Err(Error::SizeMismatch { index: g, got: gr.size, want: dr.size });
        }
        out[d * gt.len() + g] = rle_iou(dr, gr, iscrowd[g]);
    }
    Ok(out)
}

/// The IoU matrix of `[x, y, w, h]` boxes, as pycocotools `iou` on boxes: row-major
/// `[dt.len()][gt.len()]`; with `iscrowd[g]` the union is the detection's area.
///
/// # Errors
/// [`Error::LengthMismatch`] when `iscrowd.len() != gt.len()`.
pub fn bbox_iou_matrix(dt: &[[f64; 4]], gt: &[[f64; 4]], iscrowd: &[bool]) -> Result<Vec<f64>> {
    if iscrowd.len() != gt.len() {
        return Err(Error::LengthMismatch {
            what: "bbox_iou_matrix gt/iscrowd",
            left: gt.len(),
            right: iscrowd.len(),
        });
    }
    let mut out = Vec::with_capacity(dt.len() * gt.len());
    for d in dt {
        for (g, crowd) in gt.iter().zip(iscrowd) {
            out.push(bbox_iou(d, g, *crowd));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_string_round_trips_known_pycocotools_value() {
        // pycocotools: encode(np.asfortranarray(eye(3)))['counts'] == b'0111000' -> counts [0,1,3,1,3,1]
        let rle = CocoRle::from_counts(vec![0, 1, 3, 1, 3, 1], ImageSize::new(3, 3)).unwrap();
        let s = rle.to_counts_string();
        assert_eq!(CocoRle::from_counts_str(&s, rle.size()).unwrap(), rle);
        let mut eye = BitMask::zeros(ImageSize::new(3, 3));
        for i in 0..3 {
            eye.set(i, i, true);
        }
        assert_eq!(CocoRle::from_mask(&eye), rle);
        assert_eq!(rle.to_mask(), eye);
        assert_eq!(rle.to_bbox(), [0.0, 0.0, 3.0, 3.0]);
    }

    #[test]
    fn corrupt_strings_are_errors_with_positions() {
        let size = ImageSize::new(3, 3);
        assert!(matches!(
            CocoRle::from_counts_str("0 1", size),
            Err(Error::CountsByte { position: 1, byte: b' ' })
        ));
        assert!(matches!(
            CocoRle::from_counts_str("0P", size),
            Err(Error::CountsTruncated { position: 1 })
        ));
        assert!(matches!(
            CocoRle::from_counts_str("PPPPPPPP0", size),
            Err(Error::CountsTooLong { position: 0 })
        ));
        assert!(matches!(
            CocoRle::from_counts_str("1", size),
            Err(Error::CountsSum { sum: 1, .. })
        ));
        assert!(matches!(
            CocoRle::from_counts_str("O", size),
            Err(Error::CountOutOfRange { index: 0, value: -1 })
        ));
    }

    #[test]
    fn short_polygons_are_errors() {
        assert!(matches!(
            CocoRle::from_polygons(&[vec![0.0, 0.0, 1.0, 1.0, 2.0, 0.0], vec![1.0, 1.0]], 4, 4),
            Err(Error::PolygonTooShort { polygon: 1, coords: 2 })
        ));
        assert!(matches!(
            CocoRle::from_polygon(&[0.0, 0.0, f64::NAN, 1.0, 2.0, 0.0], 4, 4),
            Err(Error::PolygonCoordinate { index: 2, .. })
        ));
    }

    #[test]
    fn crowd_iou_divides_by_detection_area() {
        let size = ImageSize::new(4, 4);
        let mut a = BitMask::zeros(size);
        let mut b = BitMask::zeros(size);
        a.set(0, 0, true);
        b.set(0, 0, true);
        b.set(1, 1, true);
        let (ra, rb) = (CocoRle::from_mask(&a), CocoRle::from_mask(&b));
        assert_eq!(ra.iou(&rb, false).unwrap(), 0.5);
        assert_eq!(ra.iou(&rb, true).unwrap(), 1.0);
        assert_eq!(ra.union(&rb).unwrap(), rb);
        assert_eq!(ra.intersect(&rb).unwrap(), ra);
    }
}
