//! OpenCV's `fillConvexPoly` rasterisation (8-connected, no sub-pixel shift), exactly, including what
//! it does with **non-convex** polygons.
//!
//! `fillConvexPoly(img, pts, color)` (OpenCV 4.x `imgproc/src/drawing.cpp`, behaviour only):
//! 1. draws every edge `pts[i-1] → pts[i]` (closing edge first) as an 8-connected Bresenham line,
//!    walked from its left end;
//! 2. with fewer than 3 points it stops there;
//! 3. otherwise it starts two edge walkers at the first vertex with the smallest `y`, one following
//!    the vertex list forwards and one backwards, and fills each scanline `y` from the top vertex down
//!    to the largest vertex `y` between the two walkers' `x` (16.16 fixed point, rounded). When a
//!    walker reaches the end `y` of its edge it moves on to the next vertex **strictly below the
//!    current scanline**, skipping vertices at or above it, and starts its new edge at the last
//!    skipped vertex's `x` (not at that vertex's `y`). Both walkers share one budget of `npts` vertex
//!    steps; when it runs out the fill stops, before drawing that scanline.
//!
//! On a convex polygon this is the usual scanline fill. On a non-convex one (the traced outline of a
//! cell) it fills the span between the left-most and right-most chains seen from the top vertex,
//! which closes concavities in ways that depend on the start vertex and direction. That is why the
//! contour points must match OpenCV's exactly ([`crate::contours`]).

const XY_SHIFT: u32 = 16;
const XY_ONE: i64 = 1 << XY_SHIFT;
const HALF: i64 = XY_ONE >> 1;

/// A row-major `u8` canvas that polygons are drawn into with value 1.
#[derive(Debug)]
pub struct Canvas<'a> {
    /// Pixels, row-major.
    pub data: &'a mut [u8],
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl Canvas<'_> {
    fn set(&mut self, x: i64, y: i64) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.data[y as usize * self.width + x as usize] = 1;
        }
    }

    fn hline(&mut self, y: i64, x1: i64, x2: i64) {
        let (x1, x2) = (x1.max(0) as usize, x2.min(self.width as i64 - 1));
        if x2 < 0 || x1 > x2 as usize || y < 0 || y as usize >= self.height {
            return;
        }
        let row = y as usize * self.width;
        self.data[row + x1..=row + x2 as usize].fill(1);
    }
}

/// Draws the 8-connected line `p1 → p2` as OpenCV's `LineIterator(…, 8, left_to_right = true)`.
///
/// Pixels outside the canvas are skipped (OpenCV clips the line first; the two agree whenever both
/// ends lie inside the canvas, which holds for contours of the canvas' own mask).
pub fn draw_line(canvas: &mut Canvas<'_>, p1: [i64; 2], p2: [i64; 2]) {
    let (mut a, mut b) = (p1, p2);
    if b[0] < a[0] {
        std::mem::swap(&mut a, &mut b);
    }
    let mut dx = b[0] - a[0];
    let mut dy = b[1] - a[1];
    let ystep = if dy < 0 { -1 } else { 1 };
    dy = dy.abs();
    // Major axis step and minor axis step.
    let (mut major, mut minor) = ([1i64, 0i64], [0i64, ystep]);
    if dy > dx {
        std::mem::swap(&mut dx, &mut dy);
        std::mem::swap(&mut major, &mut minor);
    }
    let mut err = dx - 2 * dy;
    let (plus, minus) = (2 * dx, -2 * dy);
    let mut p = a;
    for _ in 0..=dx {
        canvas.set(p[0], p[1]);
        let step_minor = err < 0;
        err += minus + if step_minor { plus } else { 0 };
        p[0] += major[0] + if step_minor { minor[0] } else { 0 };
        p[1] += major[1] + if step_minor { minor[1] } else { 0 };
    }
}

#[derive(Clone, Copy)]
struct Walker {
    idx: usize,
    di: usize,
    x: i64,
    dx: i64,
    ye: i64,
}

