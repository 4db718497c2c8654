//! Axis-aligned boxes in continuous pixel coordinates.

use serde::{Deserialize, Serialize};

use crate::ImageSize;

/// One box `(x1, y1, x2, y2)` in absolute pixel coordinates of its image.
///
/// Coordinates are continuous: pixel `(r, c)` covers `[c, c+1) × [r, r+1)`, so a mask's bounding
/// box is `(min_c, min_r, max_c + 1, max_r + 1)` and width is `x2 - x1` (mmdet 2.x, no legacy `+1`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BoxXyxy {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

impl BoxXyxy {
    /// A box from its four edges.
    pub const fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }

    /// A box from COCO's `[x, y, w, h]`.
    pub fn from_xywh(x: f32, y: f32, w: f32, h: f32) -> Self {
        Self::new(x, y, x + w, y + h)
    }

    /// `[x, y, w, h]` as COCO writes it.
    pub fn to_xywh(&self) -> [f32; 4] {
        [self.x1, self.y1, self.width(), self.height()]
    }

    /// `x2 - x1`, never negative.
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    /// `y2 - y1`, never negative.
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    /// Width × height.
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// True when the box has positive width and height.
    pub fn is_nonempty(&self) -> bool {
        self.x2 > self.x1 && self.y2 > self.y1
    }

    /// The box clipped to `[0, W] × [0, H]` of `size`.
    pub fn clip(&self, size: ImageSize) -> Self {
        let (w, h) = (size.width as f32, size.height as f32);
        Self::new(
            self.x1.clamp(0.0, w),
            self.y1.clamp(0.0, h),
            self.x2.clamp(0.0, w),
            self.y2.clamp(0.0, h),
        )
    }

    /// Intersection over union with `other` (0 when both are empty).
    pub fn iou(&self, other: &Self) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// The box mirrored left–right in an image of width `width` (`x1' = W - x2`, no `-1`).
    pub fn hflip(&self, width: usize) -> Self {
        let w = width as f32;
        Self::new(w - self.x2, self.y1, w - self.x1, self.y2)
    }

    /// The box mirrored top–bottom in an image of height `height`.
    pub fn vflip(&self, height: usize) -> Self {
        let h = height as f32;
        Self::new(self.x1, h - self.y2, self.x2, h - self.y1)
    }

    /// The box moved by `(dx, dy)`.
    pub fn translate(&self, dx: f32, dy: f32) -> Self {
        Self::new(self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_box() -> impl Strategy<Value = BoxXyxy> {
        (0f32..100.0, 0f32..100.0, 0f32..50.0, 0f32..50.0)
            .prop_map(|(x, y, w, h)| BoxXyxy::from_xywh(x, y, w, h))
    }

    #[test]
    fn iou_of_half_overlap() {
        let a = BoxXyxy::new(0.0, 0.0, 2.0, 2.0);
        let b = BoxXyxy::new(1.0, 0.0, 3.0, 2.0);
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
    }

    proptest! {
        #[test]
        fn iou_is_symmetric_and_bounded(a in arb_box(), b in arb_box()) {
            let (ab, ba) = (a.iou(&b), b.iou(&a));
            prop_assert!((ab - ba).abs() < 1e-6);
            prop_assert!((0.0..=1.0 + 1e-6).contains(&ab));
        }

        #[test]
        fn flips_are_involutions(a in arb_box()) {
            let h = a.hflip(160).hflip(160);
            let v = a.vflip(160).vflip(160);
            prop_assert!((h.x1 - a.x1).abs() < 1e-3 && (h.x2 - a.x2).abs() < 1e-3);
            prop_assert!((v.y1 - a.y1).abs() < 1e-3 && (v.y2 - a.y2).abs() < 1e-3);
        }

        #[test]
        fn clip_is_idempotent(a in arb_box()) {
            let s = ImageSize::new(60, 70);
            prop_assert_eq!(a.clip(s).clip(s), a.clip(s));
        }
    }
}
