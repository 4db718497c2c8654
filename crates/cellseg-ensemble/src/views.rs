//! Flip test-time augmentation: the four views of the seed (`test_pipeline_tta`, SEED.md §1.9),
//! how boxes and RoIs go into a view and come back, and how 28×28 masks are flipped back.
//!
//! mmdet flips the unpadded `h × w` image and pads it afterwards (bottom / right), so a view keeps
//! the padding where it was; boxes flip continuously over the unpadded size (`x' = w − x`, mmdet
//! `bbox_flip`), and flipping twice is the identity (`bbox_mapping_back`).

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// One flip of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// The image as it is.
    Identity,
    /// Mirrored left–right.
    Horizontal,
    /// Mirrored top–bottom.
    Vertical,
    /// Both (a 180° rotation; mmdet's `diagonal`).
    Diagonal,
}

impl View {
    /// The seed's four views, in its order.
    pub const ALL: [View; 4] = [View::Identity, View::Horizontal, View::Vertical, View::Diagonal];

    /// Whether the view mirrors the x axis.
    pub fn flips_x(self) -> bool {
        matches!(self, View::Horizontal | View::Diagonal)
    }

    /// Whether the view mirrors the y axis.
    pub fn flips_y(self) -> bool {
        matches!(self, View::Vertical | View::Diagonal)
    }

    /// The view of padded images `[B, C, H, W]` whose unpadded size is `(h, w)`: the `h × w`
    /// region flipped in place, the padding unchanged.
    pub fn image(self, images: &Tensor, (h, w): (i64, i64)) -> Tensor {
        let dims = self.dims(2, 3);
        if dims.is_empty() {
            return images.shallow_clone();
        }
        let out = images.copy();
        let region = images.narrow(2, 0, h).narrow(3, 0, w);
        out.narrow(2, 0, h).narrow(3, 0, w).copy_(&region.flip(dims));
        out
    }

    /// Boxes `[..., 4]` (xyxy) of the original image in this view, or of this view back in the
    /// original image (the same map): mmdet `bbox_flip` over the unpadded `(h, w)`.
    pub fn boxes(self, boxes: &Tensor, (h, w): (i64, i64)) -> Tensor {
        let (x1, y1, x2, y2) = coords(boxes);
        let (x1, x2) = if self.flips_x() { (-x2 + w as f64, -x1 + w as f64) } else { (x1, x2) };
        let (y1, y2) = if self.flips_y() { (-y2 + h as f64, -y1 + h as f64) } else { (y1, y2) };
        Tensor::stack(&[x1, y1, x2, y2], -1)
    }

    /// RoIs of this view moved by the seed's `DELTA` (SEED.md §9 item 4): `delta` pixels towards
    /// the origin on each flipped axis, clamped to `[0, w]` / `[0, h]`. The identity view and
    /// `delta = 0` leave them unchanged.
    pub fn shift(self, boxes: &Tensor, (h, w): (i64, i64), delta: f64) -> Tensor {
        if delta == 0.0 || self == View::Identity {
            return boxes.shallow_clone();
        }
        let (x1, y1, x2, y2) = coords(boxes);
        let sx = |x: Tensor| (x - delta).clamp(0.0, w as f64);
        let sy = |y: Tensor| (y - delta).clamp(0.0, h as f64);
        let (x1, x2) = if self.flips_x() { (sx(x1), sx(x2)) } else { (x1, x2) };
        let (y1, y2) = if self.flips_y() { (sy(y1), sy(y2)) } else { (y1, y2) };
        Tensor::stack(&[x1, y1, x2, y2], -1)
    }

    /// Masks `[..., M, M]` predicted in this view, flipped back to the original orientation
    /// (mmdet `merge_aug_masks`).
    pub fn masks_back(self, masks: &Tensor) -> Tensor {
        let d = masks.dim() as i64;
        let dims = self.dims(d - 2, d - 1);
        if dims.is_empty() { masks.shallow_clone() } else { masks.flip(dims) }
    }

    fn dims(self, y: i64, x: i64) -> Vec<i64> {
        let mut d = Vec::new();
        if self.flips_y() {
            d.push(y);
        }
        if self.flips_x() {
            d.push(x);
        }
        d
    }
}

fn coords(boxes: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    (boxes.select(-1, 0), boxes.select(-1, 1), boxes.select(-1, 2), boxes.select(-1, 3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tch::{Device, Kind};

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).view([-1, 4])
    }

    #[test]
    fn horizontal_flip_is_continuous() {
        let b = View::Horizontal.boxes(&t(&[10.0, 2.0, 30.0, 8.0]), (50, 100));
        assert_eq!(Vec::<f32>::try_from(b.view([-1])).unwrap(), [70.0, 2.0, 90.0, 8.0]);
        let b = View::Diagonal.boxes(&t(&[10.0, 2.0, 30.0, 8.0]), (50, 100));
        assert_eq!(Vec::<f32>::try_from(b.view([-1])).unwrap(), [70.0, 42.0, 90.0, 48.0]);
    }

    #[test]
    fn delta_moves_flipped_axes_and_clamps() {
        let b = t(&[0.2, 3.0, 100.0, 50.0]);
        let s = View::Vertical.shift(&b, (50, 100), 0.5);
        assert_eq!(Vec::<f32>::try_from(s.view([-1])).unwrap(), [0.2, 2.5, 100.0, 49.5]);
        let s = View::Diagonal.shift(&b, (50, 100), 0.5);
        assert_eq!(Vec::<f32>::try_from(s.view([-1])).unwrap(), [0.0, 2.5, 99.5, 49.5]);
        assert_eq!(View::Identity.shift(&b, (50, 100), 0.5).view([-1]), b.view([-1]));
    }

    #[test]
    fn image_view_keeps_the_padding() {
        let img = Tensor::arange(2 * 4 * 5, (Kind::Float, Device::Cpu)).view([1, 2, 4, 5]);
        let v = View::Horizontal.image(&img, (3, 4));
        // Row 0 of channel 0: 0 1 2 3 | 4 → 3 2 1 0 | 4.
        assert_eq!(
            Vec::<f32>::try_from(v.get(0).get(0).get(0)).unwrap(),
            [3.0, 2.0, 1.0, 0.0, 4.0]
        );
        // The padding row is untouched.
        assert_eq!(v.get(0).get(0).get(3), img.get(0).get(0).get(3));
        let d = View::Diagonal.image(&img, (3, 4));
        assert_eq!(f32::try_from(d.get(0).get(1).get(0).get(0)).unwrap(), 20.0 + 2.0 * 5.0 + 3.0);
    }

    proptest! {
        #[test]
        fn every_map_is_an_involution(
            x1 in 0f32..60.0, y1 in 0f32..40.0, dw in 0f32..40.0, dh in 0f32..20.0, v in 0usize..4
        ) {
            let view = View::ALL[v];
            let b = t(&[x1, y1, x1 + dw, y1 + dh]);
            let back = view.boxes(&view.boxes(&b, (64, 100)), (64, 100));
            let d = f64::try_from((back - &b).abs().max()).unwrap();
            prop_assert!(d < 1e-4);
            let m = Tensor::randn([2, 3, 5, 5], (Kind::Float, Device::Cpu));
            prop_assert_eq!(view.masks_back(&view.masks_back(&m)), m);
        }
    }
}
