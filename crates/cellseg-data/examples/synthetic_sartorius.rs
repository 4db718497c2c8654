//! Writes a synthetic data set in the Sartorius competition layout: `train.csv` + `train/`, and
//! held-back `test/` images with their truth in `test_truth.csv`. Cells of the three types, with
//! plate/well `sample_id`s (about two images per well), so that GroupKFold has real groups; with
//! `--dsb`, real DSB2018 nuclei images of the same size join `train/` as a fourth plate
//! (`dsb2018[nuclei]`, written gray, labelled shsy5y). Pure Rust: it links no libtorch.
//! `make reproduce` trains and cross-validates on it.
//!
//! ```text
//! cargo run --release -p cellseg-data --example synthetic_sartorius -- --out data/synthetic \
//!     [--images 60] [--test-images 6] [--height 256] [--width 256] [--seed 0] \
//!     [--dsb tests/data/dsb2018_stage1_test --dsb-images 8]
//! ```
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use cellseg_core::ImageSize;
use cellseg_data::dsb::DsbDataset;
use cellseg_data::sample::{Sample, SampleSource as _};
use cellseg_data::skip::Strictness;
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
    /// A DSB2018 folder (`stage1_solution_subset.csv` + `images/`): its first `--dsb-images`
    /// images (by id) of exactly `--height` × `--width` join `train/` as a fourth plate.
    #[arg(long)]
    dsb: Option<PathBuf>,
    /// How many DSB2018 images to add (all of that size must be at least this many).
    #[arg(long, default_value_t = 8, requires = "dsb")]
    dsb_images: usize,
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
    let size = ImageSize::new(a.height, a.width);
    let real = match &a.dsb {
        Some(dir) => dsb_images(dir, size, a.dsb_images)?,
        None => Vec::new(),
    };
    let layout =
        SartoriusLayout { images: a.images, test_images: a.test_images, size, seed: a.seed, real };
    let s = generate_sartorius_layout(&a.out, &layout)?;
    println!(
        "wrote {}: {} training images ({} cells; {} of them real DSB2018 images) in train.csv + \
         train/, {} test images in test/ (truth: test_truth.csv)",
        s.root.display(),
        s.images,
        s.instances,
        layout.real.len(),
        a.test_images
    );
    Ok(())
}

/// The first `n` images (by id) of the DSB2018 folder `dir` whose size is `size`.
fn dsb_images(dir: &Path, size: ImageSize, n: usize) -> anyhow::Result<Vec<Sample>> {
    let csv = dir.join("stage1_solution_subset.csv");
    let ds = DsbDataset::read(&csv, &dir.join("images"), Strictness::Strict)
        .with_context(|| format!("--dsb {}", dir.display()))?;
    let fits: Vec<usize> =
        (0..ds.images.len()).filter(|&i| ds.images[i].instances.image_size == size).collect();
    anyhow::ensure!(
        fits.len() >= n,
        "--dsb {}: {} of its {} images are {}x{} (height x width), --dsb-images asks for {n}; \
         nothing was written",
        dir.display(),
        fits.len(),
        ds.images.len(),
        size.height,
        size.width
    );
    fits[..n].iter().map(|&i| Ok(ds.load(i)?)).collect()
}
