//! Cross-validate experiments, the seed's `inference_val`: every training image predicted by the
//! models of the fold that held it out (fold k of each `--experiment`, any mix of architectures,
//! ensembled with flip TTA), ONE out-of-fold file over all of them for `tweak_thresholds`, and the
//! competition metric per fold, per cell type and overall (the CV).
//!
//! ```text
//! cargo run --release --example cross_validate -- --experiment runs/maskrcnn \
//!     [--experiment runs/cascade …] --data <folder with train.csv and train/> --oof oof.bin \
//!     [--out oof_submission.csv] [--ensemble configs/ensemble.toml] [--postproc tuned.toml] \
//!     [--no-tta] [--device cpu|cuda|cuda:N] [--threads N]
//! ```
//! Every check (one shared split, every fold finished, every image and its truth present, the
//! outputs writable) runs before the first prediction.

// `init_process`, `DataArgs` and `InferenceArgs` here; the rest serves the training examples.
#[allow(dead_code)]
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cellseg::cross_validation::CrossValidation;
use cellseg::experiment::folder_name;
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
    #[command(flatten)]
    data: cellseg_cli::DataArgs,
    /// The OOF file: every image's predictions before post-processing (for tweak_thresholds).
    #[arg(long)]
    oof: Option<PathBuf>,
    /// The post-processed OOF as a submission CSV (for evaluate).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    inference: cellseg_cli::InferenceArgs,
    /// `--nproc-per-node N`: the images shared by N processes, rank 0 writing every output.
    #[command(flatten)]
    launch: cellseg_cli::LaunchArgs,
}

fn main() -> ExitCode {
    cellseg_cli::init_process();
    cellseg::exit_code(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let Some(group) = args.launch.join_or_launch(&argv)? else { return Ok(()) };
    let device = args.inference.device()?;
    let device = cellseg_cli::rank_device(device, &group, args.inference.device.threads);
    println!("{}", cellseg::libtorch_report());
    let (truth, images) = args.data.paths().context("give --data or --csv")?;
    // Fold k's members are fold k of each experiment: experiment i is member i.
    let names: Vec<(String, Vec<usize>)> =
        args.experiments.iter().enumerate().map(|(i, e)| (folder_name(e), vec![i])).collect();
    let ensemble = args.inference.ensemble(&names, args.experiments.len())?;
    let pipeline = args.inference.pipeline()?;
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
    if group.world_size() > 1 {
        bar.set_length((exps[0].split.ids.len() / group.world_size() + 1) as u64);
    }
    if !group.is_main() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report =
        cv.run_sharded(&pipeline, device, &mut |done, _| bar.set_position(done as u64), &group)?;
    bar.finish_and_clear();
    let Some(report) = report else { return Ok(()) };
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
