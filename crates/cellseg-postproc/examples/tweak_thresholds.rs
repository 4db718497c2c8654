//! Tune the post-processing per predicted cell type on out-of-fold predictions (the seed's
//! `tweak_thresholds`) and write the best settings as a post-processing TOML.
//! Pure Rust: it links no libtorch.
//!
//! ```text
//! cargo run --release -p cellseg-postproc --example tweak_thresholds -- \
//!     --oof oof.bin --truth train.csv [--grid configs/tweak.toml] [--out postproc_tuned.toml] [--json]
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cellseg_metrics::report::load_truth_csv;
use cellseg_postproc::PostprocConfig;
use cellseg_postproc::oof::read_oof;
use cellseg_postproc::tweak::{TweakGrid, images_with_truth, pipeline_score, tweak};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Tune post-processing thresholds per predicted cell type on OOF predictions")]
struct Args {
    /// OOF predictions (cellseg OOF format, written by infer_ensemble --oof).
    #[arg(long)]
    oof: PathBuf,
    /// Truth CSV in the Sartorius train.csv layout. It may hold more images than the OOF (the full
    /// train.csv; those are left out and counted); every OOF image must have its truth.
    #[arg(long)]
    truth: PathBuf,
    /// Grid TOML (strict); the seed's grid without it (configs/tweak.toml spells it out).
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Where to write the best settings as a post-processing TOML.
    #[arg(long, default_value = "postproc_tuned.toml")]
    out: PathBuf,
    /// The post-processing the tuned settings are laid over and the "before" CV is measured with
    /// (default: the seed's, `configs/postproc.toml`).
    #[arg(long)]
    postproc: Option<PathBuf>,
    /// Print the result (every image at every grid point) as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // Each cause once: the crates' errors already include their source's text.
    cellseg_core::exit::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let grid = match &args.grid {
        Some(p) => TweakGrid::load(p).context("loading the grid")?,
        None => TweakGrid::default(),
    };
    let oof = read_oof(&args.oof).context("reading the OOF predictions")?;
    let truth = load_truth_csv(&args.truth).context("reading the truth")?;
    let base = match &args.postproc {
        Some(p) => PostprocConfig::load(p).context("loading the base post-processing")?,
        None => PostprocConfig::default(),
    };
    let paired = images_with_truth(oof, &truth, &args.oof, &args.truth)?;
    let images = paired.images;
    if !paired.ignored_truth.is_empty() {
        eprintln!(
            "{} truth image(s) have no OOF prediction and are left out ({} scored)",
            paired.ignored_truth.len(),
            images.len()
        );
    }
    let before = pipeline_score(&images, &base).context("scoring the base post-processing")?;
    let bar = ProgressBar::new(images.len() as u64).with_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} images",
    )?);
    let result = tweak(&images, &grid, &|| bar.inc(1)).context("tweaking")?;
    bar.finish_and_clear();
    let best = result.postproc_config(&base);
    let after = pipeline_score(&images, &best).context("scoring the tuned post-processing")?;
    let comment = format!(
        "Tuned by tweak_thresholds on {} ({} images), truth {}.\n{}\n\
         CV before {before:.5}, after {after:.5} (whole pipeline)",
        args.oof.display(),
        result.images.len(),
        args.truth.display(),
        result.table()
    );
    best.save(&args.out, &comment)?;
    if args.json {
        /// The tuner's result with the whole-pipeline CVs before and after.
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            result: &'a cellseg_postproc::tweak::TweakResult,
            cv_before: f64,
            cv_after: f64,
            ignored_truth: &'a [String],
        }
        let json = Json {
            result: &result,
            cv_before: before,
            cv_after: after,
            ignored_truth: &paired.ignored_truth,
        };
        println!("{}", serde_json::to_string(&json)?);
    } else {
        print!("{}", result.table());
        println!("CV before tuning {before:.5} ({} images, whole pipeline)", images.len());
        println!("CV after tuning  {after:.5} (whole pipeline with the tuned settings)");
        println!("best settings written to {}", args.out.display());
    }
    Ok(())
}
