//! Astro re-corruption and hole filling.
//!
//! The astro annotations of the competition were drawn as polygons filled with `fillConvexPoly`,
//! which is wrong for non-convex outlines; the seed reproduces that artefact on its astro predictions
//! (`post_process.py::corrupt_mask`, "+0.002 LB"): `findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`,
//! then `fillConvexPoly` on **every** contour (hole borders included, so holes are filled).
//! [`corrupt`] does the same with [`crate::contours`] and [`crate::polygon`], inside the mask's
//! rectangle (both steps are translation-invariant and never leave the mask's bounding box).
//!
//! [`fill_holes`] is `scipy.ndimage.binary_fill_holes` with its default structure (4-connected
//! background): background pixels not 4-connected to the image border become foreground. The seed
//! applies it to every training mask (`rles_to_mask_fix`, SEED.md §1.3).

use cellseg_core::CroppedMask;

use crate::contours::{ChainApprox, find_contours};
use crate::polygon::{Canvas, fill_convex_poly};

/// The seed's astro re-corruption of one mask: every OpenCV contour filled as a "convex" polygon.
pub fn corrupt(mask: &CroppedMask) -> CroppedMask {
    let (top, left, h, w) = mask.rect();
    if h == 0 || w == 0 {
        return mask.clone();
    }
    let contours = find_contours(mask.as_slice(), h, w, ChainApprox::Simple);
    let mut data = vec![0u8; h * w];
    let mut canvas = Canvas { data: &mut data, height: h, width: w };
    let mut pts: Vec<[i64; 2]> = Vec::new();
    for c in &contours {
        pts.clear();
        pts.extend(c.points.iter().map(|p| [i64::from(p[0]), i64::from(p[1])]));
        fill_convex_poly(&mut canvas, &pts);
    }
    CroppedMask::new(mask.image_size(), top, left, h, w, data)
        .expect("same rectangle as a valid mask")
}

/// `scipy.ndimage.binary_fill_holes` (4-connected background) of one mask.
pub fn fill_holes(mask: &CroppedMask) -> CroppedMask {
    let (top, left, h, w) = mask.rect();
    if h == 0 || w == 0 {
        return mask.clone();
    }
    // Pixels outside the rectangle are background and 4-connected to the image border, so the
    // rectangle framed by one background ring (the seed of the flood) gives the same answer.
    let (ph, pw) = (h + 2, w + 2);
    let src = mask.as_slice();
    let mut outside = vec![false; ph * pw];
    let fg = |r: usize, c: usize| -> bool {
        r >= 1 && c >= 1 && r <= h && c <= w && src[(r - 1) * w + (c - 1)] != 0
    };
    let mut stack = vec![0usize];
    outside[0] = true;
    while let Some(i) = stack.pop() {
        let (r, c) = (i / pw, i % pw);
        let mut visit = |rr: usize, cc: usize, stack: &mut Vec<usize>| {
            let j = rr * pw + cc;
            if !outside[j] && !fg(rr, cc) {
                outside[j] = true;
                stack.push(j);
            }
        };
        if r > 0 {
            visit(r - 1, c, &mut stack);
        }
        if r + 1 < ph {
            visit(r + 1, c, &mut stack);
        }
        if c > 0 {
            visit(r, c - 1, &mut stack);
        }
        if c + 1 < pw {
            visit(r, c + 1, &mut stack);
        }
    }
    let mut data = vec![0u8; h * w];
    for r in 0..h {
        for c in 0..w {
            data[r * w + c] = u8::from(!outside[(r + 1) * pw + c + 1]);
        }
    }
    CroppedMask::new(mask.image_size(), top, left, h, w, data)
        .expect("same rectangle as a valid mask")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::ImageSize;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fill_holes_is_an_idempotent_superset(bits in proptest::collection::vec(0u8..2, 64), top in 0usize..4, left in 0usize..4) {
            let m = CroppedMask::new(ImageSize::new(12, 12), top, left, 8, 8, bits).unwrap();
            let f = fill_holes(&m);
            prop_assert_eq!(f.intersection(&m), m.area());
            prop_assert_eq!(fill_holes(&f), f.clone());
            // Corruption never leaves the mask's rectangle.
            let c = corrupt(&m);
            prop_assert_eq!(c.rect(), m.rect());
        }
    }

    fn mask(rows: &[&str]) -> CroppedMask {
        let (h, w) = (rows.len(), rows[0].len());
        let data = rows.iter().flat_map(|r| r.bytes().map(|b| u8::from(b == b'#'))).collect();
        CroppedMask::new(ImageSize::new(h + 4, w + 4), 2, 2, h, w, data).unwrap()
    }

    #[test]
    fn fill_holes_fills_enclosed_background_only() {
        let m = mask(&["#####", "#...#", "#.#.#", "#####", "..#.."]);
        let f = fill_holes(&m);
        assert_eq!(f.area(), 5 * 4 + 1);
        // A 4-connected leak (diagonal gaps do not leak).
        let leak = mask(&["###", "#.#", "#.#"]);
        assert_eq!(fill_holes(&leak).area(), leak.area());
    }

    #[test]
    fn corrupt_fills_a_ring_and_keeps_a_square() {
        let ring = mask(&["###", "#.#", "###"]);
        assert_eq!(corrupt(&ring).area(), 9);
        let sq = mask(&["##", "##"]);
        assert_eq!(corrupt(&sq), sq);
        let e = CroppedMask::empty(ImageSize::new(3, 3));
        assert_eq!(corrupt(&e), e);
        assert_eq!(fill_holes(&e), e);
    }
}
