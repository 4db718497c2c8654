//! Score predictions: the competition metric (Kaggle CSVs) or the COCO table (COCO jsons).
//!
//! ```text
//! cargo run --release --example evaluate -- --truth train.csv --pred submission.csv [--json]
//! cargo run --release --example evaluate -- --coco-truth gt.json --coco-pred results.json \
//!     [--iou-type segm|bbox] [--max-dets 100,500,2000] [--json]
//! ```
use std::path::PathBuf;

use anyhow::{Context, bail};
use cellseg_metrics::cocoeval::{CocoEvalParams, IouType};
use cellseg_metrics::report;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Truth CSV in the Sartorius train.csv layout (id,annotation,width,height,cell_type,…).
    #[arg(long, requires = "pred")]
    truth: Option<PathBuf>,
    /// Submission CSV (id,predicted), one row per mask.
    #[arg(long)]
    pred: Option<PathBuf>,
    /// COCO ground-truth json.
    #[arg(long, requires = "coco_pred", conflicts_with = "truth")]
    coco_truth: Option<PathBuf>,
    /// COCO results json.
    #[arg(long)]
    coco_pred: Option<PathBuf>,
    /// COCO IoU type: segm or bbox.
    #[arg(long, default_value = "segm")]
    iou_type: IouType,
    /// COCO maxDets (at least 3, comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 10, 100])]
    max_dets: Vec<usize>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    cellseg::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    if let (Some(truth), Some(pred)) = (&args.truth, &args.pred) {
        let rep = report::competition_from_files(truth, pred).context("competition metric")?;
        let out = if args.json { serde_json::to_string_pretty(&rep)? } else { rep.table() };
        println!("{out}");
    } else if let (Some(gt), Some(dt)) = (&args.coco_truth, &args.coco_pred) {
        let params = CocoEvalParams {
            max_dets: args.max_dets.clone(),
            ..CocoEvalParams::new(args.iou_type)
        };
        let rep = report::coco_from_files(gt, dt, &params).context("COCO evaluation")?;
        let out =
            if args.json { serde_json::to_string_pretty(&rep)? } else { rep.eval.summary_table() };
        println!("{out}");
    } else {
        bail!("give --truth and --pred, or --coco-truth and --coco-pred");
    }
    Ok(())
}
