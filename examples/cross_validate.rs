//! Cross-validate experiments, the seed's `inference_val`: every training image predicted by the
//! models of the fold that held it out (fold k of each `--experiment`, any mix of architectures,
//! ensembled with flip TTA), ONE out-of-fold file over all of them for `tweak_thresholds`, and the
//! competition metric per fold, per cell type and overall (the CV).
//!
//! ```text
//! cargo run --release --example cross_validate -- --experiment runs/maskrcnn \
//!     [--experiment runs/cascade …] --data <folder with train.csv and train/> --oof oof.bin \
//!     [--out oof_submission.csv] [--ensemble configs/ensemble.toml] [--postproc tuned.toml] \
//!     [--no-tta] [--cpu] [--threads N]
//! ```
//! Every check (one shared split, every fold finished, every image and its truth present, the
//! outputs writable) runs before the first prediction.

// Only `init_tracing` here; the rest serves the training examples.
#[allow(dead_code)]
mod support;

use std::path::PathBuf;
use std::process::ExitCode;

use cellseg::cross_validation::CrossValidation;
use cellseg::experiment::folder_name;
use cellseg::inference::ensemble_config;
use cellseg::postproc::{Pipeline, PostprocConfig};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    about = "Predict every training image with its fold's models into one OOF and score the CV"
)]
struct Args {
    /// An experiment folder (`train_* --all-folds`); repeatable, fold k's members in this order.
    #[arg(long = "experiment", required = true)]
    experiments: Vec<PathBuf>,
    /// Sartorius folder (`train.csv` + `train/`).
    #[arg(long, required_unless_present = "csv")]
    data: Option<PathBuf>,
    /// The truth CSV (overrides `<data>/train.csv`; it may hold more images than the split).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The folder of the `{id}.png` training images (overrides `<data>/train`; default with
    /// `--csv` alone: the CSV's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// The OOF file: every image's predictions before post-processing (for tweak_thresholds).
    #[arg(long)]
    oof: Option<PathBuf>,
    /// The post-processed OOF as a submission CSV (for evaluate).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Ensemble config; its `[usage]` lists may name experiments (folder names). Default: the
    /// seed's ENS values, or its SINGLE values for one experiment.
    #[arg(long)]
    ensemble: Option<PathBuf>,
    /// Post-processing config (default: the seed's; a `tweak_thresholds` output reproduces the
    /// tuned CV).
    #[arg(long)]
    postproc: Option<PathBuf>,
    /// The identity view only (no flip TTA).
    #[arg(long)]
    no_tta: bool,
    /// Run on the CPU even when a GPU is available.
    #[arg(long)]
    cpu: bool,
    /// libtorch intra-op threads (default: libtorch's).
    #[arg(long)]
    threads: Option<i32>,
}

fn main() -> ExitCode {
    support::init_tracing();
    cellseg::exit_code(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let device = if args.cpu { tch::Device::Cpu } else { cellseg::best_device() };
    println!("{}", cellseg::libtorch_report());
    let truth = match (&args.csv, &args.data) {
        (Some(c), _) => c.clone(),
        (None, Some(d)) => d.join("train.csv"),
        (None, None) => unreachable!("clap requires --data or --csv"),
    };
    let images = match (&args.images, &args.data) {
        (Some(i), _) => i.clone(),
        (None, Some(d)) => d.join("train"),
        (None, None) => truth.parent().map_or_else(|| PathBuf::from("."), PathBuf::from),
    };
    // Fold k's members are fold k of each experiment: experiment i is member i.
    let names: Vec<(String, Vec<usize>)> =
        args.experiments.iter().enumerate().map(|(i, e)| (folder_name(e), vec![i])).collect();
    let ensemble =
        ensemble_config(args.ensemble.as_deref(), &names, args.experiments.len(), args.no_tta)?;
    let post = match &args.postproc {
        Some(p) => PostprocConfig::load(p)?,
        None => PostprocConfig::default(),
    };
    let pipeline = Pipeline::new(post)?;
    let cv = CrossValidation {
        experiments: args.experiments.clone(),
        images,
        truth: truth.clone(),
        ensemble,
        oof: args.oof.clone(),
        submission: args.out.clone(),
    };
    let exps = cv.experiments()?;
    println!(
        "{} experiment(s), {} images in {} folds: {}",
        exps.len(),
        exps[0].split.ids.len(),
        exps[0].split.n_folds,
        exps.iter().map(|e| e.dir.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    let bar = ProgressBar::new(exps[0].split.ids.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images  {per_sec}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    let report = cv.run(&pipeline, device, &mut |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    println!(
        "{} images predicted by their folds' models in {:.1} s ({} view(s))",
        report.processed.len(),
        report.seconds,
        cv.ensemble.views.len()
    );
    print!("competition metric against {} (CV):\n{}", truth.display(), report.table());
    for p in &report.written {
        println!("wrote {}", p.display());
    }
    Ok(())
}
