//! The errors of cellseg-dist.

/// What can go wrong in a process group.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A torchrun-style environment variable is missing or malformed.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value (empty when unset).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The rendezvous or the Gloo group could not be made (port in use, a peer that never
    /// joined within the timeout, an interface that does not exist, no Gloo in this build).
    #[error("rank {rank} of {world} could not join the group at {addr}:{port}: {message}")]
    Init {
        /// This process's rank.
        rank: usize,
        /// The world size this process was given.
        world: usize,
        /// The master address.
        addr: String,
        /// The master port.
        port: u16,
        /// libtorch's message.
        message: String,
    },
    /// A collective failed (a peer died or timed out, mismatched calls).
    #[error("{op} on rank {rank} of {world} failed: {message}")]
    Collective {
        /// The operation (`all_reduce`, `broadcast`, `barrier`, `all_gather`).
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// The world size.
        world: usize,
        /// libtorch's message (for a dead peer Gloo says e.g. "Connection closed by peer").
        message: String,
    },
    /// A tensor a collective cannot take.
    #[error("{op}: {reason}")]
    Tensor {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A libtorch error while packing or unpacking tensors.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
    /// A process layout that cannot be (`--nproc-per-node 0`, a node rank past `--nnodes`).
    #[error("{flag} {value}: {reason}")]
    Layout {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: usize,
        /// What is wrong.
        reason: String,
    },
    /// A worker a launcher started could not start or failed.
    #[error("rank {rank} {message}")]
    Launch {
        /// The worker's rank.
        rank: usize,
        /// What happened (`exited with exit status: 2`, `could not start: …`).
        message: String,
    },
}

/// The crate's result.
pub type Result<T> = std::result::Result<T, Error>;
