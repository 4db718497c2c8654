//! Training targets: the MaxIoU assigner, the random sampler, mask targets and the per-stage RoI
//! sampler that combines them.

pub mod assigner;
pub mod mask_target;
pub mod roi_sampler;
pub mod sampler;
