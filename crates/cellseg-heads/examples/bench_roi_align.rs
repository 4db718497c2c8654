//! Time of the multi-level RoI extractor (RoIAlign over the seed's four FPN levels) on the CPU:
//! our kernel against the libtorch-ops construction (what other devices run), forward alone and
//! forward + backward. Run through `tools/bench_roi_align.sh`, which also times mmdet's
//! `SingleRoIExtractor` loop over `torchvision.ops.roi_align` on the same RoIs in the same
//! command.
//!
//! Cases (the seed's shapes, stride-1 stem: levels at strides 2, 4, 8, 16 of 256 channels):
//! `box_train`: 1,024 RoIs, 7×7, on a batch of two 256×256 crops (512 sampled RoIs an image);
//! `mask_train`: 256 RoIs, 14×14, same levels; `box_infer`: 1,000 RoIs, 7×7, on one 544×704
//! image; `mask_infer`: 100 RoIs, 14×14, same image. RoIs are 6–60 px boxes from a fixed LCG,
//! the same as the Python side's.
//!
//! Environment: `ITERS` (5), `WARMUP` (1), `THREADS` (2).

use std::time::Instant;

use cellseg_heads::ops::roi_align::{RoiAlignConfig, RoiExtractor, with_libtorch_ops};
use tch::{Device, Kind, Tensor};

fn env(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `n` RoIs `(image, x1, y1, x2, y2)` over `images` images of `h × w` (the LCG of
/// tools/roi_align_bench.py).
fn rois(n: usize, images: usize, h: f64, w: f64) -> Tensor {
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut v = Vec::with_capacity(5 * n);
    for i in 0..n {
        let (bw, bh) = (6.0 + 54.0 * next(), 6.0 + 54.0 * next());
        let (x, y) = ((w - bw) * next(), (h - bh) * next());
        v.extend([(i % images) as f32, x as f32, y as f32, (x + bw) as f32, (y + bh) as f32]);
    }
    Tensor::from_slice(&v).view([n as i64, 5])
}

/// Median milliseconds of `f` over `iters` runs after `warmup`.
fn time(iters: usize, warmup: usize, mut f: impl FnMut()) -> f64 {
    let mut t = Vec::new();
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        f();
        if i >= warmup {
            t.push(1e3 * t0.elapsed().as_secs_f64());
        }
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let iters = env("ITERS", 5);
    let warmup = env("WARMUP", 1);
    tch::set_num_threads(env("THREADS", 2) as i32);
    let cases = [
        ("box_train", 2, 256, 256, 1024, 7),
        ("mask_train", 2, 256, 256, 256, 14),
        ("box_infer", 1, 544, 704, 1000, 7),
        ("mask_infer", 1, 544, 704, 100, 14),
    ];
    for (name, images, h, w, n, p) in cases {
        tch::manual_seed(0);
        let feats: Vec<Tensor> = [2, 4, 8, 16]
            .iter()
            .map(|s| Tensor::randn([images, 256, h / s, w / s], (Kind::Float, Device::Cpu)))
            .collect();
        let r = rois(n, images as usize, h as f64, w as f64);
        let cfg = RoiAlignConfig { output_size: p, ..RoiAlignConfig::default() };
        let ex = RoiExtractor::new(&cfg);
        let weights = Tensor::randn([n as i64, 256, p, p], (Kind::Float, Device::Cpu));
        let forward = || {
            let _ = tch::no_grad(|| ex.forward(&feats, &r));
        };
        let backward = || {
            let leaves: Vec<Tensor> =
                feats.iter().map(|f| f.detach().set_requires_grad(true)).collect();
            (ex.forward(&leaves, &r) * &weights).sum(Kind::Float).backward();
        };
        let fk = time(iters, warmup, forward);
        let fo = with_libtorch_ops(|| time(iters, warmup, forward));
        let bk = time(iters, warmup, backward);
        let bo = with_libtorch_ops(|| time(iters, warmup, backward));
        println!(
            "RESULT cellseg case={name} forward_ms={fk:.3} forward_ops_ms={fo:.3} \
             train_ms={bk:.3} train_ops_ms={bo:.3}"
        );
    }
}
