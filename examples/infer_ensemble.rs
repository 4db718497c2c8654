//! Predict a folder of images with one or more trained models: the seed's multi-model × flip-TTA
//! ensemble, its post-processing, and a Kaggle submission (plus COCO results, the OOF file for
//! `tweak_thresholds`, overlays and the competition metric against a truth CSV).
//!
//! ```text
//! cargo run --release --example infer_ensemble -- --model runs/maskrcnn --model runs/maskrcnn_cascade \
//!     --images test/ --out submission.csv [--coco-out results.json] [--overlays overlays/] \
//!     [--truth train.csv] [--oof oof.bin] [--ensemble configs/ensemble.toml] \
//!     [--postproc configs/postproc.toml] [--no-tta] [--device cpu|cuda|cuda:N] [--threads N]
//! ```
//! Each `--model` is a run folder (or a checkpoint folder inside one) written by a training
//! example, rebuilt from its `model.toml` and latest checkpoint alone, or an experiment folder
//! (`train_* --all-folds`), which stands for all its folds in fold order. The `[usage]` lists of
//! `--ensemble` may name `--model` folders (their folder names) instead of member indices.

// `init_process` and `InferenceArgs` here; the rest serves the training examples.
#[allow(dead_code)]
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cellseg::inference::{Inference, Members, Outputs, expand_models, list_images};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Ensemble trained models over a folder of images into a submission")]
struct Args {
    /// A run folder of a trained model, or an experiment folder (all its folds); repeatable,
    /// members in this order.
    #[arg(long = "model", required = true)]
    models: Vec<PathBuf>,
    /// The images: a Kaggle `test/` folder or any folder of PNG / TIFF files.
    #[arg(long)]
    images: PathBuf,
    /// The Kaggle submission CSV.
    #[arg(long, default_value = "submission.csv")]
    out: PathBuf,
    /// Also write COCO results (category_id = label + 1).
    #[arg(long)]
    coco_out: Option<PathBuf>,
    /// Also write one overlay PNG per image into this folder.
    #[arg(long)]
    overlays: Option<PathBuf>,
    /// Score against a truth CSV (Sartorius train.csv layout): overall and per cell type.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Also write the predictions before post-processing (the input of `tweak_thresholds`).
    #[arg(long)]
    oof: Option<PathBuf>,
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
    let cellseg::inference::ModelList { runs, names } = expand_models(&args.models)?;
    let ens_cfg = args.inference.ensemble(&names, runs.len())?;
    let pipeline = args.inference.pipeline()?;
    let images = list_images(&args.images)?;
    let members = Members::load(&runs, device)?;
    for (path, d) in runs.iter().zip(members.detectors()) {
        println!("member {}: {}", path.display(), d.model().arch().name());
    }
    let ensemble = members.ensemble(ens_cfg)?;
    let input = &members.card().context("no member")?.input;
    let outputs = Outputs {
        submission: Some(args.out.clone()),
        coco: args.coco_out.clone(),
        oof: args.oof.clone(),
        overlays: args.overlays.clone(),
        truth: args.truth.clone(),
    };
    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images  {per_sec}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    let inference = Inference { ensemble: &ensemble, input, pipeline: &pipeline, device };
    if !group.is_main() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = inference.run_sharded(
        &images,
        &outputs,
        &mut |done| bar.set_position(done as u64),
        &group,
    )?;
    bar.finish_and_clear();
    let Some(report) = report else { return Ok(()) };
    let instances: usize = report.processed.iter().map(|p| p.detections.masks.len()).sum();
    println!(
        "{} images, {instances} instances in {:.1} s ({:.2} images/s; {} member(s), {} view(s))",
        report.processed.len(),
        report.seconds,
        report.images_per_s(),
        runs.len(),
        ensemble.config().views.len()
    );
    if let Some(m) = &report.metric {
        let truth = args.truth.as_deref().unwrap_or(std::path::Path::new("?"));
        print!("competition metric against {}:\n{}", truth.display(), m.table());
    }
    for p in &report.written {
        println!("wrote {}", p.display());
    }
    if let Some(dir) = &args.overlays {
        println!("overlays: {}", dir.display());
    }
    Ok(())
}
