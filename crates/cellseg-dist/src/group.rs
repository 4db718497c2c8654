//! [`ProcessGroup`]: the ranks of one data-parallel job and their collectives.

use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::shim;
use crate::{Error, Result};

/// Bytes per all-reduce / broadcast bucket: PyTorch DDP's default `bucket_cap_mb = 25`.
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// How a reduction combines the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum over ranks.
    Sum,
    /// The mean over ranks (floating tensors only), as DDP averages gradients.
    Mean,
}

/// Where and how a process joins its group (torchrun's variables, see
/// [`ProcessGroup::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// The number of processes.
    pub world_size: usize,
    /// The rank on this machine (the GPU index on CUDA).
    pub local_rank: usize,
    /// The address of rank 0's rendezvous store.
    pub master_addr: String,
    /// Its port.
    pub master_port: u16,
    /// How long joining and every collective may wait for the peers.
    pub timeout: Duration,
    /// Gloo's threads per process (c10d's default 2).
    pub gloo_threads: usize,
    /// The network interface Gloo binds (`GLOO_SOCKET_IFNAME`); `None`: 127.0.0.1 for a
    /// loopback master, else the machine's default address.
    pub interface: Option<String>,
}

impl GroupConfig {
    /// The defaults for `world_size` processes on this machine: master 127.0.0.1:29500,
    /// timeout 300 s, 2 Gloo threads.
    pub fn local(rank: usize, world_size: usize, master_port: u16) -> Self {
        Self {
            rank,
            world_size,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port,
            timeout: Duration::from_secs(300),
            gloo_threads: 2,
            interface: None,
        }
    }
}

/// The processes of one job. One process is the degenerate group: every collective returns at
/// once with the tensors unchanged.
pub struct ProcessGroup {
    rank: usize,
    world_size: usize,
    local_rank: usize,
    gloo: Option<shim::Group>,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("local_rank", &self.local_rank)
            .finish()
    }
}

