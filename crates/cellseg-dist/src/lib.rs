//! Data-parallel process groups on libtorch's own distributed engine (c10d), for cellseg's
//! training and sharded inference.
//!
//! No communication code lives here: a small C++ shim (`csrc/c10d_shim.cpp`) builds c10d's
//! `TCPStore` rendezvous and `ProcessGroupGloo` (CPU tensors) from the libtorch that `tch` links,
//! and every call returns libtorch's failures as a typed [`Error`] naming the operation and the
//! rank — a peer that never comes or dies mid-run is an error within the group's timeout, never
//! a hang or an abort.
//!
//! A group comes from the torchrun-style environment ([`ProcessGroup::from_env`]: `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`); without `WORLD_SIZE` it is the
//! one-process group, whose collectives are no-ops, so callers have one code path. A program
//! launches its own workers with [`Launch`] (`--nproc-per-node`, as torchrun).
//!
//! # Example
//! ```
//! use cellseg_dist::{ProcessGroup, ReduceOp};
//! use tch::Tensor;
//!
//! let group = ProcessGroup::single();
//! let grads = [Tensor::from_slice(&[1.0f32, 2.0]), Tensor::from_slice(&[3.0f64])];
//! group.all_reduce(&grads, ReduceOp::Mean).unwrap(); // one process: unchanged
//! assert_eq!(grads[0].double_value(&[1]), 2.0);
//! assert_eq!(group.all_gather_f64(&[0.5, 1.5]).unwrap(), vec![vec![0.5, 1.5]]);
//! ```

#![deny(unsafe_code)]

mod error;
mod group;
pub mod launch;
// The FFI to csrc/c10d_shim.cpp: the crate's only unsafe code.
#[allow(unsafe_code)]
mod shim;

pub use error::{Error, Result};
pub use group::{BUCKET_BYTES, GroupConfig, ProcessGroup, ReduceOp};
pub use launch::{Launch, Role};
