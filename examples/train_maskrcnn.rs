//! Trains a Mask R-CNN and reports the competition metric before and after training.
//!
//! With no `--data`, it trains on synthetic cells of the three types (cellseg-data `synthetic`)
//! and evaluates on held-out synthetic images; with `--data <dir>` it reads the Sartorius layout
//! (`train.csv`, `train/`; or any CSV + image folder with `--csv` / `--images`) and holds out one
//! fold of the seed's GroupKFold on plate_well (`[data]` in the config).
//!
//! ```text
//! cargo run --release --example train_maskrcnn -- --config configs/demo.toml
//! cargo run --release --example train_maskrcnn -- --config configs/train_maskrcnn.toml \
//!     --csv ../shared/realdata/sartorius/train_subset.csv \
//!     --images ../shared/realdata/sartorius/train_images
//! ```

mod support;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cellseg::core::ImageSize;
use cellseg::data::sartorius::{SartoriusDataset, SartoriusOptions};
use cellseg::data::{AugmentConfig, Sample, synthetic};
use cellseg::postproc::PostprocConfig;
use cellseg::train::detector::{Detector, DetectorConfig, DetectorValidator, SampleData};
use cellseg::train::{EvalReport, Start, TrainConfig, Trainer, overlay};
use clap::Parser;
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(about = "Train a Mask R-CNN on synthetic cells (default) or the Sartorius layout")]
struct Args {
    /// TOML config (see configs/demo.toml); every key has a default.
    #[arg(long, default_value = "configs/demo.toml")]
    config: PathBuf,
    /// Sartorius folder (`train.csv` + `train/`); synthetic cells when neither this nor `--csv`
    /// is given.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A `train.csv`-layout file (overrides `<data>/train.csv`).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The folder of its `{id}.png` images (overrides `<data>/train`; default: the CSV's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Overrides `train.run_dir`.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in `run_dir` from its latest checkpoint.
    #[arg(long)]
    resume: bool,
}

/// The whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// libtorch intra-op threads (0: libtorch's default).
    threads: i32,
    /// Overlay PNGs written for the first held-out images.
    overlays: usize,
    synthetic: SyntheticSection,
    data: DataSection,
    model: DetectorConfig,
    augment: AugmentConfig,
    postproc: PostprocConfig,
    train: TrainConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SyntheticSection {
    train_images: usize,
    val_images: usize,
    height: usize,
    width: usize,
    seed: u64,
}

impl Default for SyntheticSection {
    fn default() -> Self {
        Self { train_images: 48, val_images: 12, height: 256, width: 256, seed: 0 }
    }
}

/// How the real data is split (`--data` / `--csv`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DataSection {
    /// Number of folds (seed: 5, `GroupKFold`).
    folds: usize,
    /// The held-out fold (seed trains one model per fold; 0 here).
    fold: usize,
    /// `"plate_well"` (seed) or `"id"` (one group per image, for CSVs without `sample_id`).
    group_by: GroupBy,
    /// Each training image is visited this many times per epoch, each time with its own random
    /// crop (ours, for small data sets; the seed: 1).
    repeat: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum GroupBy {
    PlateWell,
    Id,
}

impl Default for DataSection {
    fn default() -> Self {
        Self { folds: 5, fold: 0, group_by: GroupBy::PlateWell, repeat: 1 }
    }
}

/// Where the real data is, from `--data` / `--csv` / `--images`; `None`: synthetic cells.
fn real_data_paths(args: &Args) -> Option<(PathBuf, PathBuf)> {
    let csv = match (&args.csv, &args.data) {
        (Some(c), _) => c.clone(),
        (None, Some(d)) => d.join("train.csv"),
        (None, None) => return None,
    };
    let images = match (&args.images, &args.data) {
        (Some(i), _) => i.clone(),
        (None, Some(d)) => d.join("train"),
        (None, None) => csv.parent().map_or_else(|| PathBuf::from("."), PathBuf::from),
    };
    Some((csv, images))
}

