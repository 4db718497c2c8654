//! Throughput of one Mask R-CNN R50-FPN (stride-1 stem) training step on synthetic 256×256 crops
//! with ~40 instances each, and of inference on one 520×704 image. Run through
//! `tools/bench_heads.sh`, which also times torchvision in the same command.
//!
//! Environment: `ARCH` (`mask_rcnn`, `cascade`, `htc`: the seed's detector of that architecture;
//! torchvision comparisons use `mask_rcnn`), `BATCH` (8), `ITERS` (timed iterations, 3), `WARMUP`
//! (1), `DEVICE` (`cpu` / `cuda`),
//! `AMP` (`1`: the training forward under float16 autocast, CUDA only), `TRACE` (`1`: the heads'
//! debug log, which includes the host-side time of each stage of `losses`), `ROI_ALIGN` (`ops`:
//! RoIAlign built from libtorch ops on the CPU too, instead of the CPU kernel).

use std::time::Instant;

use cellseg_core::{BitMask, ImageSize, Instances};
use cellseg_heads::DetectorConfig;
use tch::{Device, Kind, Tensor, nn, nn::OptimizerConfig};

fn env(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `n` random discs of radius 4–15 px in a `h × w` image (deterministic LCG).
fn instances(size: ImageSize, n: usize, seed: &mut u64) -> Instances {
    let mut next = || {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as f32 / (1u64 << 31) as f32
    };
    let mut masks = Vec::new();
    for _ in 0..n {
        let r = 4.0 + 11.0 * next();
        let cy = r + (size.height as f32 - 2.0 * r) * next();
        let cx = r + (size.width as f32 - 2.0 * r) * next();
        let mut m = BitMask::zeros(size);
        let (r0, r1) = ((cy - r).max(0.0) as usize, ((cy + r) as usize + 1).min(size.height));
        let (c0, c1) = ((cx - r).max(0.0) as usize, ((cx + r) as usize + 1).min(size.width));
        for y in r0..r1 {
            for x in c0..c1 {
                let (dy, dx) = (y as f32 + 0.5 - cy, x as f32 + 0.5 - cx);
                if dy * dy + dx * dx <= r * r {
                    m.set(y, x, true);
                }
            }
        }
        if m.area() > 0 {
            masks.push(m);
        }
    }
    let boxes = masks.iter().map(|m| m.bbox().unwrap()).collect();
    let labels = (0..masks.len()).map(|i| i % 3).collect();
    Instances::new(size, boxes, labels, masks.iter().map(|m| m.to_cropped()).collect()).unwrap()
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn main() -> anyhow::Result<()> {
    cellseg_heads::cpu_memory::retain_freed_memory();
    if std::env::var("ROI_ALIGN").as_deref() == Ok("ops") {
        return cellseg_heads::ops::roi_align::with_libtorch_ops(run);
    }
    run()
}

fn run() -> anyhow::Result<()> {
    if std::env::var("TRACE").as_deref() == Ok("1") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("cellseg_heads=debug"))
            .init();
    }
    let batch = env("BATCH", 8);
    let iters = env("ITERS", 3);
    let warmup = env("WARMUP", 1);
    let device = if std::env::var("DEVICE").as_deref() == Ok("cuda") {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let amp = std::env::var("AMP").as_deref() == Ok("1") && device.is_cuda();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let mut cfg = DetectorConfig::default();
    cfg.heads.num_classes = 3;
    // torchvision's maskrcnn_resnet50_fpn without pretrained weights uses training-mode BatchNorm2d.
    cfg.backbone.norm = cellseg_backbones::Norm::BatchNorm;
    let arch = match std::env::var("ARCH").as_deref() {
        Ok("cascade") => cellseg_heads::Arch::Cascade,
        Ok("htc") => cellseg_heads::Arch::Htc,
        Ok("mask_rcnn") | Err(_) => cellseg_heads::Arch::MaskRcnn,
        Ok(other) => anyhow::bail!("ARCH must be mask_rcnn, cascade or htc, not {other:?}"),
    };
    let cfg = cfg.to_arch(arch)?;
    let model = cfg.build(&vs.root())?;
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 1e-3)?;
    let size = ImageSize::new(256, 256);
    let mut seed = 1u64;
    let targets: Vec<Instances> = (0..batch).map(|_| instances(size, 40, &mut seed)).collect();
    let images = Tensor::randn([batch as i64, 3, 256, 256], (Kind::Float, device));
    let mut times = Vec::new();
    let (mut host_fwd, mut host_bwd) = (0.0, 0.0);
    for i in 0..warmup + iters {
        sync(device);
        let t0 = Instant::now();
        let losses = tch::autocast(amp, || model.losses(&images, &targets))?;
        let t1 = t0.elapsed().as_secs_f64();
        opt.backward_step(&losses.total());
        let t2 = t0.elapsed().as_secs_f64();
        sync(device);
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
            host_fwd += t1;
            host_bwd += t2 - t1;
        }
    }
    let n = times.len().max(1) as f64;
    println!(
        "cellseg host time before the final sync: forward {:.1} ms, backward+step {:.1} ms",
        1e3 * host_fwd / n,
        1e3 * host_bwd / n
    );
    let train_ms = 1e3 * times.iter().sum::<f64>() / times.len().max(1) as f64;
    println!(
        "cellseg train step: batch {batch} 256x256 ~40 inst{}: {train_ms:.1} ms/iter, {:.2} img/s",
        if amp { " (fp16 autocast)" } else { "" },
        batch as f64 / train_ms * 1e3
    );

    let img = Tensor::randn([1, 3, 544, 704], (Kind::Float, device)); // 520x704 padded to /32
    let full = ImageSize::new(520, 704);
    let mut times = Vec::new();
    let mut n = 0;
    for i in 0..warmup + iters {
        sync(device);
        let t0 = Instant::now();
        let d = model.predict(&img, &[full])?;
        sync(device);
        n = d[0].boxes.len();
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let infer_ms = 1e3 * times.iter().sum::<f64>() / times.len().max(1) as f64;
    println!("cellseg inference 520x704: {infer_ms:.1} ms/img ({n} detections)");
    println!("RESULT cellseg train_ms={train_ms:.3} infer_ms={infer_ms:.3}");
    Ok(())
}
