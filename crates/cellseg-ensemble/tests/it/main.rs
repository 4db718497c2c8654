//! Integration tests of cellseg-ensemble, in one binary (each test binary links libtorch).
//!
//! Every test that builds, seeds or runs a model holds [`cellseg_core::testing::torch_lock`];
//! the Python fixtures are generated before it, so they overlap with other tests.

mod ensemble;
mod fuzz;
/// The mmdet fixtures and comparisons, shared with cellseg-heads' parity tests.
#[path = "../../../cellseg-heads/tests/it/mmdet.rs"]
mod mmdet;
mod mmdet_ensemble_parity;
