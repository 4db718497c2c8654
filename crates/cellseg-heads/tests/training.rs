//! Training behaviour: a small Mask R-CNN learns synthetic cells, and degenerate inputs give
//! finite losses.

use cellseg_backbones::{Backbone, FpnConfig, ShapeSpec};
use cellseg_core::{BitMask, Detections, ImageSize, Instances};
use cellseg_heads::MaskRcnn;
use cellseg_heads::config::HeadsConfig;
use tch::{Device, Kind, Tensor, nn, nn::Module, nn::OptimizerConfig};

/// A tiny conv trunk with outputs at strides 2, 4, 8, 16 (the seed's stride-1-stem layout).
#[derive(Debug)]
struct TinyBackbone {
    convs: Vec<nn::Conv2D>,
    chans: Vec<i64>,
}

impl TinyBackbone {
    fn new(p: &nn::Path) -> Self {
        let chans = vec![16, 24, 32, 32];
        let mut convs = Vec::new();
        let mut cin = 3;
        for (i, &c) in chans.iter().enumerate() {
            let cfg = nn::ConvConfig { stride: 2, padding: 1, ..Default::default() };
            convs.push(nn::conv2d(p / format!("down{i}"), cin, c, 3, cfg));
            convs.push(nn::conv2d(
                p / format!("conv{i}"),
                c,
                c,
                3,
                nn::ConvConfig { padding: 1, ..Default::default() },
            ));
            cin = c;
        }
        Self { convs, chans }
    }
}

impl Backbone for TinyBackbone {
    fn out_shapes(&self) -> Vec<ShapeSpec> {
        self.chans
            .iter()
            .enumerate()
            .map(|(i, &c)| ShapeSpec { channels: c, stride: 2 << i })
            .collect()
    }
    fn forward(&self, images: &Tensor, _train: bool) -> Vec<Tensor> {
        let mut x = images.shallow_clone();
        let mut outs = Vec::new();
        for pair in self.convs.chunks(2) {
            x = pair[0].forward(&x).relu();
            x = pair[1].forward(&x).relu();
            outs.push(x.shallow_clone());
        }
        outs
    }
}

fn small_heads() -> HeadsConfig {
    let mut h = HeadsConfig { num_classes: 1, ..HeadsConfig::default() };
    h.rpn.feat_channels = 32;
    h.rpn.anchors.scales = vec![4.0]; // 8 … 128 px
    h.rpn.sampler.num = 128;
    h.rpn.train_proposals.nms_pre = 200;
    h.rpn.train_proposals.max_per_img = 100;
    h.rpn.test_proposals.nms_pre = 200;
    h.rpn.test_proposals.max_per_img = 100;
    h.bbox_head.fc_channels = 64;
    h.bbox_head.sampler.num = 64;
    h.mask_head.conv_channels = 32;
    h.mask_head.num_convs = 2;
    h.test.score_thr = 0.5;
    h.test.nms_iou = 0.3;
    h.test.max_per_img = 100;
    h
}

fn build(vs: &nn::VarStore) -> MaskRcnn {
    let root = vs.root();
    let bb = TinyBackbone::new(&(&root / "backbone"));
    let neck = FpnConfig { out_channels: 32, num_outs: 5 };
    MaskRcnn::with_backbone(&root, Box::new(bb), &neck, &small_heads()).unwrap()
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

/// A 64×64 image with 2–5 non-overlapping random ellipses ("cells") and its instances.
fn synthetic(rng: &mut Rng) -> (Tensor, Instances) {
    let (h, w) = (64usize, 64usize);
    let size = ImageSize::new(h, w);
    let mut img = vec![0f32; h * w];
    for v in &mut img {
        *v = rng.range(-0.3, 0.3);
    }
    let mut masks: Vec<BitMask> = Vec::new();
    let n = 2 + (rng.next() * 4.0) as usize;
    let mut tries = 0;
    while masks.len() < n && tries < 100 {
        tries += 1;
        let (cy, cx) = (rng.range(6.0, 58.0), rng.range(6.0, 58.0));
        let (ry, rx) = (rng.range(3.0, 9.0), rng.range(3.0, 9.0));
        let mut m = BitMask::zeros(size);
        for r in 0..h {
            for c in 0..w {
                let (dy, dx) = ((r as f32 + 0.5 - cy) / ry, (c as f32 + 0.5 - cx) / rx);
                if dy * dy + dx * dx <= 1.0 {
                    m.set(r, c, true);
                }
            }
        }
        // Keep a one-pixel gap to every other cell.
        let touches = masks.iter().any(|o| {
            (0..h).any(|r| {
                (0..w).any(|c| {
                    m.get(r, c)
                        && (r.saturating_sub(1)..(r + 2).min(h))
                            .any(|rr| (c.saturating_sub(1)..(c + 2).min(w)).any(|cc| o.get(rr, cc)))
                })
            })
        });
        if m.area() < 6 || touches {
            continue;
        }
        masks.push(m);
    }
    let intensity = rng.range(1.0, 2.0);
    for m in &masks {
        for (v, &b) in img.iter_mut().zip(m.as_slice()) {
            if b != 0 {
                *v += intensity;
            }
        }
    }
    let boxes = masks.iter().map(|m| m.bbox().unwrap()).collect();
    let labels = vec![0; masks.len()];
    let masks = masks.iter().map(|m| m.to_cropped()).collect();
    let t = Tensor::from_slice(&img)
        .view([1, 1, h as i64, w as i64])
        .expand([1, 3, h as i64, w as i64], false)
        .contiguous();
    (t, Instances::new(size, boxes, labels, masks).unwrap())
}

/// Sartorius metric of one image: mean over IoU thresholds 0.5:0.05:0.95 of TP / (TP + FP + FN),
/// greedy matching by score with IoU > t.
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
        s += sartorius_map(&d[0], inst);
    }
    s / data.len() as f64
}

