//! The modules with weights above the FPN: the RPN head, the box head, the mask head (also HTC's,
//! with `conv_res`) and HTC's fused semantic head.

pub mod box_head;
pub mod mask_head;
pub mod rpn;
pub mod semantic_head;