fn env_var(var: &'static str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

fn parse<T: std::str::FromStr>(var: &'static str, value: &str, what: &str) -> Result<T> {
    value.trim().parse().map_err(|_| Error::Env {
        var,
        value: value.into(),
        reason: format!("expected {what}"),
    })
}

impl ProcessGroup {
    /// The one-process group.
    pub fn single() -> Self {
        Self { rank: 0, world_size: 1, local_rank: 0, gloo: None }
    }

    /// The group torchrun's environment describes: `WORLD_SIZE`, `RANK` (required with it),
    /// `LOCAL_RANK` (default `RANK`), `MASTER_ADDR` (default 127.0.0.1), `MASTER_PORT`
    /// (default 29500), and ours: `CELLSEG_DIST_TIMEOUT` (seconds, default 300),
    /// `GLOO_SOCKET_IFNAME`. Without `WORLD_SIZE`, or with `WORLD_SIZE=1`: [`Self::single`].
    ///
    /// # Errors
    /// [`Error::Env`] naming a malformed or missing variable; [`Self::new`]'s.
    pub fn from_env() -> Result<Self> {
        let Some(world) = env_var("WORLD_SIZE") else { return Ok(Self::single()) };
        let world_size: usize = parse("WORLD_SIZE", &world, "a number of processes ≥ 1")?;
        if world_size == 0 {
            return Err(Error::Env {
                var: "WORLD_SIZE",
                value: world,
                reason: "expected a number of processes ≥ 1".into(),
            });
        }
        if world_size == 1 {
            return Ok(Self::single());
        }
        let rank_text = env_var("RANK").ok_or_else(|| Error::Env {
            var: "RANK",
            value: String::new(),
            reason: format!("unset, but WORLD_SIZE={world_size} asks for a group"),
        })?;
        let rank: usize = parse("RANK", &rank_text, "a rank")?;
        if rank >= world_size {
            return Err(Error::Env {
                var: "RANK",
                value: rank_text,
                reason: format!("must be below WORLD_SIZE={world_size}"),
            });
        }
        let local_rank = match env_var("LOCAL_RANK") {
            Some(v) => parse("LOCAL_RANK", &v, "a rank")?,
            None => rank,
        };
        let master_port = match env_var("MASTER_PORT") {
            Some(v) => parse("MASTER_PORT", &v, "a TCP port (1-65535)")?,
            None => 29500,
        };
        let timeout = match env_var("CELLSEG_DIST_TIMEOUT") {
            Some(v) => {
                Duration::from_secs_f64(parse::<f64>("CELLSEG_DIST_TIMEOUT", &v, "seconds")?)
            }
            None => Duration::from_secs(300),
        };
        Self::new(&GroupConfig {
            rank,
            world_size,
            local_rank,
            master_addr: env_var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
            timeout,
            gloo_threads: 2,
            interface: env_var("GLOO_SOCKET_IFNAME"),
        })
    }

    /// Joins the group `cfg` describes: rank 0 serves the rendezvous store and every rank
    /// waits for all `world_size` to join (at most `cfg.timeout`).
    ///
    /// # Errors
    /// [`Error::Init`] naming the rank, the address and libtorch's reason (a port in use, a peer
    /// that did not join in time, no Gloo in this build).
    pub fn new(cfg: &GroupConfig) -> Result<Self> {
        if cfg.world_size <= 1 {
            return Ok(Self::single());
        }
        let init = |message: String| Error::Init {
            rank: cfg.rank,
            world: cfg.world_size,
            addr: cfg.master_addr.clone(),
            port: cfg.master_port,
            message,
        };
        if cfg.rank >= cfg.world_size {
            return Err(init(format!("rank {} is not below the world size", cfg.rank)));
        }
        if !shim::with_gloo() {
            return Err(init(
                "cellseg-dist was built without Gloo's headers (install Debian's libgloo-dev: \
                 make setup)"
                    .into(),
            ));
        }
        let timeout_ms = i64::try_from(cfg.timeout.as_millis()).unwrap_or(i64::MAX);
        tracing::info!(rank = cfg.rank, world = cfg.world_size, addr = %cfg.master_addr, port = cfg.master_port, "joining the process group");
        let gloo = shim::Group::new(
            &cfg.master_addr,
            cfg.master_port,
            cfg.rank,
            cfg.world_size,
            timeout_ms,
            cfg.gloo_threads.max(1),
            cfg.interface.as_deref().unwrap_or(""),
        )
        .map_err(init)?;
        Ok(Self {
            rank: cfg.rank,
            world_size: cfg.world_size,
            local_rank: cfg.local_rank,
            gloo: Some(gloo),
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The rank on this machine.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Whether this is rank 0, the one that writes files.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    fn collective(&self, op: &'static str) -> impl Fn(String) -> Error + '_ {
        move |message| Error::Collective { op, rank: self.rank, world: self.world_size, message }
    }

    /// Reduces `tensors` in place over the ranks (every rank passes the same list: same
    /// shapes, dtypes and order). Tensors are packed into buckets of at most [`BUCKET_BYTES`]
    /// per dtype and device (DDP's default), each bucket one all-reduce.
    ///
    /// # Errors
    /// [`Error::Tensor`] for an undefined or sparse tensor, or a mean of integers;
    /// [`Error::Collective`] when a peer fails or times out.
    pub fn all_reduce(&self, tensors: &[Tensor], op: ReduceOp) -> Result<()> {
        let Some(gloo) = &self.gloo else { return Ok(()) };
        check_tensors("all_reduce", tensors)?;
        if op == ReduceOp::Mean && tensors.iter().any(|t| !t.is_floating_point()) {
            return Err(Error::Tensor {
                op: "all_reduce",
                reason: "a mean needs floating tensors".into(),
            });
        }
        let fail = self.collective("all_reduce");
        for bucket in buckets(tensors) {
            with_flat(tensors, &bucket, |flat| gloo.all_reduce(flat, op == ReduceOp::Mean))
                .map_err(&fail)?;
        }
        Ok(())
    }

    /// Overwrites `tensors` on every rank with rank `root`'s (the same bucketing as
    /// [`Self::all_reduce`]): weights and buffers before the first step.
    ///
    /// # Errors
    /// As [`Self::all_reduce`].
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        let Some(gloo) = &self.gloo else { return Ok(()) };
        check_tensors("broadcast", tensors)?;
        let fail = self.collective("broadcast");
        for bucket in buckets(tensors) {
            with_flat(tensors, &bucket, |flat| gloo.broadcast(flat, root)).map_err(&fail)?;
        }
        Ok(())
    }

    /// Waits until every rank has called it.
    ///
    /// # Errors
    /// [`Error::Collective`] when a peer fails or times out.
    pub fn barrier(&self) -> Result<()> {
        let Some(gloo) = &self.gloo else { return Ok(()) };
        gloo.barrier().map_err(self.collective("barrier"))
    }

    /// Every rank's `values` (the same number on each), by rank: losses, counters, metric
    /// parts for the log.
    ///
    /// # Errors
    /// [`Error::Collective`] when a peer fails, times out or passes another number of values.
    pub fn all_gather_f64(&self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        let Some(gloo) = &self.gloo else { return Ok(vec![values.to_vec()]) };
        if values.is_empty() {
            return Ok(vec![Vec::new(); self.world_size]);
        }
        let n = values.len() as i64;
        let table = Tensor::zeros([self.world_size as i64, n], (Kind::Double, Device::Cpu));
        table.get(self.rank as i64).copy_(&Tensor::from_slice(values));
        gloo.all_reduce(&table, false).map_err(self.collective("all_gather"))?;
        let flat = Vec::<f64>::try_from(table.reshape([-1]))?;
        Ok(flat.chunks(n as usize).map(<[f64]>::to_vec).collect())
    }
}

/// Undefined and sparse tensors cannot be packed.
fn check_tensors(op: &'static str, tensors: &[Tensor]) -> Result<()> {
    for (i, t) in tensors.iter().enumerate() {
        if !t.defined() {
            return Err(Error::Tensor { op, reason: format!("tensor {i} is undefined") });
        }
        if t.is_sparse() {
            return Err(Error::Tensor { op, reason: format!("tensor {i} is sparse") });
        }
    }
    Ok(())
}

/// Indices of `tensors` grouped into buckets: consecutive tensors of one dtype and device, at
/// most [`BUCKET_BYTES`] each (a larger tensor is a bucket of its own), in first-seen order of
/// (dtype, device) so that every rank builds the same buckets.
fn buckets(tensors: &[Tensor]) -> Vec<Vec<usize>> {
    let mut open: Vec<((Kind, Device), Vec<usize>, usize)> = Vec::new();
    let mut done = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let key = (t.kind(), t.device());
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        let slot = match open.iter().position(|(k, _, _)| *k == key) {
            Some(s) => s,
            None => {
                open.push((key, Vec::new(), 0));
                open.len() - 1
            }
        };
        let (_, members, size) = &mut open[slot];
        if !members.is_empty() && *size + bytes > BUCKET_BYTES {
            done.push(std::mem::take(members));
            *size = 0;
        }
        members.push(i);
        *size += bytes;
    }
    done.extend(open.into_iter().map(|(_, m, _)| m).filter(|m| !m.is_empty()));
    done
}

/// Runs `f` on one flat tensor holding the bucket's tensors and copies the result back (a single
/// contiguous tensor is used in place).
fn with_flat(
    tensors: &[Tensor],
    bucket: &[usize],
    f: impl FnOnce(&Tensor) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let _g = tch::no_grad_guard();
    if let [i] = bucket {
        let t = &tensors[*i];
        if t.is_contiguous() {
            return f(t);
        }
    }
    let parts: Vec<Tensor> = bucket.iter().map(|&i| tensors[i].detach().reshape([-1])).collect();
    let flat = Tensor::cat(&parts, 0);
    f(&flat)?;
    let mut at = 0;
    for &i in bucket {
        let t = &tensors[i];
        let n = t.numel() as i64;
        let mut dst = t.shallow_clone();
        dst.f_copy_(&flat.narrow(0, at, n).view_as(t)).map_err(|e| e.to_string())?;
        at += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_split_by_dtype_and_size_in_a_fixed_order() {
        let f = |n: i64| Tensor::zeros([n], (Kind::Float, Device::Cpu));
        let d = |n: i64| Tensor::zeros([n], (Kind::Double, Device::Cpu));
        let quarter = (BUCKET_BYTES / 4 / 4) as i64; // a quarter bucket of float32
        let ts = [f(quarter), d(3), f(quarter), f(3 * quarter), f(5 * quarter), d(1)];
        assert_eq!(buckets(&ts), vec![vec![0, 2], vec![3], vec![4], vec![1, 5]]);
    }

    #[test]
    fn one_process_changes_nothing() {
        let g = ProcessGroup::single();
        let t = [Tensor::from_slice(&[1i64, 2])];
        g.all_reduce(&t, ReduceOp::Sum).unwrap();
        g.broadcast(&t, 0).unwrap();
        g.barrier().unwrap();
        assert_eq!(Vec::<i64>::try_from(&t[0]).unwrap(), vec![1, 2]);
        assert!(g.is_main() && g.world_size() == 1);
    }
}