/// Fills the polygon `pts` (`[x, y]` pixel coordinates) into `canvas` as OpenCV's
/// `fillConvexPoly(canvas, pts, 1, LINE_8, shift = 0)` does, for convex and non-convex polygons.
pub fn fill_convex_poly(canvas: &mut Canvas<'_>, pts: &[[i64; 2]]) {
    let n = pts.len();
    if n == 0 {
        return;
    }
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (pts[0][0], pts[0][0], pts[0][1], pts[0][1]);
    let mut imin = 0;
    let mut p0 = pts[n - 1];
    for (i, &p) in pts.iter().enumerate() {
        if p[1] < ymin {
            ymin = p[1];
            imin = i;
        }
        ymax = ymax.max(p[1]);
        xmax = xmax.max(p[0]);
        xmin = xmin.min(p[0]);
        draw_line(canvas, p0, p);
        p0 = p;
    }
    let (w, h) = (canvas.width as i64, canvas.height as i64);
    if n < 3 || xmax < 0 || ymax < 0 || xmin >= w || ymin >= h {
        return;
    }
    let ymax = ymax.min(h - 1);
    let start = Walker { idx: imin, di: 1, x: -XY_ONE, dx: 0, ye: ymin };
    let mut edge = [start, Walker { di: n - 1, ..start }];
    let mut budget = n as i64;
    let mut y = ymin;
    loop {
        for e in &mut edge {
            if y < e.ye {
                continue;
            }
            let mut idx0 = e.idx;
            let mut idx = (idx0 + e.di) % n;
            loop {
                let ok = budget > 0;
                budget -= 1;
                if !ok {
                    break;
                }
                let ty = pts[idx][1];
                if ty > y {
                    let xs = pts[idx0][0] << XY_SHIFT;
                    let xe = pts[idx][0] << XY_SHIFT;
                    e.ye = ty;
                    // Rounded division; `/` truncates toward zero as C++'s does.
                    e.dx = ((xe - xs) * 2 + (ty - y)) / (2 * (ty - y));
                    e.x = xs;
                    e.idx = idx;
                    break;
                }
                idx0 = idx;
                idx = (idx + e.di) % n;
            }
        }
        if budget < 0 {
            break;
        }
        if y >= 0 {
            let (l, r) = if edge[0].x > edge[1].x { (1, 0) } else { (0, 1) };
            let x1 = (edge[l].x + HALF) >> XY_SHIFT;
            let x2 = (edge[r].x + HALF) >> XY_SHIFT;
            if x2 >= 0 && x1 < w {
                canvas.hline(y, x1, x2);
            }
        }
        edge[0].x += edge[0].dx;
        edge[1].x += edge[1].dx;
        y += 1;
        if y > ymax {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(h: usize, w: usize, pts: &[[i64; 2]]) -> Vec<u8> {
        let mut data = vec![0u8; h * w];
        fill_convex_poly(&mut Canvas { data: &mut data, height: h, width: w }, pts);
        data
    }

    #[test]
    fn triangle_is_filled() {
        let d = draw(5, 5, &[[0, 0], [4, 0], [0, 4]]);
        let rows: Vec<u32> = d.chunks(5).map(|r| r.iter().map(|&v| v as u32).sum()).collect();
        assert_eq!(rows, vec![5, 4, 3, 2, 1]);
    }

    #[test]
    fn two_points_draw_only_a_line() {
        let d = draw(3, 3, &[[0, 0], [2, 2]]);
        assert_eq!(d, vec![1, 0, 0, 0, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn lines_are_bresenham_from_the_left() {
        let mut data = vec![0u8; 3 * 5];
        draw_line(&mut Canvas { data: &mut data, height: 3, width: 5 }, [4, 2], [0, 0]);
        // OpenCV: (0,0) (1,0) (2,1) (3,1) (4,2), walked from the left end.
        assert_eq!(data, vec![1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1]);
    }
}
