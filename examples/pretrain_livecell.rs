//! LIVECell pretraining (SEED.md §3.6): a Mask R-CNN (or with `--arch cascade | htc` a Cascade
//! Mask R-CNN or an HTC) with the 8 LIVECell classes (one per cell line, the seed's
//! `LIVECELL_CLASSES` order) trained on COCO-json + TIFF data, validated with the competition
//! metric overall and per cell line; its final checkpoint is what `train_maskrcnn` (or
//! `train_cascade` / `train_htc`) finetunes from (the class heads `fc_cls`, `fc_reg`,
//! `conv_logits` of every stage are then re-initialised, `cellseg_train::pretrained`).
//!
//! With no data path it runs on the embedded default: synthetic cells (cellseg-data `synthetic`)
//! whose Sartorius types are written as LIVECell cell lines the way `synthetic::generate_livecell`
//! does (shsy5y → SHSY5Y = 7, astro → A172 = 1, cort → Huh7 = 2).
//!
//! ```text
//! cargo run --release --example pretrain_livecell                     # synthetic, a few minutes
//! cargo run --release --example pretrain_livecell -- --arch cascade    # the same, Cascade
//! cargo run --release --example pretrain_livecell -- \
//!     --train-json ../shared/realdata/livecell/livecell_coco_test_subset.json \
//!     --val-json ../shared/realdata/livecell/livecell_coco_val_subset.json
//! ```
//! `--config` may be repeated: later files override the keys they set (e.g.
//! `--config configs/pretrain_livecell.toml --config configs/pretrain_livecell_subset.toml` for
//! the 16-image real subset). `--images` is the folder holding `livecell_train_val_images/` and `livecell_test_images/`
//! (default: `images/` next to the training json); each json's images are looked up in the
//! folder its name selects (`test` in the name → `livecell_test_images`).

#[path = "pretrain_livecell/setup.rs"]
mod setup;
mod support;

use std::path::PathBuf;
use std::time::Instant;

use cellseg::train::CheckpointStore;
use cellseg::train::detector::{ClassSpace, Detector, DetectorValidator, SampleData};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Pretrain a detector on LIVECell (8 cell lines), or on synthetic cells")]
struct Args {
    /// TOML config (see configs/pretrain_livecell.toml); every key has a default. Repeat it to
    /// layer files: each later file overrides the keys it sets.
    #[arg(long, default_value = "configs/pretrain_livecell.toml")]
    config: Vec<PathBuf>,
    /// LIVECell COCO json to train on; synthetic cells when absent.
    #[arg(long, requires = "val_json")]
    train_json: Option<PathBuf>,
    /// LIVECell COCO json of the validation images.
    #[arg(long, requires = "train_json")]
    val_json: Option<PathBuf>,
    /// Folder with `livecell_train_val_images/` and `livecell_test_images/` (default: `images/`
    /// next to the training json).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Overrides `train.run_dir`.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in `run_dir` from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Pretrain this architecture (`mask_rcnn`, `cascade`, `htc`): a Mask R-CNN `[model]` is
    /// converted with the seed's settings of that architecture, in the run folder
    /// `<run_dir>_<arch>` (default: the config's `[model] arch`).
    #[arg(long)]
    arch: Option<cellseg::train::detector::Arch>,
}

fn main() -> std::process::ExitCode {
    cellseg::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    support::init_tracing();
    let args = Args::parse();
    let t0 = Instant::now();
    let paths: Vec<&std::path::Path> = args.config.iter().map(PathBuf::as_path).collect();
    let mut cfg = setup::load_configs(&paths)?;
    if let Some(arch) = args.arch {
        support::select_arch(&mut cfg.model, &mut cfg.train.run_dir, arch)?;
    }
    if let Some(d) = &args.run_dir {
        cfg.train.run_dir = d.clone();
    }
    // Fail before loading data on a run folder that cannot be written (read-only, under a file).
    CheckpointStore::new(&cfg.train.run_dir).create_run_dir()?;
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads);
    }
    tch::manual_seed(cfg.train.seed as i64);
    println!("cellseg {}", cellseg::libtorch_report());

    let (train, val, source) = setup::load_data(
        &cfg,
        args.train_json.as_deref(),
        args.val_json.as_deref(),
        args.images.as_deref(),
    )?;
    let instances: usize = train.iter().map(|s| s.instances.len()).sum();
    println!(
        "data: {} training images ({instances} cells), {} validation images ({source})",
        train.len(),
        val.len()
    );
    let device = tch::Device::cuda_if_available();
    let mut model = Detector::from_config(device, &cfg.model)
        .map_err(|e| anyhow::anyhow!("building the model: {e}"))?;
    let mut validator = DetectorValidator::new(val, cfg.postproc.clone())
        .map_err(|e| anyhow::anyhow!("postproc config: {e}"))?
        .with_class_space(ClassSpace::livecell(cfg.validation.postproc_as));
    let before = if args.resume {
        None
    } else {
        Some(validator.evaluate(&model).map_err(|e| anyhow::anyhow!("evaluating: {e}"))?)
    };

    let data = SampleData::new(train, cfg.augment.clone())
        .map_err(|e| anyhow::anyhow!("augment config: {e}"))?;
    let support::Fitted { report, after, train_s, overlays } = support::fit_and_evaluate(
        &mut model,
        data,
        &cfg.train,
        &mut validator,
        if args.resume { cellseg::train::Start::Resume } else { cellseg::train::Start::Fresh },
        cfg.overlays,
        format!(
            "# The whole config of this run (every default filled in).\n# data: {}\n{}",
            source,
            toml::to_string(&cfg)?
        ),
    )?;

    println!();
    println!(
        "competition metric on {} validation images (per cell line):",
        validator.samples().len()
    );
    if let Some(b) = &before {
        support::print_report("untrained", &b.report);
    }
    support::print_report("trained", &after.report);
    support::print_outputs(&report, train_s, t0.elapsed().as_secs_f64(), &overlays);
    println!(
        "finetune from it: cargo run --release --example train_maskrcnn -- --pretrained {}",
        cfg.train.run_dir.display()
    );
    Ok(())
}
