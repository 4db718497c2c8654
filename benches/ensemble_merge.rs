//! The ensemble's merge points 2 and 3 on the CPU, one thread: 6 members × 4 flip views = 24
//! passes over a 520×704 image.
//!
//! - `mask_merge/6x4x300`: 300 final boxes; per pass the label channel of `[300, 3, 28, 28]`
//!   probabilities, flipped back with [`View::masks_back`], then [`masks::merge`] and
//!   [`masks::paste`] into the box windows.
//! - `box_merge/6x4x3000`: 3000 proposals, 3 classes; per pass boxes `[N, 4]`, class boxes
//!   `[N, 3, 4]` and scores `[N, 3]` mapped back with [`View::boxes`], then [`boxes::merge`] and
//!   [`boxes::select`] with the seed's settings for shsy5y (class-agnostic NMS 0.7, score > 0.2).
//!
//! Input: `CELLSEG_ENSEMBLE_BENCH_INPUT` names a safetensors file written by
//! `tools/ensemble_bench.py gen`; `tools/bench_ensemble.sh` sets it and times the seed's Python
//! merging on the same numbers, printing the ratio. Without it the same shapes and distributions
//! are generated here (`cargo bench --bench ensemble_merge`).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use cellseg::core::{CellType, ImageSize};
use cellseg::ensemble::boxes::{self, BoxPass};
use cellseg::ensemble::masks;
use cellseg::ensemble::views::View;
use cellseg::ensemble::{BoxNms, BoxSettings};
use cellseg::heads::roi_heads::RawDetections;
use cellseg::postproc::SoftDetections;
use criterion::{Criterion, criterion_group, criterion_main};
use tch::{Device, Kind, Tensor};

const H: i64 = 520;
const W: i64 = 704;
const PASSES: usize = 24;
const K: i64 = 300;
const N: i64 = 3000;
const C: i64 = 3;
const CELLS: i64 = 400;
const M: i64 = 28;
const F: (Kind, Device) = (Kind::Float, Device::Cpu);

struct Inputs {
    dets: RawDetections,
    /// `[K, C, M, M]` per pass, in its view.
    mask_probs: Vec<Tensor>,
    /// `(boxes [N, 4], class_boxes [N, C, 4], scores [N, C])` per pass, in its view.
    box_passes: Vec<(Tensor, Tensor, Tensor)>,
}

fn view(p: usize) -> View {
    View::ALL[p % 4]
}

fn read(path: &str) -> Inputs {
    let mut t: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .into_iter()
        .collect();
    let mut take = |name: String| t.remove(&name).unwrap_or_else(|| panic!("{path}: no {name}"));
    let dets = RawDetections {
        boxes: take("mask_boxes".into()),
        scores: take("mask_scores".into()),
        labels: take("mask_labels".into()),
    };
    let mask_probs = (0..PASSES).map(|p| take(format!("mask_probs_{p}"))).collect();
    let box_passes = (0..PASSES)
        .map(|p| {
            (
                take(format!("box_{p}")),
                take(format!("class_boxes_{p}")),
                take(format!("scores_{p}")),
            )
        })
        .collect();
    Inputs { dets, mask_probs, box_passes }
}

