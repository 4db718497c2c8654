//! What the engine does differently when its [`ProcessGroup`] has several ranks (mmdet's
//! `MMDistributedDataParallel`, PyTorch DDP without the backward overlap).
//!
//! - Rank 0's weights and buffers are broadcast to every rank before the first step.
//! - Every rank computes the same epoch permutation ([`crate::sampler::epoch_order`]); a global
//!   batch is `batch_size × world_size` consecutive entries of it and rank `r` reads the `r`-th
//!   `batch_size` of them, so the shards are disjoint and together they are the one-process
//!   batch of that size. Steps per epoch, the schedule's horizon and warm-up follow the global
//!   batch.
//! - Each rank's losses are normalised over its own images (as mmdet's, whose `avg_factor`s
//!   are per process), then the gradients are averaged over the ranks before clipping and the
//!   optimizer step, which are therefore the same on every rank. This equals one process with
//!   the global batch exactly when every image contributes the same number of samples to each
//!   loss and the samplers draw nothing at random (the equivalence test's configuration); in
//!   general it is the usual data-parallel approximation.
//! - A step is skipped on every rank when a loss or the averaged gradient is not finite on any
//!   of them; a failing rank makes every other one stop with [`Error::Peer`] instead of waiting
//!   for it until the group's timeout.
//! - Only rank 0 writes the run folder (checkpoints, `metrics.jsonl`, curves); the others learn
//!   of every write (and of any rank's failure) through one small all-gather.
//!
//! With one rank every function here returns at once and the engine runs exactly as before.

use std::sync::Arc;

use cellseg_dist::{ProcessGroup, ReduceOp};
use tch::Tensor;

use crate::{Error, Result};

/// The engine's view of its process group.
#[derive(Debug, Clone)]
pub(crate) struct Ranks {
    group: Arc<ProcessGroup>,
}

impl Ranks {
    pub(crate) fn new(group: Arc<ProcessGroup>) -> Self {
        Self { group }
    }

    pub(crate) fn rank(&self) -> usize {
        self.group.rank()
    }

    pub(crate) fn world(&self) -> usize {
        self.group.world_size()
    }

    /// Whether this rank writes the run folder.
    pub(crate) fn is_main(&self) -> bool {
        self.group.rank() == 0
    }

    pub(crate) fn is_parallel(&self) -> bool {
        self.group.world_size() > 1
    }

    pub(crate) fn group(&self) -> &ProcessGroup {
        &self.group
    }

    /// Every rank's `local` outcome of `what`: this rank's error if it failed, else
    /// [`Error::Peer`] naming the first rank that failed, else `local`'s value.
    pub(crate) fn agree<T>(&self, what: &'static str, local: Result<T>) -> Result<T> {
        if !self.is_parallel() {
            return local;
        }
        let flags = self.group.all_gather_f64(&[if local.is_ok() { 0.0 } else { 1.0 }])?;
        let value = local?;
        match flags.iter().position(|f| f[0] != 0.0) {
            None => Ok(value),
            Some(rank) => Err(self.peer(rank, what, "its log names the error".into())),
        }
    }

    /// [`Error::Peer`] for `rank`.
    pub(crate) fn peer(&self, rank: usize, what: &'static str, message: String) -> Error {
        Error::Peer { rank, world: self.world(), this: self.rank(), what, message }
    }

    /// Whether any rank says `flag`.
    pub(crate) fn any(&self, flag: bool) -> Result<bool> {
        if !self.is_parallel() {
            return Ok(flag);
        }
        let all = self.group.all_gather_f64(&[f64::from(u8::from(flag))])?;
        Ok(all.iter().any(|v| v[0] != 0.0))
    }

    /// Every rank's `values` (the same number on each), by rank.
    pub(crate) fn gather(&self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        Ok(self.group.all_gather_f64(values)?)
    }

    /// Overwrites every variable with rank 0's (sorted by name, as every rank lists them).
    pub(crate) fn broadcast_variables(&self, vs: &tch::nn::VarStore) -> Result<()> {
        if !self.is_parallel() {
            return Ok(());
        }
        let vars: Vec<Tensor> =
            crate::checkpoint::named_variables(vs).into_iter().map(|(_, t)| t).collect();
        let _guard = tch::no_grad_guard();
        self.group.broadcast(&vars, 0)?;
        Ok(())
    }

    /// Averages `grads` over the ranks. A gradient that is undefined on some ranks (a head
    /// that had nothing to learn from there) counts as zero on those; one undefined on every
    /// rank stays undefined, so the optimizer leaves its parameter alone as one process would.
    pub(crate) fn mean_gradients(
        &self,
        grads: &mut [Option<Tensor>],
        params: &[Tensor],
    ) -> Result<()> {
        if !self.is_parallel() {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        let defined: Vec<f32> = grads.iter().map(|g| f32::from(u8::from(g.is_some()))).collect();
        let defined = Tensor::from_slice(&defined);
        self.group.all_reduce(std::slice::from_ref(&defined), ReduceOp::Sum)?;
        let defined = Vec::<f32>::try_from(&defined).map_err(Error::Tch)?;
        let mut reduced = Vec::new();
        for ((g, p), &n) in grads.iter_mut().zip(params).zip(&defined) {
            if n == 0.0 {
                continue;
            }
            let t = g.get_or_insert_with(|| p.zeros_like());
            reduced.push(t.shallow_clone());
        }
        self.group.all_reduce(&reduced, ReduceOp::Mean)?;
        Ok(())
    }

    /// The mean over ranks of each of `values` (the same number on each).
    pub(crate) fn mean_values(&self, values: &[f64]) -> Result<Vec<f64>> {
        if !self.is_parallel() {
            return Ok(values.to_vec());
        }
        let all = self.gather(values)?;
        let n = all.len() as f64;
        Ok((0..values.len()).map(|i| all.iter().map(|v| v[i]).sum::<f64>() / n).collect())
    }
}
