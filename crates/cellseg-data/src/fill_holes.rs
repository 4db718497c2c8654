//! Hole filling of instance masks, as `scipy.ndimage.binary_fill_holes` with its default
//! (4-connected) structure: background pixels that cannot reach the image border through
//! 4-connected background are set.

use cellseg_core::CroppedMask;

/// `mask` with its holes filled. Only the stored rectangle (plus a one-pixel ring, which is
/// background and connected to the image border) is visited.
pub fn fill_holes(mask: &CroppedMask) -> CroppedMask {
    let (top, left, h, w) = mask.rect();
    if h < 3 || w < 3 {
        return mask.clone();
    }
    let src = mask.as_slice();
    // Padded grid: 0 unvisited background, 1 foreground, 2 reached background.
    let (ph, pw) = (h + 2, w + 2);
    let mut grid = vec![0u8; ph * pw];
    for r in 0..h {
        for c in 0..w {
            grid[(r + 1) * pw + c + 1] = src[r * w + c];
        }
    }
    let mut stack = vec![0usize];
    grid[0] = 2;
    while let Some(i) = stack.pop() {
        let (r, c) = (i / pw, i % pw);
        let mut visit = |j: usize, grid: &mut Vec<u8>| {
            if grid[j] == 0 {
                grid[j] = 2;
                stack.push(j);
            }
        };
        if r > 0 {
            visit(i - pw, &mut grid);
        }
        if r + 1 < ph {
            visit(i + pw, &mut grid);
        }
        if c > 0 {
            visit(i - 1, &mut grid);
        }
        if c + 1 < pw {
            visit(i + 1, &mut grid);
        }
    }
    let mut data = Vec::with_capacity(h * w);
    for r in 0..h {
        for c in 0..w {
            data.push(u8::from(grid[(r + 1) * pw + c + 1] != 2));
        }
    }
    CroppedMask::new(mask.image_size(), top, left, h, w, data)
        .expect("same rectangle as the input mask")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::{BitMask, ImageSize};

    #[test]
    fn ring_is_filled_but_open_ring_is_not() {
        let size = ImageSize::new(7, 7);
        let mut ring = BitMask::zeros(size);
        for i in 1..6 {
            ring.set(1, i, true);
            ring.set(5, i, true);
            ring.set(i, 1, true);
            ring.set(i, 5, true);
        }
        let filled = fill_holes(&ring.to_cropped());
        assert_eq!(filled.area(), 25);
        ring.set(3, 5, false); // open the ring: the inside reaches the border
        assert_eq!(fill_holes(&ring.to_cropped()).area(), ring.area());
        // diagonal gap: background 4-connectivity cannot pass it, so the hole is filled
        let mut diag = BitMask::zeros(size);
        for (r, c) in [(1, 2), (2, 1), (2, 3), (3, 2)] {
            diag.set(r, c, true);
        }
        assert_eq!(fill_holes(&diag.to_cropped()).area(), 5);
    }
}
