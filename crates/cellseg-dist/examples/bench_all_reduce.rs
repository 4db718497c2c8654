//! The cost of data parallelism for the seed's detector: one training step of the R50 stride-1
//! Mask R-CNN on 256×256 crops, then the mean all-reduce of its gradients over Gloo, on
//! `WORLD` processes of this machine (default 2; the cores split between them).
//!
//! Run without arguments, it starts itself once per rank (with torchrun's variables) and prints
//! each rank's figures: the step time, the gradients' bytes, and the all-reduce time and
//! bandwidth (bytes reduced per second of one all-reduce; median of `ITERS`, default 5).
//! Environment: `WORLD` (2), `BATCH` per rank (2), `ITERS` (5).
//!
//! ```sh
//! cargo run --release -p cellseg-dist --example bench_all_reduce
//! ```

use std::process::{Command, Stdio};
use std::time::Instant;

use cellseg_core::ImageSize;
use cellseg_dist::{ProcessGroup, ReduceOp};
use cellseg_heads::DetectorConfig;
use tch::{Device, Kind, Tensor};

fn env(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("RANK").is_none() {
        return launch();
    }
    let group = ProcessGroup::from_env()?;
    let world = group.world_size();
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    tch::set_num_threads((cores / world).max(1) as i32);
    let batch = env("BATCH", 2);
    let iters = env("ITERS", 5).max(1);
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut cfg = DetectorConfig::default();
    cfg.heads.num_classes = 3;
    let model = cfg.build(&vs.root())?;
    let size = ImageSize::new(256, 256);
    let targets: Vec<_> = cellseg_data::synthetic::samples(batch, size, group.rank() as u64)
        .into_iter()
        .map(|s| s.instances)
        .collect();
    let images = Tensor::randn([batch as i64, 3, 256, 256], (Kind::Float, Device::Cpu));
    let params: Vec<Tensor> = vs.trainable_variables();
    let t0 = Instant::now();
    let total = model.losses(&images, &targets)?.total();
    let grads = Tensor::run_backward(&[&total], &params, false, false);
    let step_ms = 1e3 * t0.elapsed().as_secs_f64();
    let bytes: usize = grads.iter().map(|g| g.numel() * g.kind().elt_size_in_bytes()).sum();
    group.barrier()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        group.all_reduce(&grads, ReduceOp::Mean)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let ms = 1e3 * median(times);
    println!(
        "rank {} of {world} ({} threads): step {step_ms:.0} ms (batch {batch}); gradients {} \
         tensors, {:.1} MB; all-reduce (mean, 25 MiB buckets) {ms:.0} ms = {:.2} GB/s; \
         all-reduce / step {:.2}",
        group.rank(),
        tch::get_num_threads(),
        grads.len(),
        bytes as f64 / 1e6,
        bytes as f64 / (ms / 1e3) / 1e9,
        ms / step_ms
    );
    Ok(())
}

/// Starts this program once per rank on a free port of 127.0.0.1 and waits for all.
fn launch() -> anyhow::Result<()> {
    let world = env("WORLD", 2).max(2);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let me = std::env::current_exe()?;
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&me)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for (rank, mut c) in children.into_iter().enumerate() {
        let status = c.wait()?;
        anyhow::ensure!(status.success(), "rank {rank} failed: {status}");
    }
    Ok(())
}
