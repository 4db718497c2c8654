//! Ground-truth instances and predicted detections of one image.

use crate::{BoxXyxy, CroppedMask, Error, ImageSize, Result};

/// The ground truth of one image: parallel boxes, labels and masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Instances {
    /// The image size every mask and box refers to.
    pub image_size: ImageSize,
    /// One box per instance, `xyxy` pixels.
    pub boxes: Vec<BoxXyxy>,
    /// One label per instance (background is never a label).
    pub labels: Vec<usize>,
    /// One mask per instance.
    pub masks: Vec<CroppedMask>,
}

impl Instances {
    /// Instances from parallel arrays.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the arrays differ in length, [`Error::MaskSize`] when a mask
    /// belongs to another image size.
    pub fn new(
        image_size: ImageSize,
        boxes: Vec<BoxXyxy>,
        labels: Vec<usize>,
        masks: Vec<CroppedMask>,
    ) -> Result<Self> {
        check_len("Instances", "boxes", boxes.len(), "labels", labels.len())?;
        check_len("Instances", "boxes", boxes.len(), "masks", masks.len())?;
        check_mask_sizes(image_size, &masks)?;
        Ok(Self { image_size, boxes, labels, masks })
    }

    /// An image without instances.
    pub fn empty(image_size: ImageSize) -> Self {
        Self { image_size, boxes: Vec::new(), labels: Vec::new(), masks: Vec::new() }
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// True when there is no instance.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// The instances at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        Self {
            image_size: self.image_size,
            boxes: indices.iter().map(|&i| self.boxes[i]).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            masks: indices.iter().map(|&i| self.masks[i].clone()).collect(),
        }
    }
}

/// The predictions for one image: parallel boxes, scores, labels and masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    /// The image size every mask and box refers to.
    pub image_size: ImageSize,
    /// One box per detection.
    pub boxes: Vec<BoxXyxy>,
    /// Confidence in `[0, 1]`.
    pub scores: Vec<f32>,
    /// Predicted label.
    pub labels: Vec<usize>,
    /// Binary mask per detection (empty when masks were not predicted).
    pub masks: Vec<CroppedMask>,
}

impl Detections {
    /// Detections from parallel arrays; `masks` may be empty (boxes only).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] or [`Error::MaskSize`].
    pub fn new(
        image_size: ImageSize,
        boxes: Vec<BoxXyxy>,
        scores: Vec<f32>,
        labels: Vec<usize>,
        masks: Vec<CroppedMask>,
    ) -> Result<Self> {
        check_len("Detections", "boxes", boxes.len(), "scores", scores.len())?;
        check_len("Detections", "boxes", boxes.len(), "labels", labels.len())?;
        if !masks.is_empty() {
            check_len("Detections", "boxes", boxes.len(), "masks", masks.len())?;
        }
        check_mask_sizes(image_size, &masks)?;
        Ok(Self { image_size, boxes, scores, labels, masks })
    }

    /// An image without detections.
    pub fn empty(image_size: ImageSize) -> Self {
        Self {
            image_size,
            boxes: Vec::new(),
            scores: Vec::new(),
            labels: Vec::new(),
            masks: Vec::new(),
        }
    }

    /// Number of detections.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// True when there is no detection.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// The detections at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        Self {
            image_size: self.image_size,
            boxes: indices.iter().map(|&i| self.boxes[i]).collect(),
            scores: indices.iter().map(|&i| self.scores[i]).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            masks: if self.masks.is_empty() {
                Vec::new()
            } else {
                indices.iter().map(|&i| self.masks[i].clone()).collect()
            },
        }
    }

    /// Indices ordered by decreasing score (stable; NaN last).
    pub fn order_by_score(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.sort_by(|&a, &b| {
            let (sa, sb) = (self.scores[a], self.scores[b]);
            match (sa.is_nan(), sb.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => sb.total_cmp(&sa),
            }
        });
        idx
    }

    /// The detections sorted by decreasing score.
    pub fn sorted_by_score(&self) -> Self {
        self.select(&self.order_by_score())
    }
}

fn check_len(
    what: &'static str,
    left_name: &'static str,
    left: usize,
    right_name: &'static str,
    right: usize,
) -> Result<()> {
    if left == right {
        Ok(())
    } else {
        Err(Error::LengthMismatch { what, left_name, left, right_name, right })
    }
}

fn check_mask_sizes(size: ImageSize, masks: &[CroppedMask]) -> Result<()> {
    match masks.iter().position(|m| m.image_size() != size) {
        None => Ok(()),
        Some(index) => {
            let got = masks[index].image_size();
            Err(Error::MaskSize {
                index,
                got_h: got.height,
                got_w: got.width,
                want_h: size.height,
                want_w: size.width,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_lengths_are_named() {
        let s = ImageSize::new(4, 4);
        let err =
            Detections::new(s, vec![BoxXyxy::default()], vec![], vec![0], vec![]).unwrap_err();
        assert!(err.to_string().contains("scores has 0"), "{err}");
    }

    #[test]
    fn sorting_puts_nan_last() {
        let s = ImageSize::new(4, 4);
        let d = Detections::new(
            s,
            vec![BoxXyxy::default(); 3],
            vec![0.2, f32::NAN, 0.9],
            vec![0; 3],
            vec![],
        )
        .unwrap();
        assert_eq!(d.order_by_score(), vec![2, 0, 1]);
    }
}
