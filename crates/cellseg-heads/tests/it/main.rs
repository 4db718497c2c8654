//! Integration tests of cellseg-heads, in one binary (each test binary links libtorch).
//!
//! Every test that builds, seeds or runs a model holds [`cellseg_core::testing::torch_lock`];
//! the Python fixtures are generated before it, so they overlap with other tests.

mod degenerate;
mod mmdet;
mod mmdet_cascade_parity;
mod mmdet_parity;
mod parity;
mod sampler_rng;
mod training;
mod transfers;