#[test]
fn learns_synthetic_cells() {
    tch::manual_seed(0);
    tch::set_num_threads(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = build(&vs);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let held_out: Vec<_> = (0..8).map(|_| synthetic(&mut rng)).collect();
    let before = evaluate(&model, &held_out);
    let mut opt = nn::Adam::default().build(&vs, 2e-3).unwrap();
    let steps: usize =
        std::env::var("LEARN_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let t0 = std::time::Instant::now();
    let mut last = Vec::new();
    for step in 0..steps {
        let batch: Vec<_> = (0..2).map(|_| synthetic(&mut rng)).collect();
        let images = Tensor::cat(&batch.iter().map(|b| b.0.shallow_clone()).collect::<Vec<_>>(), 0);
        let targets: Vec<Instances> = batch.into_iter().map(|b| b.1).collect();
        let losses = model.losses(&images, &targets).unwrap();
        let total = losses.total();
        let tb = std::time::Instant::now();
        opt.backward_step(&total);
        if std::env::var_os("CELLSEG_PROFILE").is_some() {
            eprintln!("backward {:?}", tb.elapsed());
        }
        let v = f64::try_from(&total).unwrap();
        assert!(v.is_finite(), "step {step}: loss {v}");
        if step % 50 == 0 || step == steps - 1 {
            println!("step {step}: {:?}", losses.values());
        }
        last.push(v);
    }
    let after = evaluate(&model, &held_out);
    println!(
        "Sartorius mAP on 8 held-out synthetic images: untrained {before:.3}, after {steps} steps {after:.3} ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(after > before + 0.3 && after > 0.4, "did not learn: {before} -> {after}");
}

fn square_mask(size: ImageSize, r0: usize, c0: usize, hh: usize, ww: usize) -> BitMask {
    let mut m = BitMask::zeros(size);
    for r in r0..(r0 + hh).min(size.height) {
        for c in c0..(c0 + ww).min(size.width) {
            m.set(r, c, true);
        }
    }
    m
}

fn instances(size: ImageSize, masks: Vec<BitMask>) -> Instances {
    let boxes = masks.iter().map(|m| m.bbox().unwrap()).collect();
    let labels = vec![0; masks.len()];
    Instances::new(size, boxes, labels, masks.iter().map(|m| m.to_cropped()).collect()).unwrap()
}

fn step_is_finite(model: &MaskRcnn, vs: &nn::VarStore, images: &Tensor, targets: &[Instances]) {
    let mut opt = nn::Sgd::default().build(vs, 1e-3).unwrap();
    let losses = model.losses(images, targets).unwrap();
    for (k, v) in losses.values() {
        assert!(v.is_finite(), "{k} = {v}");
    }
    opt.backward_step(&losses.total());
    for (k, v) in vs.variables() {
        assert!(bool::try_from(v.isfinite().all()).unwrap(), "{k} became non-finite");
    }
}

#[test]
fn degenerate_inputs_give_finite_losses() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = build(&vs);
    let size = ImageSize::new(64, 64);
    let images = Tensor::randn([3, 3, 64, 64], (Kind::Float, Device::Cpu));
    let targets = vec![
        Instances::empty(size),
        instances(size, vec![square_mask(size, 10, 20, 1, 1)]),
        instances(
            size,
            vec![
                square_mask(size, 0, 0, 12, 9),
                square_mask(size, 50, 54, 14, 10),
                square_mask(size, 0, 40, 5, 24),
            ],
        ),
    ];
    step_is_finite(&model, &vs, &images, &targets);
    // A batch where no image has any ground truth.
    step_is_finite(&model, &vs, &images.slice(0, 0, 1, 1), &targets[..1]);
    // Predict on the same inputs.
    let d = model.predict(&images, &[size; 3]).unwrap();
    assert_eq!(d.len(), 3);
}

#[test]
fn eight_hundred_gts_on_a_full_size_image() {
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = build(&vs);
    let size = ImageSize::new(520, 704);
    let mut masks = Vec::new();
    'outer: for r in 0..25 {
        for c in 0..34 {
            if masks.len() == 800 {
                break 'outer;
            }
            masks.push(square_mask(size, 2 + r * 20, 3 + c * 20, 6 + (c % 9), 7 + (r % 7)));
        }
    }
    let inst = instances(size, masks);
    assert_eq!(inst.len(), 800);
    let images = Tensor::randn([1, 3, 544, 704], (Kind::Float, Device::Cpu)); // padded to /32
    let t0 = std::time::Instant::now();
    step_is_finite(&model, &vs, &images, &[inst]);
    println!("800 GTs, 520x704: one training step in {:.1} s", t0.elapsed().as_secs_f64());
}
