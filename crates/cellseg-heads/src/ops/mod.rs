//! Tensor operations without weights: anchors, the box coder, RoIAlign and the RoI extractor,
//! NMS, mask paste and the loss primitives.

pub mod anchors;
pub mod box_coder;
pub mod losses;
pub mod nms;
pub mod paste;
pub mod roi_align;
