//! [`Launch`]: one program started once per rank, as detectron2's `launch` and `torchrun` do,
//! without Python.
//!
//! A program that takes `--nproc-per-node N` calls [`Launch::role`] first. Started by a user
//! (no `RANK` in its environment) with `N × nnodes > 1`, it is the launcher: it starts itself `N`
//! times on this machine with torchrun's variables set and waits for them ([`Launch::run`]).
//! Started by a launcher, or by `torchrun --no-python`, it is a worker and gets its group from
//! the environment ([`crate::ProcessGroup::from_env`]). With one process in all it is the worker
//! of the one-process group.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, ProcessGroup, Result};

/// The rendezvous timeout a launcher gives its workers unless `CELLSEG_DIST_TIMEOUT` is set:
/// PyTorch's default of 30 minutes, because rank 0 alone does some work (the metric before and
/// after training) while the others wait for it. A rank that dies is noticed at once all the
/// same (its connections close); only a rank that hangs takes this long.
pub const LAUNCH_TIMEOUT_S: u64 = 1800;

/// How the ranks of a job are laid out (torchrun's `--nproc-per-node`, `--nnodes`,
/// `--node-rank`, `--master-addr`, `--master-port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Processes on this machine (one per GPU on CUDA; on the CPU the cores are split between
    /// them).
    pub nproc_per_node: usize,
    /// Machines.
    pub nnodes: usize,
    /// This machine's index, `0..nnodes`; machine 0 hosts rank 0 and its rendezvous store.
    pub node_rank: usize,
    /// The address of machine 0 as the others reach it.
    pub master_addr: String,
    /// The port of rank 0's rendezvous store.
    pub master_port: u16,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            nproc_per_node: 1,
            nnodes: 1,
            node_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
        }
    }
}

/// What this process is.
#[derive(Debug)]
pub enum Role {
    /// It must start the workers ([`Launch::run`]) and do nothing else.
    Launcher,
    /// It trains (or infers) as one rank of this group.
    Worker(ProcessGroup),
}

impl Launch {
    /// The number of processes of the job.
    pub fn world_size(&self) -> usize {
        self.nproc_per_node * self.nnodes
    }

    /// Whether this process is the launcher or a worker (module docs).
    ///
    /// # Errors
    /// [`Error::Layout`] for a layout that cannot be (no process, a node rank past `nnodes`),
    /// [`Error::Env`] for a malformed environment; the group's errors when a worker joins.
    pub fn role(&self) -> Result<Role> {
        if std::env::var_os("RANK").is_some() || std::env::var_os("WORLD_SIZE").is_some() {
            return Ok(Role::Worker(ProcessGroup::from_env()?));
        }
        self.check()?;
        if self.world_size() == 1 {
            return Ok(Role::Worker(ProcessGroup::single()));
        }
        Ok(Role::Launcher)
    }

    fn check(&self) -> Result<()> {
        let bad = |flag: &'static str, value: usize, reason: String| {
            Err(Error::Layout { flag, value, reason })
        };
        if self.nproc_per_node == 0 {
            return bad("--nproc-per-node", 0, "at least 1 process".into());
        }
        if self.nnodes == 0 {
            return bad("--nnodes", 0, "at least 1 machine".into());
        }
        if self.node_rank >= self.nnodes {
            return bad(
                "--node-rank",
                self.node_rank,
                format!("must be below --nnodes {}", self.nnodes),
            );
        }
        Ok(())
    }

    /// The environment of local rank `local` (torchrun's variables, and the CPU threads of each
    /// worker: the machine's cores split between the `nproc_per_node` of them).
    pub fn worker_env(&self, local: usize) -> Vec<(&'static str, String)> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut env = vec![
            ("RANK", (self.node_rank * self.nproc_per_node + local).to_string()),
            ("LOCAL_RANK", local.to_string()),
            ("WORLD_SIZE", self.world_size().to_string()),
            ("LOCAL_WORLD_SIZE", self.nproc_per_node.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
            ("OMP_NUM_THREADS", (cores / self.nproc_per_node).max(1).to_string()),
        ];
        if std::env::var_os("CELLSEG_DIST_TIMEOUT").is_none() {
            env.push(("CELLSEG_DIST_TIMEOUT", LAUNCH_TIMEOUT_S.to_string()));
        }
        env
    }

    /// Starts `command(local_rank)` once per local rank with [`Self::worker_env`], its
    /// standard output shown for rank 0 only (every rank's standard error is shown), and waits
    /// for all of them.
    ///
    /// # Errors
    /// [`Error::Launch`] naming the rank that could not start or failed first (the others stop
    /// by themselves when their group loses it; any still running after `grace` more are
    /// killed).
    pub fn run(&self, mut command: impl FnMut(usize) -> Command, grace: Duration) -> Result<()> {
        self.check()?;
        let mut children: Vec<(usize, Child)> = Vec::new();
        for local in 0..self.nproc_per_node {
            let rank = self.node_rank * self.nproc_per_node + local;
            let mut c = command(local);
            c.envs(self.worker_env(local));
            if rank != 0 {
                c.stdout(Stdio::null());
            }
            match c.spawn() {
                Ok(child) => children.push((rank, child)),
                Err(e) => {
                    kill_all(&mut children);
                    return Err(Error::Launch { rank, message: format!("could not start: {e}") });
                }
            }
        }
        tracing::info!(world = self.world_size(), local = self.nproc_per_node, "workers started");
        let mut failed: Option<(usize, ExitStatus)> = None;
        let mut failed_at: Option<Instant> = None;
        let mut running = children;
        while !running.is_empty() {
            let mut still = Vec::new();
            for (rank, mut child) in running {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() && failed.is_none() {
                            failed = Some((rank, status));
                            failed_at = Some(Instant::now());
                        }
                    }
                    Ok(None) => still.push((rank, child)),
                    Err(e) => {
                        still.push((rank, child));
                        tracing::warn!(rank, error = %e, "cannot poll a worker");
                    }
                }
            }
            running = still;
            if failed_at.is_some_and(|t| t.elapsed() > grace) {
                kill_all(&mut running);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match failed {
            None => Ok(()),
            Some((rank, status)) => {
                Err(Error::Launch { rank, message: format!("exited with {status}") })
            }
        }
    }
}

fn kill_all(children: &mut Vec<(usize, Child)>) {
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    children.clear();
}
