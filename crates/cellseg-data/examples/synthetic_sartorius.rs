//! Writes a synthetic data set in the Sartorius competition layout: `train.csv` + `train/`, and
//! held-back `test/` images with their truth in `test_truth.csv`. Cells of the three types, with
//! plate/well `sample_id`s (about two images per well), so that GroupKFold has real groups. Pure
//! Rust: it links no libtorch. `make reproduce` trains and cross-validates on it.
//!
//! ```text
//! cargo run --release -p cellseg-data --example synthetic_sartorius -- --out data/synthetic \
//!     [--images 60] [--test-images 6] [--height 256] [--width 256] [--seed 0]
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use cellseg_core::ImageSize;
use cellseg_data::synthetic::{SartoriusLayout, generate_sartorius_layout};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Write a synthetic Sartorius-layout data set (train.csv, train/, test/)")]
struct Args {
    /// The folder to write (created; it must not hold a train.csv yet).
    #[arg(long)]
    out: PathBuf,
    /// Annotated training images.
    #[arg(long, default_value_t = 60)]
    images: usize,
    /// Held-back test images (truth in test_truth.csv).
    #[arg(long, default_value_t = 6)]
    test_images: usize,
    /// Image height (the competition's: 520).
    #[arg(long, default_value_t = 256)]
    height: usize,
    /// Image width (the competition's: 704).
    #[arg(long, default_value_t = 256)]
    width: usize,
    /// Seed of ids and cells.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> ExitCode {
    cellseg_core::exit::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        !a.out.join("train.csv").exists(),
        "{} already holds a train.csv; nothing was written (remove the folder to regenerate it)",
        a.out.display()
    );
    anyhow::ensure!(a.height >= 64 && a.width >= 64, "--height and --width must be at least 64");
    let layout = SartoriusLayout {
        images: a.images,
        test_images: a.test_images,
        size: ImageSize::new(a.height, a.width),
        seed: a.seed,
    };
    let s = generate_sartorius_layout(&a.out, &layout)?;
    println!(
        "wrote {}: {} training images ({} cells) in train.csv + train/, {} test images in test/ \
         (truth: test_truth.csv)",
        s.root.display(),
        s.images,
        s.instances,
        a.test_images
    );
    Ok(())
}
