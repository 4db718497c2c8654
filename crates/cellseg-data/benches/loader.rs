//! Loader throughput: 256×256 crops per second with every augmentation on, decoding the real
//! Sartorius train PNGs (`../shared/realdata`; synthetic PNGs when it is absent) on 2 threads.
//!
//! Run through `tools/bench_data.sh`, which also times the seed-like Python pipeline and prints
//! the ratio.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cellseg_data::sartorius::{SartoriusDataset, SartoriusOptions};
use cellseg_data::{Augment, AugmentConfig, Loader, LoaderConfig, Result, Sample, SampleSource};
use criterion::{Criterion, Throughput, criterion_group};

/// Cycles over a small data set so that an epoch has enough batches.
struct Repeat {
    inner: SartoriusDataset,
    len: usize,
}

impl SampleSource for Repeat {
    fn len(&self) -> usize {
        self.len
    }
    fn load(&self, index: usize) -> Result<Sample> {
        self.inner.load(index % self.inner.images.len())
    }
}

const BATCH: usize = 8;
const BATCHES: usize = 8;

fn dataset() -> (SartoriusDataset, Option<tempfile::TempDir>) {
    let real = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/realdata/sartorius");
    if real.is_dir() {
        let ds = SartoriusDataset::read_csv(
            &real.join("train_subset.csv"),
            &real.join("train_images"),
            &SartoriusOptions::default(),
        )
        .expect("real data");
        (ds, None)
    } else {
        eprintln!("realdata absent: benchmarking synthetic PNGs");
        let dir = tempfile::tempdir().expect("tmp");
        cellseg_data::synthetic::generate_sartorius(dir.path(), 6, 0).expect("synthetic");
        (SartoriusDataset::read(dir.path(), &SartoriusOptions::default()).expect("read"), Some(dir))
    }
}

/// Cycles over preloaded (already decoded) samples.
struct RepeatPreloaded {
    inner: Vec<Sample>,
    len: usize,
}

impl SampleSource for RepeatPreloaded {
    fn len(&self) -> usize {
        self.len
    }
    fn load(&self, index: usize) -> Result<Sample> {
        Ok(self.inner[index % self.inner.len()].clone())
    }
}

fn make_loader(threads: usize, preloaded: bool) -> (Loader, Option<tempfile::TempDir>) {
    let (ds, tmp) = dataset();
    let src: Arc<dyn SampleSource> = if preloaded {
        let inner = cellseg_data::sample::preload(&ds).expect("decode");
        Arc::new(RepeatPreloaded { inner, len: BATCH * BATCHES })
    } else {
        Arc::new(Repeat { inner: ds, len: BATCH * BATCHES })
    };
    let cfg = LoaderConfig { batch_size: BATCH, threads, prefetch: 2, ..LoaderConfig::default() };
    let aug = Augment::new(AugmentConfig::all_on()).expect("config");
    (Loader::new(src, Some(aug), cfg).expect("loader"), tmp)
}

fn run_epoch(loader: &Loader, epoch: u64) -> usize {
    loader.epoch(epoch).map(|b| b.expect("batch").len()).sum()
}

fn bench_loader(c: &mut Criterion) {
    let mut group = c.benchmark_group("loader");
    group.sample_size(10);
    group.throughput(Throughput::Elements((BATCH * BATCHES) as u64));
    for (name, preloaded) in
        [("sartorius_png_all_aug_2threads", false), ("preloaded_all_aug_2threads", true)]
    {
        let (loader, _tmp) = make_loader(2, preloaded);
        let mut epoch = 0;
        group.bench_function(format!("{name}/256x256"), |b| {
            b.iter(|| {
                epoch += 1;
                run_epoch(&loader, epoch)
            })
        });
    }
    group.finish();
}

fn bench_synthetic(c: &mut Criterion) {
    let mut group = c.benchmark_group("synthetic");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    for t in cellseg_core::CellType::ALL {
        group.bench_function(format!("generate_{t}/520x704"), |b| {
            let mut seed = 0;
            b.iter(|| {
                seed += 1;
                cellseg_data::synthetic::generate(t, cellseg_data::synthetic::FRAME, seed)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_loader, bench_synthetic);

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks per second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Plain numbers for tools/bench_data.sh: best of 3 epochs (wall clock, 2 threads), and crops
    // per CPU-second (independent of other load on a shared machine).
    for (key, preloaded) in [("RUST", false), ("RUST_PRELOADED", true)] {
        let (loader, _tmp) = make_loader(2, preloaded);
        let mut best = 0f64;
        let (cpu0, mut crops) = (cpu_seconds(), 0usize);
        for e in 0..3 {
            let t = Instant::now();
            let n = run_epoch(&loader, 1000 + e);
            crops += n;
            best = best.max(n as f64 / t.elapsed().as_secs_f64());
        }
        let per_cpu = crops as f64 / (cpu_seconds() - cpu0).max(1e-9);
        println!("{key}_CROPS_PER_S={best:.1}");
        println!("{key}_CROPS_PER_CPU_S={per_cpu:.1}");
    }
}
