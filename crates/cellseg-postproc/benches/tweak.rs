//! Threshold tweaking (`tweak::tweak`) over the seed's grid (1 mask × 3 NMS × 5 sizes × 13
//! confidences per image), on one thread and on all of rayon's threads.
//!
//! Input: `CELLSEG_TWEAK_BENCH_DIR` names a folder with `oof.bin` and `truth.csv` written by
//! `tools/tweak_seed.py gen` (predictions made from real Sartorius truth); `tools/bench_tweak.sh`
//! sets it and times the Python seed tweak on the same files. Without it, 8 synthetic images of
//! squares are used.

use std::hint::black_box;
use std::path::PathBuf;

use cellseg_core::{BitMask, BoxXyxy, CellType, ImageSize};
use cellseg_metrics::report::load_truth_csv;
use cellseg_postproc::oof::read_oof;
use cellseg_postproc::tweak::{TweakGrid, TweakImage, images_with_truth, tweak};
use cellseg_postproc::{SoftDetections, SoftMask};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn synthetic() -> Vec<TweakImage> {
    let size = ImageSize::new(520, 704);
    (0..8)
        .map(|k| {
            let mut d = SoftDetections {
                image_size: size,
                boxes: vec![],
                scores: vec![],
                labels: vec![],
                masks: vec![],
            };
            let mut truth = Vec::new();
            for c in 0..200usize {
                let (r, col) = (20 + (c / 20) * 48, 20 + (c % 20) * 33);
                let mut m = BitMask::zeros(size);
                (r..r + 20).for_each(|y| (col..col + 20).for_each(|x| m.set(y, x, true)));
                truth.push(m.to_cropped());
                let shift = (c + k) % 3;
                d.masks.push(SoftMask::new(size, r + shift, col, 20, 20, vec![200; 400]).unwrap());
                d.boxes.push(BoxXyxy::new(
                    col as f32,
                    r as f32,
                    col as f32 + 20.0,
                    r as f32 + 20.0,
                ));
                d.scores.push(((c * 37 + k) % 97) as f32 / 97.0);
                d.labels.push(k % 3);
            }
            TweakImage {
                id: format!("s{k}"),
                detections: d,
                truth,
                truth_type: Some(CellType::Cort),
            }
        })
        .collect()
}

fn inputs() -> Vec<TweakImage> {
    let Ok(dir) = std::env::var("CELLSEG_TWEAK_BENCH_DIR") else { return synthetic() };
    let dir = PathBuf::from(dir);
    let (oof, truth) = (dir.join("oof.bin"), dir.join("truth.csv"));
    let preds = read_oof(&oof).unwrap();
    let truth_images = load_truth_csv(&truth).unwrap();
    images_with_truth(preds, &truth_images, &oof, &truth).unwrap().images
}

fn bench(c: &mut Criterion) {
    let images = inputs();
    let grid = TweakGrid::default();
    let mut group = c.benchmark_group("tweak");
    group.sample_size(10);
    group.throughput(Throughput::Elements(images.len() as u64));
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let cv = one.install(|| tweak(&images, &grid, &|| {}).unwrap().cv);
    eprintln!("{} images, {} grid points each, CV {cv:.12}", images.len(), grid.len());
    group.bench_function("seed_grid/1_thread", |b| {
        b.iter(|| one.install(|| black_box(tweak(black_box(&images), &grid, &|| {}).unwrap())))
    });
    group.bench_function("seed_grid/all_threads", |b| {
        b.iter(|| black_box(tweak(black_box(&images), &grid, &|| {}).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
