//! The run of `examples/pretrain_livecell.rs` (shared with the chain test): arguments, data, the
//! detector, the metric before and after training.

use std::path::PathBuf;
use std::time::Instant;

use cellseg::experiment::{Finished, mark_finished};
use cellseg::train::CheckpointStore;
use cellseg::train::detector::{ClassSpace, Detector, DetectorValidator, SampleData};
use clap::{CommandFactory, FromArgMatches, Parser};

pub mod setup;

#[derive(Parser, Debug)]
#[command(
    about = "Pretrain a detector on LIVECell (8 cell lines), or on synthetic cells",
    after_help = "\
Writes into run_dir (a new folder; run again with the same arguments, a finished run is reused):
  model.toml             the detector's config
  config.resolved.toml   the whole config with every default, headed by the data used
  checkpoints/step-N/    model.safetensors, optimizer and state.json; latest.json / best.json point at them
  metrics.jsonl          losses, learning rate and validation metric by step; curves.png plots them
  overlays/              predictions drawn on the first validation images
  finished.json          written last; finetune from the folder with train_* --pretrained <run_dir>"
)]
struct Args {
    /// TOML config (see configs/pretrain_livecell.toml, the seed's recipe); every key has a
    /// default. Repeat it to layer files: each later file overrides the keys it sets. Default: the
    /// seed's recipe with the CPU sizes of configs/pretrain_livecell_tiny.toml.
    #[arg(
        long,
        default_values = ["configs/pretrain_livecell.toml", "configs/pretrain_livecell_tiny.toml"]
    )]
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
    /// Pretrain this architecture (`mask_rcnn`, `cascade`, `htc`): a Mask R-CNN `[model]` is
    /// converted with the seed's settings of that architecture, in the run folder
    /// `<run_dir>_<arch>` (default: the config's `[model] arch`).
    #[arg(long)]
    arch: Option<cellseg::train::detector::Arch>,
    #[command(flatten)]
    run: crate::RunArgs,
}

/// Pretrains as the command line `argv` says (the program name first; the process's arguments
/// when `None`, where a bad argument exits as clap does).
///
/// # Errors
/// Bad arguments or configs, unreadable data and every training error, each naming what failed.
pub fn run_from(argv: Option<Vec<std::ffi::OsString>>) -> anyhow::Result<()> {
    crate::init_process();
    let from_process = argv.is_none();
    let argv: Vec<std::ffi::OsString> = argv.unwrap_or_else(|| std::env::args_os().collect());
    let matches = if from_process {
        Args::command().get_matches_from(&argv)
    } else {
        Args::command().try_get_matches_from(&argv)?
    };
    let args = Args::from_arg_matches(&matches)?;
    let t0 = Instant::now();
    let paths: Vec<&std::path::Path> = args.config.iter().map(PathBuf::as_path).collect();
    let mut cfg = setup::load_configs_with(&paths, &args.run.set)?;
    if let Some(arch) = args.arch {
        crate::select_arch(&mut cfg.model, &mut cfg.train.run_dir, arch)?;
    }
    if let Some(d) = &args.run.run_dir {
        cfg.train.run_dir = d.clone();
    }
    cfg.init = args.run.init_config(&cfg.init);
    let source = setup::source(args.train_json.as_deref(), args.val_json.as_deref());
    let mut head = vec![format!("data: {source}")];
    head.extend(crate::set_line(&args.run.set));
    let resolved = crate::resolved_config(&cfg, &head)?;
    // Run again with the same arguments, a finished run is reused.
    if !args.run.resume && crate::reuse_finished(&cfg.train.run_dir, &resolved)? {
        return Ok(());
    }
    // `--nproc-per-node N`: this process starts N workers and waits for them.
    let Some(group) = args.run.launch.join_or_launch(&argv)? else { return Ok(()) };
    let device = args.run.device.apply(cfg.threads)?;
    let device = crate::rank_device(device, &group, args.run.device.threads);
    // Fail before loading data on a run folder that cannot be written (read-only, under a file).
    CheckpointStore::new(&cfg.train.run_dir).create_run_dir()?;
    tch::manual_seed(cfg.train.seed as i64);
    println!("cellseg {}", cellseg::libtorch_report());

    let (train, val, _) = setup::load_data(
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
    let mut model = Detector::from_config(device, &cfg.model)
        .map_err(|e| anyhow::anyhow!("building the model: {e}"))?;
    if !args.run.resume {
        crate::load_init(&model, &cfg.init)?;
    }
    let mut validator = DetectorValidator::new(val, cfg.postproc.clone())
        .map_err(|e| anyhow::anyhow!("postproc config: {e}"))?
        .with_class_space(ClassSpace::livecell(cfg.validation.postproc_as));
    let before =
        if args.run.resume { None } else { Some(crate::evaluate(&validator, &model, &group)?) };

    let data = SampleData::new(train, cfg.augment.clone())
        .map_err(|e| anyhow::anyhow!("augment config: {e}"))?;
    let crate::Fitted { report, after, train_s, overlays } = crate::fit_and_evaluate(
        &mut model,
        data,
        &cfg.train,
        &mut validator,
        crate::FitRun {
            start: if args.run.resume {
                cellseg::train::Start::Resume
            } else {
                cellseg::train::Start::Fresh
            },
            overlays: cfg.overlays,
            resolved,
            group: group.clone(),
        },
    )?;
    if group.is_main() {
        mark_finished(
            &cfg.train.run_dir,
            &Finished {
                fold: 0,
                steps: report.steps,
                held_out: validator.samples().len(),
                metric: after.score,
            },
        )?;
    }

    println!();
    println!(
        "competition metric on {} validation images (per cell line):",
        validator.samples().len()
    );
    if let Some(b) = &before {
        crate::print_report("untrained", b);
    }
    crate::print_report("trained", &after);
    crate::print_outputs(&report, train_s, t0.elapsed().as_secs_f64(), &overlays);
    println!(
        "finetune from it: cargo run --release --example {} -- --pretrained {}",
        crate::training_example(cfg.model.arch),
        cfg.train.run_dir.display()
    );
    Ok(())
}
