//! Score predictions: the competition metric (Kaggle CSVs) or the COCO table (COCO jsons).
//! Pure Rust: it links no libtorch and starts in milliseconds.
//!
//! ```text
//! cargo run --release -p cellseg-metrics --example evaluate -- --truth train.csv --pred submission.csv [--json]
//! cargo run --release -p cellseg-metrics --example evaluate -- --coco-truth gt.json --coco-pred results.json \
//!     [--iou-type segm|bbox] [--max-dets 100,500,2000] [--ap-at-max-dets] [--json]
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cellseg_metrics::cocoeval::{CocoEvalParams, IouType};
use cellseg_metrics::report;
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Competition metric (Kaggle CSVs) or COCOeval (COCO jsons), pycocotools' numbers"
)]
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
    /// Read AP (stats[0]) at the third maxDets like the other stats; by default it is read at
    /// maxDets 100 whatever --max-dets says, as pycocotools' summarize() does.
    #[arg(long)]
    ap_at_max_dets: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// The entry point (public so that a facade example can forward to it).
pub fn main() -> ExitCode {
    // Each cause once: the crates' errors already include their source's text.
    cellseg_core::exit::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let (Some(truth), Some(pred)) = (&args.truth, &args.pred) {
        let rep = report::competition_from_files(truth, pred).context("competition metric")?;
        let out = if args.json { serde_json::to_string_pretty(&rep)? } else { rep.table() };
        print_out(&out)?;
    } else if let (Some(gt), Some(dt)) = (&args.coco_truth, &args.coco_pred) {
        let params = CocoEvalParams {
            max_dets: args.max_dets.clone(),
            ap_at_max_dets: args.ap_at_max_dets,
            ..CocoEvalParams::new(args.iou_type)
        };
        let rep = report::coco_from_files(gt, dt, &params).context("COCO evaluation")?;
        let out =
            if args.json { serde_json::to_string_pretty(&rep)? } else { rep.eval.summary_table() };
        print_out(&out)?;
    } else {
        bail!("give --truth and --pred, or --coco-truth and --coco-pred");
    }
    Ok(())
}

/// Prints `out`; a closed pipe (`evaluate … | head`) ends quietly instead of panicking.
fn print_out(out: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{out}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
