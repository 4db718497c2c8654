//! Border following (Suzuki & Abe 1985) with the exact output of OpenCV's `findContours`.
//!
//! The seed re-corrupts astro masks with `cv2.findContours(mask, RETR_TREE, CHAIN_APPROX_SIMPLE)`
//! and fills every contour. What matters for the fill is each contour's point sequence (start point,
//! direction and which pixels become vertices), so this module reproduces OpenCV 4.x
//! (`imgproc/src/contours_new.cpp`) point for point; the hierarchy is not built because the fill is
//! the same for every retrieval mode that returns all contours (`RETR_LIST`, `RETR_CCOMP`,
//! `RETR_TREE`).
//!
//! Semantics (learnt from the OpenCV source, written here from the paper's description):
//! - the mask is framed with one row/column of zeros; pixels are 0 (background), 1 (unvisited
//!   foreground), "visited" (> 1) or "right-marked" (< 0; the border's pixel whose east neighbour was
//!   examined as 0);
//! - a raster scan (rows top to bottom, columns left to right over the original image) starts an
//!   **outer** border at a 1 whose west neighbour is 0, and a **hole** border at the pixel west of a
//!   0 when that pixel is 1 or visited (not right-marked);
//! - chain directions are `0 E, 1 NE, 2 N, 3 NW, 4 W, 5 SW, 6 S, 7 SE` (y grows downwards); the first
//!   neighbour is searched clockwise from W (outer) or E (hole), then each next neighbour
//!   counter-clockwise from the direction back to the previous pixel;
//! - `CHAIN_APPROX_SIMPLE` emits the pixels where the chain direction changes (the start pixel
//!   included when the closing step changes direction); a lone pixel gives one point.
//!
//! # References
//! S. Suzuki and K. Abe, "Topological structural analysis of digitized binary images by border
//! following", CVGIP 30(1), 1985. OpenCV 4.12 `findContours` (behaviour only).

/// How a border's chain is turned into points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainApprox {
    /// Every border pixel (`CHAIN_APPROX_NONE`).
    None,
    /// Only the pixels where the direction changes (`CHAIN_APPROX_SIMPLE`).
    Simple,
}

/// One border: its points `(x, y)` in the coordinates of the traced buffer, in tracing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contour {
    /// Points `[x, y]`.
    pub points: Vec<[i32; 2]>,
    /// True for a hole border (the inner border of a foreground region).
    pub is_hole: bool,
}

/// `(dx, dy)` of chain code `s`.
const DIRS: [(isize, isize); 8] =
    [(1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1)];

const VISITED: i8 = 2;
const RIGHT: i8 = -1;

/// All borders of the non-zero pixels of a row-major `height × width` buffer, in discovery order.
///
/// Equals, contour for contour and point for point, what OpenCV's `findContours(mask, RETR_LIST or
/// RETR_TREE, CHAIN_APPROX_NONE or CHAIN_APPROX_SIMPLE)` returns (OpenCV orders the list by its
/// hierarchy instead).
///
/// # Panics
/// When `mask.len() != height * width`.
pub fn find_contours(
    mask: &[u8],
    height: usize,
    width: usize,
    approx: ChainApprox,
) -> Vec<Contour> {
    assert_eq!(mask.len(), height * width, "mask buffer does not match {height}x{width}");
    let (ph, pw) = (height + 2, width + 2);
    let mut img = vec![0i8; ph * pw];
    for (r, row) in mask.chunks_exact(width.max(1)).enumerate().take(height) {
        let dst = &mut img[(r + 1) * pw + 1..(r + 1) * pw + 1 + width];
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = i8::from(v != 0);
        }
    }
    let deltas: [isize; 8] = DIRS.map(|(dx, dy)| dx + dy * pw as isize);
    let mut out = Vec::new();
    for y in 1..=height {
        for x in 1..=width {
            let i = y * pw + x;
            let (prev, p) = (img[i - 1], img[i]);
            if prev == 0 && p == 1 {
                out.push(trace(&mut img, pw, &deltas, i, false, approx));
            } else if p == 0 && prev >= 1 {
                out.push(trace(&mut img, pw, &deltas, i - 1, true, approx));
            }
        }
    }
    out
}

