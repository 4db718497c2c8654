//! Integration tests of cellseg-train, in one binary (each test binary links libtorch).
//!
//! Every test that seeds libtorch's process-wide generator, sets its thread count or trains a
//! model holds [`cellseg_core::testing::torch_lock`]; the tests that need a process of their own
//! ([`kill_resume`], [`learning`]) re-run this binary on one of their `#[ignore]`d child tests.

mod cascade;
mod detector;
mod engine;
mod fuzz;
mod kill_resume;
mod learning;
mod optim_parity;
mod toy;