/// The same sequence of draws as `tools/ensemble_bench.py gen`.
fn generate() -> Inputs {
    tch::manual_seed(0);
    let side = Tensor::rand([CELLS, 2], F) * 56.0 + 8.0;
    let ctr = Tensor::rand([CELLS, 2], F) * (Tensor::from_slice(&[W as f32, H as f32]) - &side)
        + &side / 2.0;
    let cells = Tensor::cat(&[&ctr - &side / 2.0, &ctr + &side / 2.0], 1);
    let cell_cls = Tensor::randint_low(0, C, [CELLS], (Kind::Int64, Device::Cpu));
    let dets = RawDetections {
        boxes: cells.narrow(0, 0, K).copy(),
        labels: cell_cls.narrow(0, 0, K).copy(),
        scores: Tensor::rand([K], F) * 0.8 + 0.2,
    };
    let r = (Tensor::arange(M, F) + 0.5) / (M as f64 / 2.0) - 1.0;
    let r2 = r.square();
    let blob = (-(r2.unsqueeze(1) + r2.unsqueeze(0)) + 0.6) * 4.0;
    let idx = Tensor::arange(N, (Kind::Int64, Device::Cpu)).remainder(CELLS);
    let jitter = side.index_select(0, &idx).repeat([1, 2]) * 0.06;
    let base = cells.index_select(0, &idx) + &jitter * Tensor::randn([N, 4], F);
    let onehot = cell_cls.index_select(0, &idx).one_hot(C + 1).to_kind(Kind::Float);
    let logits = Tensor::randn([N, C + 1], F) * 1.5 + onehot * 2.5;
    let (mut mask_probs, mut box_passes) = (Vec::new(), Vec::new());
    for p in 0..PASSES {
        mask_probs.push((&blob + Tensor::randn([K, C, M, M], F)).sigmoid());
        let cb = base.unsqueeze(1) + jitter.unsqueeze(1) * 0.5 * Tensor::randn([N, C, 4], F);
        let s =
            (&logits + Tensor::randn([N, C + 1], F) * 0.5).softmax(1, Kind::Float).narrow(1, 0, C);
        let best = s.argmax(1, false).view([N, 1, 1]).expand([N, 1, 4], false);
        let b = cb.gather(1, &best, false).squeeze_dim(1);
        let v = view(p);
        box_passes.push((v.boxes(&b, (H, W)), v.boxes(&cb, (H, W)), s));
    }
    Inputs { dets, mask_probs, box_passes }
}

fn mask_chain(inp: &Inputs) -> SoftDetections {
    let _g = tch::no_grad_guard();
    let label = inp.dets.labels.view([K, 1, 1, 1]).expand([K, 1, M, M], false);
    let passes: Vec<Tensor> = inp
        .mask_probs
        .iter()
        .enumerate()
        .map(|(p, probs)| view(p).masks_back(&probs.gather(1, &label, false).squeeze_dim(1)))
        .collect();
    let merged = masks::merge(&passes);
    masks::paste(&inp.dets, &merged, ImageSize::new(H as usize, W as usize))
        .expect("the paste matches the detections")
}

fn box_chain(inp: &Inputs, settings: &BoxSettings) -> RawDetections {
    let _g = tch::no_grad_guard();
    let passes: Vec<BoxPass> = inp
        .box_passes
        .iter()
        .enumerate()
        .map(|(p, (b, cb, s))| BoxPass {
            boxes: view(p).boxes(b, (H, W)),
            // as the ensemble does: class boxes only for the mode that reads them
            class_boxes: (settings.nms == BoxNms::PerClass).then(|| view(p).boxes(cb, (H, W))),
            scores: s.shallow_clone(),
        })
        .collect();
    let merged = boxes::merge(&passes);
    boxes::select(&merged, settings, CellType::Shsy5y)
}

fn bench(c: &mut Criterion) {
    tch::set_num_threads(1);
    let inp = match std::env::var("CELLSEG_ENSEMBLE_BENCH_INPUT") {
        Ok(path) => read(&path),
        Err(_) => generate(),
    };
    let settings = BoxSettings::default();
    let soft = mask_chain(&inp);
    let nonzero: usize =
        soft.masks.iter().map(|m| m.as_slice().iter().filter(|&&v| v > 0).count()).sum();
    let kept = box_chain(&inp, &settings).scores.size()[0];
    eprintln!(
        "ensemble_merge: {} masks, {nonzero} non-zero bytes; {kept} boxes kept",
        soft.masks.len()
    );

    let mut g = c.benchmark_group("mask_merge");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("6x4x300", |b| b.iter(|| black_box(mask_chain(&inp))));
    g.finish();
    let mut g = c.benchmark_group("box_merge");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("6x4x3000", |b| b.iter(|| black_box(box_chain(&inp, &settings))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
