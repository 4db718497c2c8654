//! It learns: a small Mask R-CNN ([`TinyConvNet`] trunk, 32-channel FPN, slim heads) trains for
//! 300 steps on CPU on synthetic cells, and the competition metric on held-out synthetic images
//! rises from about 0 to well above 0.5.
//!
//! `tch::manual_seed` is process-global, so the test holds
//! [`torch_lock`](cellseg_core::testing::torch_lock) and the run is deterministic. `LEARN_STEPS=n` overrides the number of steps for experiments.

use std::time::{Duration, Instant};

use cellseg_backbones::{FpnConfig, TinyConfig, TinyConvNet};
use cellseg_core::testing::torch_lock;
use cellseg_core::{BoxXyxy, CroppedMask, Detections, ImageSize, Instances};
use cellseg_heads::config::HeadsConfig;
use cellseg_heads::{DetectorConfig, MaskRcnn, TwoStageDetector};
use tch::{Device, Tensor, nn, nn::OptimizerConfig};

/// Side of the square synthetic images (already a multiple of the coarsest stride, 32).
const SIDE: usize = 64;
/// Training steps (batch of 2 fresh images each).
const STEPS: usize = 300;
/// Held-out images the metric is averaged over.
const HELD_OUT: usize = 16;

/// [`DetectorConfig::tiny`]'s heads for one class, with a stricter test-time score and NMS.
fn small_heads() -> HeadsConfig {
    let mut h = DetectorConfig::tiny(1).heads;
    h.test.score_thr = 0.5;
    h.test.nms_iou = 0.3;
    h
}

/// The model the way `cellseg_train::detector::Detector::tiny` builds it, in `vs`.
fn build(vs: &nn::VarStore) -> MaskRcnn {
    let root = vs.root();
    let trunk = TinyConvNet::new(
        &(&root / "backbone"),
        &TinyConfig { widths: [16, 16, 32, 32], ..TinyConfig::default() },
    )
    .unwrap();
    let neck = FpnConfig { out_channels: 32, num_outs: 5 };
    MaskRcnn::with_backbone(&root, Box::new(trunk), &neck, &small_heads()).unwrap()
}

/// A tiny deterministic generator (xorshift), so the data never depends on libtorch's RNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.next()
    }
}

/// A `SIDE`×`SIDE` noisy image with 2–5 random bright ellipses ("cells") whose boxes keep a
/// one-pixel gap, and its instances.
fn synthetic(rng: &mut Rng) -> (Tensor, Instances) {
    let side = SIDE;
    let size = ImageSize::new(side, side);
    let mut img: Vec<f32> = (0..side * side).map(|_| rng.range(-0.3, 0.3)).collect();
    let n = 2 + (rng.next() * 4.0) as usize;
    let mut rects: Vec<(usize, usize, usize, usize)> = Vec::new(); // top, left, bottom, right (excl.)
    let mut masks = Vec::new();
    let mut tries = 0;
    let intensity = rng.range(1.0, 2.0);
    while masks.len() < n && tries < 100 {
        tries += 1;
        let lim = side as f32 - 6.0;
        let (cy, cx) = (rng.range(6.0, lim), rng.range(6.0, lim));
        let (ry, rx) = (rng.range(3.0, 9.0), rng.range(3.0, 9.0));
        let (top, bottom) =
            ((cy - ry).floor().max(0.0) as usize, ((cy + ry).ceil() as usize).min(side));
        let (left, right) =
            ((cx - rx).floor().max(0.0) as usize, ((cx + rx).ceil() as usize).min(side));
        if rects.iter().any(|&(t, l, b, r)| top <= b && t <= bottom && left <= r && l <= right) {
            continue; // the boxes would touch
        }
        let (h, w) = (bottom - top, right - left);
        let mut data = vec![0u8; h * w];
        for r in 0..h {
            for c in 0..w {
                let dy = ((top + r) as f32 + 0.5 - cy) / ry;
                let dx = ((left + c) as f32 + 0.5 - cx) / rx;
                if dy * dy + dx * dx <= 1.0 {
                    data[r * w + c] = 1;
                    img[(top + r) * side + left + c] += intensity;
                }
            }
        }
        rects.push((top, left, bottom, right));
        masks.push(CroppedMask::new(size, top, left, h, w, data).unwrap());
    }
    let boxes: Vec<BoxXyxy> = masks.iter().map(|m| m.bbox().unwrap()).collect();
    let labels = vec![0; masks.len()];
    let s = side as i64;
    let t = Tensor::from_slice(&img).view([1, 1, s, s]).expand([1, 3, s, s], false).contiguous();
    (t, Instances::new(size, boxes, labels, masks).unwrap())
}

