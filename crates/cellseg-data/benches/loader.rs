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

fn make_loader(threads: usize) -> (Loader, Option<tempfile::TempDir>) {
    let (ds, tmp) = dataset();
    let src: Arc<dyn SampleSource> = Arc::new(Repeat { inner: ds, len: BATCH * BATCHES });
    let cfg = LoaderConfig { batch_size: BATCH, threads, prefetch: 2, ..LoaderConfig::default() };
    let aug = Augment::new(AugmentConfig::all_on()).expect("config");
    (Loader::new(src, Some(aug), cfg).expect("loader"), tmp)
}

fn run_epoch(loader: &Loader, epoch: u64) -> usize {
    loader.epoch(epoch).map(|b| b.expect("batch").len()).sum()
}

fn bench_loader(c: &mut Criterion) {
    let (loader, _tmp) = make_loader(2);
    let mut group = c.benchmark_group("loader");
    group.sample_size(10);
    group.throughput(Throughput::Elements((BATCH * BATCHES) as u64));
    let mut epoch = 0;
    group.bench_function("sartorius_png_all_aug_2threads/256x256", |b| {
        b.iter(|| {
            epoch += 1;
            run_epoch(&loader, epoch)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_loader);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // A plain number for tools/bench_data.sh: best of 3 epochs.
    let (loader, _tmp) = make_loader(2);
    let mut best = 0f64;
    for e in 0..3 {
        let t = Instant::now();
        let n = run_epoch(&loader, 1000 + e);
        best = best.max(n as f64 / t.elapsed().as_secs_f64());
    }
    println!("RUST_CROPS_PER_S={best:.1}");
}
