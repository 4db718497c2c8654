//! RLE benches on the 395 real masks of Sartorius image 0030fd0e6378 (520×704).
//!
//! Run through `tools/bench_rle_metrics.sh`, which times the Python baselines (numpy, pycocotools)
//! on the same masks and prints the ratios. Inputs come from `$CELLSEG_BENCH_DIR/rle_inputs.json`
//! (written by `tools/rle_bench.py`), or else straight from `../shared/realdata`.

use std::hint::black_box;
use std::path::Path;

use cellseg_core::{BitMask, ImageSize};
use cellseg_rle::batch::CocoBatch;
use cellseg_rle::{CocoRle, KaggleRle, coco, kaggle};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn inputs() -> Option<(ImageSize, Vec<String>, Vec<String>)> {
    if let Ok(dir) = std::env::var("CELLSEG_BENCH_DIR") {
        let text = std::fs::read(Path::new(&dir).join("rle_inputs.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let size = ImageSize::new(v["height"].as_u64()? as usize, v["width"].as_u64()? as usize);
        let strs = |k: &str| -> Option<Vec<String>> {
            v[k].as_array()?.iter().map(|s| s.as_str().map(String::from)).collect()
        };
        return Some((size, strs("kaggle")?, strs("coco")?));
    }
    let csv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata/sartorius/train_subset.csv");
    let text = std::fs::read_to_string(csv).ok()?;
    let size = ImageSize::new(520, 704);
    let kaggle: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("0030fd0e6378,"))
        .map(|l| l.split(',').nth(1).unwrap_or("").to_string())
        .collect();
    let coco = kaggle
        .iter()
        .map(|s| KaggleRle::parse(s, size).map(|k| CocoRle::from_kaggle(&k).to_counts_string()))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some((size, kaggle, coco))
}

fn benches(c: &mut Criterion) {
    let Some((size, kaggle_strs, coco_strs)) = inputs() else {
        eprintln!("SKIP: no bench inputs (set CELLSEG_BENCH_DIR or provide ../shared/realdata)");
        return;
    };
    let n = kaggle_strs.len();
    let id = |v: &str| BenchmarkId::new(v, n);
    let rles: Vec<CocoRle> =
        coco_strs.iter().map(|s| CocoRle::from_counts_str(s, size).unwrap()).collect();
    let masks: Vec<BitMask> = rles.iter().map(CocoRle::to_mask).collect();
    let crops: Vec<_> = rles.iter().map(CocoRle::to_cropped).collect();

    let mut g = c.benchmark_group("kaggle_decode_encode");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(id("full"), |b| {
        b.iter(|| {
            for s in &kaggle_strs {
                black_box(kaggle::encode(&kaggle::decode(s, size).unwrap()));
            }
        })
    });
    g.bench_function(id("cropped"), |b| {
        b.iter(|| {
            for s in &kaggle_strs {
                black_box(kaggle::encode_cropped(&kaggle::decode_cropped(s, size).unwrap()));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("coco_encode");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(id("full"), |b| {
        b.iter(|| masks.iter().map(CocoRle::from_mask).collect::<Vec<_>>())
    });
    g.bench_function(id("cropped"), |b| {
        b.iter(|| crops.iter().map(CocoRle::from_cropped).collect::<Vec<_>>())
    });
    g.finish();

    let mut g = c.benchmark_group("coco_decode");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(id("full"), |b| {
        b.iter(|| rles.iter().map(CocoRle::to_mask).collect::<Vec<_>>())
    });
    g.bench_function(id("cropped"), |b| {
        b.iter(|| rles.iter().map(CocoRle::to_cropped).collect::<Vec<_>>())
    });
    g.finish();

    let crowd = vec![false; n];
    let mut g = c.benchmark_group("coco_iou");
    g.throughput(Throughput::Elements((n * n) as u64));
    // Same work as pycocotools `iou` on the compressed strings: parse both sides, then the
    // matrix. The strings go straight into run batches.
    let mut dt = CocoBatch::new(size).unwrap();
    let mut gt = CocoBatch::new(size).unwrap();
    for s in &coco_strs {
        dt.push_counts_str(s).unwrap();
    }
    assert_eq!(
        dt.iou_matrix(&dt, &crowd).unwrap(),
        coco::iou_matrix(&rles, &rles, &crowd).unwrap()
    );
    g.bench_function(id("from_strings"), |b| {
        b.iter(|| {
            dt.reset(size).unwrap();
            gt.reset(size).unwrap();
            for s in &coco_strs {
                dt.push_counts_str(s).unwrap();
                gt.push_counts_str(s).unwrap();
            }
            dt.iou_matrix(&gt, &crowd).unwrap()
        })
    });
    // Through `CocoRle` values: parse each string, then `coco::iou_matrix`.
    g.bench_function(id("from_strings_cocorle"), |b| {
        b.iter(|| {
            let r: Vec<CocoRle> =
                coco_strs.iter().map(|s| CocoRle::from_counts_str(s, size).unwrap()).collect();
            coco::iou_matrix(&r, &r, &crowd).unwrap()
        })
    });
    g.bench_function(id("parsed"), |b| b.iter(|| coco::iou_matrix(&rles, &rles, &crowd).unwrap()));
    g.finish();
}

criterion_group!(rle, benches);
criterion_main!(rle);
