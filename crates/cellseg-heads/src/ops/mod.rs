//! Tensor operations without weights: anchors, the box coder, RoIAlign and the RoI extractor,
//! NMS, mask paste and the loss primitives.

pub mod anchors;
pub mod box_coder;
pub mod losses;
pub mod nms;
pub mod paste;
pub mod roi_align;
// The FFI to csrc/roi_align.cpp: the crate's only unsafe code.
#[allow(unsafe_code)]
mod roi_align_cpu;
