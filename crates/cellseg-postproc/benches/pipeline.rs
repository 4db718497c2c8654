//! The whole per-image post-processing (`Pipeline::run`, one thread) on ~500 candidate soft masks of
//! a 520×704 image.
//!
//! Input: `CELLSEG_POSTPROC_BENCH_INPUT` names a JSON written by `tools/postproc_bench.py gen` (real
//! Sartorius shapes: a shsy5y and an astro image); `tools/bench_postproc.sh` sets it and times the
//! Python baseline on the same input. Without it, a synthetic input of 500 random ellipses is used.

use std::hint::black_box;

use cellseg_core::{BoxXyxy, ImageSize};
use cellseg_postproc::{Pipeline, PostprocConfig, SoftDetections, SoftMask};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    images: Vec<ImageCase>,
}

#[derive(Deserialize)]
struct ImageCase {
    id: String,
    height: usize,
    width: usize,
    boxes: Vec<[f32; 4]>,
    scores: Vec<f32>,
    labels: Vec<usize>,
    soft: Vec<Soft>,
    expected: Expected,
}

#[derive(Deserialize)]
struct Soft {
    rect: [usize; 4],
    hex: String,
}

#[derive(Deserialize)]
struct Expected {
    indices: Vec<usize>,
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// `(name, input, expected kept indices)`.
fn inputs() -> Vec<(String, SoftDetections, Option<Vec<usize>>)> {
    if let Ok(path) = std::env::var("CELLSEG_POSTPROC_BENCH_INPUT") {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let input: Input = serde_json::from_str(&text).unwrap();
        return input
            .images
            .into_iter()
            .map(|im| {
                let size = ImageSize::new(im.height, im.width);
                let masks = im
                    .soft
                    .iter()
                    .map(|s| {
                        SoftMask::new(
                            size,
                            s.rect[0],
                            s.rect[1],
                            s.rect[2],
                            s.rect[3],
                            hex_bytes(&s.hex),
                        )
                        .unwrap()
                    })
                    .collect();
                let d = SoftDetections {
                    image_size: size,
                    boxes: im.boxes.iter().map(|b| BoxXyxy::new(b[0], b[1], b[2], b[3])).collect(),
                    scores: im.scores,
                    labels: im.labels,
                    masks,
                };
                (im.id, d, Some(im.expected.indices))
            })
            .collect();
    }
    eprintln!("CELLSEG_POSTPROC_BENCH_INPUT is not set: benchmarking 500 synthetic ellipses");
    vec![("synthetic".into(), synthetic(500), None)]
}

fn synthetic(n: usize) -> SoftDetections {
    let size = ImageSize::new(520, 704);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut boxes, mut scores, mut labels, mut masks) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let (a, b) = (4.0 + 14.0 * next(), 4.0 + 14.0 * next());
        let (h, w) = ((2.0 * b) as usize + 3, (2.0 * a) as usize + 3);
        let top = (next() * (size.height - h) as f64) as usize;
        let left = (next() * (size.width - w) as f64) as usize;
        let (cy, cx) = (h as f64 / 2.0, w as f64 / 2.0);
        let data = (0..h * w)
            .map(|k| {
                let (y, x) = ((k / w) as f64 + 0.5 - cy, (k % w) as f64 + 0.5 - cx);
                let d = (x / a).powi(2) + (y / b).powi(2);
                (255.0 * (1.5 - d).clamp(0.0, 1.0)) as u8
            })
            .collect();
        masks.push(SoftMask::new(size, top, left, h, w, data).unwrap());
        boxes.push(BoxXyxy::new(left as f32, top as f32, (left + w) as f32, (top + h) as f32));
        scores.push(next() as f32);
        labels.push(0);
    }
    SoftDetections { image_size: size, boxes, scores, labels, masks }
}

fn bench_pipeline(c: &mut Criterion) {
    let pipe = Pipeline::new(PostprocConfig::default()).unwrap();
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(20);
    for (name, input, expected) in inputs() {
        let out = pipe.run(&name, &input).unwrap();
        if let Some(expected) = expected {
            assert_eq!(
                out.source_indices, expected,
                "{name}: the Rust pipeline disagrees with the seed"
            );
        }
        group.throughput(Throughput::Elements(input.boxes.len() as u64));
        let id = BenchmarkId::new(name.clone(), format!("{}x520x704", input.boxes.len()));
        group.bench_with_input(id, &input, |b, input| {
            b.iter(|| pipe.run(&name, black_box(input)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