/// Competition (Sartorius) metric of one image: mean over IoU thresholds 0.5:0.05:0.95 of
/// TP / (TP + FP + FN), greedy matching by score with IoU > t.
fn sartorius_map(pred: &Detections, gt: &Instances) -> f64 {
    let order = pred.order_by_score();
    let mut total = 0.0;
    for k in 0..10 {
        let t = 0.5 + 0.05 * k as f64;
        let mut used = vec![false; gt.len()];
        let mut tp = 0;
        for &i in &order {
            let best = (0..gt.len())
                .filter(|&j| !used[j])
                .map(|j| (j, pred.masks[i].iou(&gt.masks[j])))
                .filter(|&(_, iou)| iou > t)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((j, _)) = best {
                used[j] = true;
                tp += 1;
            }
        }
        let fp = pred.len() - tp;
        let fn_ = gt.len() - tp;
        let denom = tp + fp + fn_;
        total += if denom == 0 { 1.0 } else { tp as f64 / denom as f64 };
    }
    total / 10.0
}

fn evaluate(model: &MaskRcnn, data: &[(Tensor, Instances)]) -> f64 {
    let mut s = 0.0;
    for (img, inst) in data {
        let d = model.predict(img, &[inst.image_size]).unwrap();
        // Soft masks binarised at mmdet's default `mask_thr_binary` 0.5.
        s += sartorius_map(&d[0].binarize(0.5).unwrap(), inst);
    }
    s / data.len() as f64
}

#[test]
fn learns_synthetic_cells() {
    let _torch = torch_lock();
    tch::manual_seed(0);
    // One intra-op thread: the tensors are tiny, and with two OpenMP threads 100 steps took 35 s
    // instead of 8 s on the (shared) 2-core dev machine.
    tch::set_num_threads(1);
    let t_all = Instant::now();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = build(&vs);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let held_out: Vec<_> = (0..HELD_OUT).map(|_| synthetic(&mut rng)).collect();
    let before = evaluate(&model, &held_out);
    let mut opt = nn::Adam::default().build(&vs, 2e-3).unwrap();
    let steps: usize =
        std::env::var("LEARN_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(STEPS);
    let (mut t_data, mut t_fwd, mut t_bwd) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for step in 0..steps {
        let t = Instant::now();
        let batch: Vec<_> = (0..2).map(|_| synthetic(&mut rng)).collect();
        let images = Tensor::cat(&batch.iter().map(|b| b.0.shallow_clone()).collect::<Vec<_>>(), 0);
        let targets: Vec<Instances> = batch.into_iter().map(|b| b.1).collect();
        t_data += t.elapsed();
        let t = Instant::now();
        let losses = model.losses(&images, &targets).unwrap();
        let total = losses.total();
        t_fwd += t.elapsed();
        let t = Instant::now();
        opt.backward_step(&total);
        t_bwd += t.elapsed();
        let v = f64::try_from(&total).unwrap();
        assert!(v.is_finite(), "step {step}: loss {v}");
        if step % 50 == 0 || step == steps - 1 {
            println!("step {step} ({:.1?}): {:?}", t_all.elapsed(), losses.values());
        }
    }
    let t = Instant::now();
    let after = evaluate(&model, &held_out);
    let t_eval = t.elapsed();
    println!(
        "competition metric on {HELD_OUT} held-out {SIDE}x{SIDE} synthetic images: untrained \
         {before:.3}, after {steps} steps {after:.3}"
    );
    println!(
        "time: data {t_data:.1?}, losses {t_fwd:.1?}, backward+step {t_bwd:.1?}, final eval \
         {t_eval:.1?}, total {:.1?}",
        t_all.elapsed()
    );
    if steps == STEPS {
        assert!(before < 0.1, "untrained model should score about 0, got {before}");
        assert!(after > 0.5 && after > before + 0.4, "did not learn: {before} -> {after}");
    }
}