fn load_data(
    cfg: &Config,
    paths: Option<&(PathBuf, PathBuf)>,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    match paths {
        None => {
            let s = &cfg.synthetic;
            let size = ImageSize::new(s.height, s.width);
            let train = synthetic::samples(s.train_images, size, s.seed);
            let val = synthetic::samples(s.val_images, size, s.seed.wrapping_add(1_000_000));
            Ok((train, val))
        }
        Some((csv, images)) => {
            let d = &cfg.data;
            let ds = SartoriusDataset::read_csv(csv, images, &SartoriusOptions::default())
                .with_context(|| {
                    format!("reading {} with images in {}", csv.display(), images.display())
                })?;
            let folds = match d.group_by {
                GroupBy::PlateWell => ds.group_kfold(d.folds)?,
                GroupBy::Id => {
                    let ids = ds.ids();
                    cellseg::data::folds::group_kfold(&ids, d.folds)?
                }
            };
            let all = cellseg::data::sample::preload(&ds)?;
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for (s, f) in all.into_iter().zip(folds) {
                if f == d.fold { val.push(s) } else { train.push(s) }
            }
            let train =
                train.iter().flat_map(|s| std::iter::repeat_n(s, d.repeat)).cloned().collect();
            Ok((train, val))
        }
    }
}

fn print_report(what: &str, r: &EvalReport) {
    let per: Vec<String> = r.per_type.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
    println!("{what:<10} metric {:.3}   [{}]", r.score, per.join(", "));
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let t0 = Instant::now();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let mut cfg: Config =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    anyhow::ensure!(
        cfg.data.fold < cfg.data.folds,
        "{}: data.fold = {} must be below data.folds = {}",
        args.config.display(),
        cfg.data.fold,
        cfg.data.folds
    );
    anyhow::ensure!(
        cfg.data.repeat > 0,
        "{}: data.repeat must be at least 1",
        args.config.display()
    );
    if let Some(d) = &args.run_dir {
        cfg.train.run_dir = d.clone();
    }
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads);
    }
    tch::manual_seed(cfg.train.seed as i64);
    println!("cellseg {}", cellseg::libtorch_report());

    let paths = real_data_paths(&args);
    let (train, val) = load_data(&cfg, paths.as_ref())?;
    println!(
        "data: {} training images, {} held-out images ({})",
        train.len(),
        val.len(),
        paths.as_ref().map_or("synthetic cells".into(), |(c, _)| c.display().to_string())
    );
    let device = tch::Device::cuda_if_available();
    let mut model = Detector::from_config(device, &cfg.model)
        .map_err(|e| anyhow::anyhow!("building the model: {e}"))?;
    let held_out: Vec<&str> = val.iter().take(8).map(|s| s.id.as_str()).collect();
    println!("held out: {}{}", held_out.join(", "), if val.len() > 8 { ", ..." } else { "" });
    println!("model: {:?} trunk on {device:?}", cfg.model.trunk);
    let mut validator = DetectorValidator::new(val, cfg.postproc.clone())
        .map_err(|e| anyhow::anyhow!("postproc config: {e}"))?;
    let before = validator.evaluate(&model).map_err(|e| anyhow::anyhow!("evaluating: {e}"))?;

    let mut data = SampleData::new(train, cfg.augment.clone())
        .map_err(|e| anyhow::anyhow!("augment config: {e}"))?;
    let trainer = Trainer::new(cfg.train.clone())?;
    let start = if args.resume { Start::Resume } else { Start::Fresh };
    let t_train = Instant::now();
    let mut progress = support::ProgressObserver::new();
    let report = trainer.fit(&mut model, &mut data, Some(&mut validator), &mut progress, start)?;
    let train_s = t_train.elapsed().as_secs_f64();

    let after = validator.evaluate(&model).map_err(|e| anyhow::anyhow!("evaluating: {e}"))?;
    let overlay_dir = cfg.train.run_dir.join("overlays");
    std::fs::create_dir_all(&overlay_dir)
        .with_context(|| format!("creating {}", overlay_dir.display()))?;
    let mut overlays = Vec::new();
    for (s, p) in validator.samples().iter().zip(&after.processed).take(cfg.overlays) {
        let path = overlay_dir.join(format!("{}.png", s.id));
        overlay::write_overlay(&path, &s.image, &p.detections)?;
        overlays.push(path);
    }

    println!();
    println!("competition metric on {} held-out images:", validator.samples().len());
    print_report("untrained", &before.report);
    print_report("trained", &after.report);
    if let Some(b) = &report.best {
        println!("best validation metric {:.3} at step {}", b.score, b.step);
    }
    println!(
        "steps: {} in {train_s:.0} s (whole run {:.0} s)",
        report.steps,
        t0.elapsed().as_secs_f64()
    );
    if let Some(c) = &report.last_checkpoint {
        println!("checkpoint: {}", c.display());
    }
    if let Some(c) = &report.best_checkpoint {
        println!("best checkpoint: {}", c.display());
    }
    println!("metrics log: {}", report.metrics_log.display());
    println!("curves: {}", report.curves.display());
    for o in &overlays {
        println!("overlay: {}", o.display());
    }
    Ok(())
}
