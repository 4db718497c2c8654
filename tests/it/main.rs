//! Integration tests of the `cellseg` package (its examples' set-up and the whole inference
//! path), in one binary (each test binary links libtorch).
//!
//! Every test that seeds libtorch's process-wide generator or runs a model holds
//! [`cellseg::core::testing::torch_lock`].

mod infer_ensemble;
mod pretrain_livecell;
mod tch_smoke;
mod train_maskrcnn;
