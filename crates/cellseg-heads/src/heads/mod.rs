//! The modules with weights above the FPN: the RPN head, the box head and the mask head.

pub mod box_head;
pub mod mask_head;
pub mod rpn;
