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
use cellseg_postproc::tweak::{TweakGrid, images_with_truth, tweak};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Tune post-processing thresholds per predicted cell type on OOF predictions")]
struct Args {
    /// OOF predictions (cellseg OOF format, written by infer_ensemble --oof).
    #[arg(long)]
    oof: PathBuf,
    /// Truth CSV in the Sartorius train.csv layout; must hold exactly the OOF's images.
    #[arg(long)]
    truth: PathBuf,
    /// Grid TOML (strict); the seed's grid without it (configs/tweak.toml spells it out).
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Where to write the best settings as a post-processing TOML.
    #[arg(long, default_value = "postproc_tuned.toml")]
    out: PathBuf,
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
    let images = images_with_truth(oof, &truth, &args.oof, &args.truth)?;
    let bar = ProgressBar::new(images.len() as u64).with_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} images",
    )?);
    let result = tweak(&images, &grid, &|| bar.inc(1)).context("tweaking")?;
    bar.finish_and_clear();
    let best = result.postproc_config(&PostprocConfig::default());
    let comment = format!(
        "Tuned by tweak_thresholds on {} ({} images), truth {}.\n{}",
        args.oof.display(),
        result.images.len(),
        args.truth.display(),
        result.table()
    );
    best.save(&args.out, &comment)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", result.table());
        println!("best settings written to {}", args.out.display());
    }
    Ok(())
}
