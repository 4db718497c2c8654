//! Metric benches: the competition metric over every image of the Sartorius COCO files, and
//! COCOeval (segm) on a Sartorius and a LIVECell file.
//!
//! Run through `tools/bench_rle_metrics.sh`, which writes the inputs with `tools/metrics_bench.py`
//! (into `$CELLSEG_BENCH_DIR`), times the Python baselines on them and prints the ratios.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use cellseg_core::ImageSize;
use cellseg_metrics::coco_dataset::CocoDataset;
use cellseg_metrics::cocoeval::{self, CocoEvalParams, IouType};
use cellseg_metrics::competition::{
    IouMatrix, image_score, mean_score, score_all, score_coco_strs,
};
use cellseg_rle::CocoRle;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

type Image = (ImageSize, Vec<String>, Vec<String>);

fn competition_inputs(dir: &Path) -> Option<Vec<Image>> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("competition.json")).ok()?).ok()?;
    let strs = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for im in v.as_object()?.values() {
        let size = ImageSize::new(im["height"].as_u64()? as usize, im["width"].as_u64()? as usize);
        out.push((size, strs(&im["truth"]), strs(&im["pred"])));
    }
    Some(out)
}

fn benches(c: &mut Criterion) {
    let Some(dir) = std::env::var_os("CELLSEG_BENCH_DIR").map(PathBuf::from) else {
        eprintln!("SKIP: CELLSEG_BENCH_DIR is not set; run tools/bench_rle_metrics.sh");
        return;
    };
    let images = competition_inputs(&dir).expect("competition.json");
    // Once, untimed: the fast string path gives exactly the IoUs of the pycocotools-exact dense
    // matrix (`cellseg_rle::coco::iou_matrix`) on every image.
    for (size, t, p) in &images {
        let parse = |v: &[String]| -> Vec<CocoRle> {
            v.iter().map(|s| CocoRle::from_counts_str(s, *size).unwrap()).collect()
        };
        let (tr, pr) = (parse(t), parse(p));
        let fast = IouMatrix::from_coco_strs(t, p, *size).unwrap().to_dense();
        let dense = cellseg_rle::coco::iou_matrix(&tr, &pr, &vec![false; pr.len()]).unwrap();
        assert!(fast.iter().zip(&dense).all(|(a, b)| a.to_bits() == b.to_bits()));
        // The pruned scoring path gives the score of the full matrix.
        let full = image_score(&IouMatrix::new(tr.len(), pr.len(), dense).unwrap());
        assert_eq!(score_coco_strs(t, p, *size).unwrap(), full);
    }
    // The metric equals the Python baseline's (numpy + pycocotools) on these very inputs.
    let scores: Vec<_> =
        images.iter().map(|(size, t, p)| score_coco_strs(t, p, *size).unwrap()).collect();
    let mean = mean_score(&scores).unwrap();
    if let Ok(text) = std::fs::read(dir.join("metrics_python.json")) {
        let py: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let want = py["competition_mean"].as_f64().unwrap();
        assert!((mean - want).abs() < 1e-12, "Rust mean {mean} != Python mean {want}");
        eprintln!("competition mean {mean:.12} (Python {want:.12})");
    }
    let mut g = c.benchmark_group("competition");
    g.sample_size(20);
    g.throughput(Throughput::Elements(images.len() as u64));
    // Same result as the Python baseline: parse the counts strings, IoUs, matching, mean. Only
    // pairs whose IoU can exceed 0.5 are intersected (`score_coco_strs`).
    g.bench_function(BenchmarkId::new("all_images", images.len()), |b| {
        b.iter(|| {
            let scores: Vec<_> =
                images.iter().map(|(size, t, p)| score_coco_strs(t, p, *size).unwrap()).collect();
            black_box(mean_score(&scores))
        })
    });
    // The same through `score_all`: images spread over rayon's threads (all cores).
    g.bench_function(BenchmarkId::new("all_images_rayon", images.len()), |b| {
        b.iter(|| {
            let scores = score_all(&images, |(size, t, p)| score_coco_strs(t, p, *size)).unwrap();
            black_box(mean_score(&scores))
        })
    });
    // Every non-zero IoU of every image (the full sparse matrix, as the Python baseline
    // computes it), then the score.
    g.bench_function(BenchmarkId::new("all_images_full_matrix", images.len()), |b| {
        b.iter(|| {
            let scores: Vec<_> = images
                .iter()
                .map(|(size, t, p)| image_score(&IouMatrix::from_coco_strs(t, p, *size).unwrap()))
                .collect();
            black_box(mean_score(&scores))
        })
    });
    // Through `CocoRle` values: parse each string into a `CocoRle`, then `IouMatrix::from_coco`.
    g.bench_function(BenchmarkId::new("all_images_cocorle", images.len()), |b| {
        b.iter(|| {
            let scores: Vec<_> = images
                .iter()
                .map(|(size, t, p)| {
                    let parse = |v: &[String]| -> Vec<CocoRle> {
                        v.iter().map(|s| CocoRle::from_counts_str(s, *size).unwrap()).collect()
                    };
                    image_score(&IouMatrix::from_coco(&parse(t), &parse(p)).unwrap())
                })
                .collect();
            black_box(mean_score(&scores))
        })
    });
    let parsed: Vec<(Vec<CocoRle>, Vec<CocoRle>)> = images
        .iter()
        .map(|(size, t, p)| {
            let parse = |v: &[String]| -> Vec<CocoRle> {
                v.iter().map(|s| CocoRle::from_counts_str(s, *size).unwrap()).collect()
            };
            (parse(t), parse(p))
        })
        .collect();
    g.bench_function(BenchmarkId::new("all_images_parsed", images.len()), |b| {
        b.iter(|| {
            let scores: Vec<_> = parsed
                .iter()
                .map(|(t, p)| image_score(&IouMatrix::from_coco(t, p).unwrap()))
                .collect();
            black_box(mean_score(&scores))
        })
    });
    g.bench_function(BenchmarkId::new("parse_only", images.len()), |b| {
        b.iter(|| {
            images
                .iter()
                .map(|(size, t, p)| {
                    t.iter()
                        .chain(p)
                        .map(|s| CocoRle::from_counts_str(s, *size).unwrap().area())
                        .sum::<u64>()
                })
                .sum::<u64>()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("cocoeval");
    g.sample_size(10);
    for name in ["p890040_val_cort_3", "livecell_val"] {
        let d = dir.join(format!("cocoeval_{name}"));
        let max_dets: Vec<usize> =
            serde_json::from_slice(&std::fs::read(d.join("max_dets.json")).unwrap()).unwrap();
        let gt = CocoDataset::load(&d.join("gt.json"), true).unwrap();
        let dt = gt.load_results(&d.join("results.json"), true).unwrap();
        let params = CocoEvalParams { max_dets, ..CocoEvalParams::new(IouType::Segm) };
        g.bench_function(BenchmarkId::new("segm", name), |b| {
            b.iter(|| cocoeval::evaluate(&gt, &dt, &params).unwrap())
        });
    }
    g.finish();
}

criterion_group!(metrics, benches);
criterion_main!(metrics);