/// Follows one border from `start` (index in the framed buffer), marking its pixels.
fn trace(
    img: &mut [i8],
    pw: usize,
    deltas: &[isize; 8],
    start: usize,
    is_hole: bool,
    approx: ChainApprox,
) -> Contour {
    let at = |i: usize, s: usize| (i as isize + deltas[s & 7]) as usize;
    let mut pt = [(start % pw) as i32 - 1, (start / pw) as i32 - 1];
    let mut points = Vec::new();
    // First neighbour: clockwise from W (outer) or E (hole), stopping back at the start direction.
    let s_start: usize = if is_hole { 0 } else { 4 };
    let mut s = s_start;
    let mut i1;
    loop {
        s = (s + 7) & 7;
        i1 = at(start, s);
        if img[i1] != 0 || s == s_start {
            break;
        }
    }
    if s == s_start {
        img[start] = RIGHT;
        points.push(pt);
        return Contour { points, is_hole };
    }
    let mut i3 = start;
    let mut prev_s = s ^ 4;
    loop {
        let s_end = s;
        let mut i4 = i3;
        // Counter-clockwise from the direction back to the previous pixel.
        while s < 15 {
            s += 1;
            i4 = at(i3, s);
            if img[i4] != 0 {
                break;
            }
        }
        s &= 7;
        if s >= 1 && s <= s_end {
            img[i3] = RIGHT;
        } else if img[i3] == 1 {
            img[i3] = VISITED;
        }
        if approx == ChainApprox::None || s != prev_s {
            points.push(pt);
        }
        prev_s = s;
        pt[0] += DIRS[s].0 as i32;
        pt[1] += DIRS[s].1 as i32;
        if i4 == start && i3 == i1 {
            break;
        }
        i3 = i4;
        s = (s + 4) & 7;
    }
    Contour { points, is_hole }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_has_four_corners_counter_clockwise_from_top_left() {
        let mut m = vec![0u8; 25];
        for r in 1..4 {
            for c in 1..4 {
                m[r * 5 + c] = 1;
            }
        }
        let cs = find_contours(&m, 5, 5, ChainApprox::Simple);
        assert_eq!(cs.len(), 1);
        // cv2.findContours on this square gives [[1,1],[1,3],[3,3],[3,1]].
        assert_eq!(cs[0].points, vec![[1, 1], [1, 3], [3, 3], [3, 1]]);
        assert!(!cs[0].is_hole);
    }

    #[test]
    fn ring_has_an_outer_and_a_hole_border() {
        let mut m = vec![1u8; 9];
        m[4] = 0;
        let cs = find_contours(&m, 3, 3, ChainApprox::Simple);
        assert_eq!(cs.len(), 2);
        assert!(!cs[0].is_hole && cs[1].is_hole);
        // cv2 gives [[0,0],[0,2],[2,2],[2,0]] and the hole [[0,1],[1,0],[2,1],[1,2]].
        assert_eq!(cs[0].points, vec![[0, 0], [0, 2], [2, 2], [2, 0]]);
        assert_eq!(cs[1].points, vec![[0, 1], [1, 0], [2, 1], [1, 2]]);
    }

    #[test]
    fn lone_pixel_is_one_point_and_empty_mask_has_no_contour() {
        let cs = find_contours(&[0, 0, 0, 1], 2, 2, ChainApprox::Simple);
        assert_eq!(cs, vec![Contour { points: vec![[1, 1]], is_hole: false }]);
        assert!(find_contours(&[0; 4], 2, 2, ChainApprox::Simple).is_empty());
        assert!(find_contours(&[], 0, 0, ChainApprox::None).is_empty());
    }
}
