//! The training run shared by `examples/train_maskrcnn.rs`, `train_cascade.rs` and
//! `train_htc.rs`: arguments, data, the detector of the example's architecture, the metric
//! before and after training.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use cellseg::dist::ProcessGroup;
use cellseg::experiment::{Experiment, Finished, FoldState, mark_finished};
use cellseg::train::detector::{Arch, Detector, DetectorValidator, SampleData};
use cellseg::train::pretrained::load_pretrained;
use cellseg::train::{Start, TrainableModel};
use clap::{CommandFactory, FromArgMatches, Parser};

pub mod setup;

#[derive(Parser, Debug)]
struct Args {
    /// TOML config (see configs/demo.toml); every key has a default. Repeat it to layer files: a
    /// later file sets only the keys it writes (e.g. `--config configs/train_maskrcnn.toml
    /// --config configs/train_cascade.toml`). A Mask R-CNN `[model]` is converted to the
    /// example's architecture with the seed's settings (`DetectorConfig::to_arch`).
    #[arg(long, default_value = "configs/demo.toml")]
    config: Vec<PathBuf>,
    #[command(flatten)]
    data: crate::DataArgs,
    /// Train fold K of an experiment: `run_dir` is the experiment folder, which records the split
    /// in `folds.csv` (checked on every later run) and holds this fold's run in `fold<K>/`.
    /// Needs `--data` or `--csv`.
    #[arg(long, conflicts_with = "all_folds")]
    fold: Option<usize>,
    /// Train every fold of the experiment in `run_dir`, one after the other; run again, it skips
    /// finished folds and resumes an interrupted one. Needs `--data` or `--csv`.
    #[arg(long)]
    all_folds: bool,
    /// Start from these weights (a `model.safetensors`, a checkpoint folder or a run folder such
    /// as `runs/pretrain_livecell`); the class-specific layers are re-initialised as the seed did
    /// (`[pretrained]` in the config). Ignored with `--resume`.
    #[arg(long, conflicts_with = "init")]
    pretrained: Option<PathBuf>,
    #[command(flatten)]
    run: crate::RunArgs,
}

/// What `--help` says a run writes.
const WRITES: &str = "\
Writes into run_dir (a new folder; run again with the same arguments, a finished run is reused):
  model.toml             the detector's config (infer_ensemble and cross_validate rebuild it from this)
  config.resolved.toml   the whole config with every default, headed by the data, weights and --set used
  checkpoints/step-N/    model.safetensors, optimizer and state.json; latest.json / best.json point at them
  metrics.jsonl          losses, learning rate and validation metric by step; curves.png plots them
  heldout/               the held-out images and their truth.csv (heldout_dsb/ for DSB2018 images)
  overlays/              predictions drawn on the first held-out images (`overlays` in the config)
  finished.json          written last, once the final validation is done
With --fold K / --all-folds run_dir is an experiment: folds.csv (the split) and one such folder per fold, fold<K>/.";

/// Trains a detector of `arch` (the example's) as the command line says.
///
/// # Errors
/// Bad arguments or configs, unreadable data, a config of another cascade architecture, and
/// every training error, each naming what failed.
pub fn run(arch: Arch) -> anyhow::Result<()> {
    run_from(arch, None)
}

/// [`run`] with the arguments `argv` (the program name first) instead of the process's; a bad
/// argument is an error then, not an exit.
///
/// # Errors
/// As [`run`].
pub fn run_from(arch: Arch, argv: Option<Vec<std::ffi::OsString>>) -> anyhow::Result<()> {
    crate::init_process();
    let about =
        format!("Train a {} on synthetic cells (default) or the Sartorius layout", arch.title());
    let command = Args::command().about(about).after_help(WRITES);
    let from_process = argv.is_none();
    let argv: Vec<std::ffi::OsString> = argv.unwrap_or_else(|| std::env::args_os().collect());
    let matches = if from_process {
        command.get_matches_from(&argv)
    } else {
        command.try_get_matches_from(&argv)?
    };
    let args = Args::from_arg_matches(&matches)?;
    let t0 = Instant::now();
    let paths: Vec<&std::path::Path> = args.config.iter().map(PathBuf::as_path).collect();
    let mut cfg = setup::load_configs_with(&paths, &args.run.set)?;
    crate::select_arch(&mut cfg.model, &mut cfg.train.run_dir, arch)?;
    if let Some(d) = &args.run.run_dir {
        cfg.train.run_dir = d.clone();
    }
    cfg.init = args.run.init_config(&cfg.init);
    if let (Some(init), Some(pre)) = (&cfg.init.file, &args.pretrained) {
        anyhow::bail!(
            "--pretrained {} and [init] file = {}: start from one of them (--pretrained: a \
             LIVECell run of ours; --init: published COCO / ImageNet weights)",
            pre.display(),
            init.display()
        );
    }
    // `--nproc-per-node N`: this process starts N workers and waits for them.
    let Some(group) = args.run.launch.join_or_launch(&argv)? else { return Ok(()) };
    let device = args.run.device.apply(cfg.threads)?;
    let device = crate::rank_device(device, &group, args.run.device.threads);
    println!("cellseg {}", cellseg::libtorch_report());
    if group.world_size() > 1 {
        println!(
            "data-parallel: rank {} of {} (global batch {})",
            group.rank(),
            group.world_size(),
            cfg.train.batch_size * group.world_size()
        );
    }

    let paths = args.data.paths();
    if args.fold.is_none() && !args.all_folds {
        // One run folder, validated on `data.fold`; run again with the same arguments, a finished
        // run is reused.
        let run_dir = &cfg.train.run_dir;
        if !args.run.resume
            && crate::reuse_finished(run_dir, &resolved_config(&cfg, &args, &paths)?)?
        {
            return Ok(());
        }
        let start = start_of(run_dir, args.run.resume)?;
        let setup::Data { train, val, dsb_val } = setup::load_data(&cfg, paths.as_ref())?;
        let done = train_one(
            arch,
            &cfg,
            &args,
            &paths,
            device,
            Fold { train, val, dsb_val, start },
            &group,
        )?;
        if group.is_main() {
            mark_finished(run_dir, &done)?;
        }
        println!("whole run {:.0} s", t0.elapsed().as_secs_f64());
        return Ok(());
    }
    let Some(paths) = paths else {
        anyhow::bail!(
            "--fold and --all-folds train the folds of a real data set: give --data or --csv \
             (the synthetic default has no split)"
        );
    };
    let data = setup::load_split_data(&cfg, &paths)?;
    // Rank 0 records the split; the others read it back once it is there.
    let recorded = group.is_main().then(|| Experiment::record(&cfg.train.run_dir, &data.split));
    group.barrier()?;
    let exp = match recorded {
        Some(exp) => exp?,
        None => Experiment::record(&cfg.train.run_dir, &data.split)?,
    };
    let folds: Vec<usize> = match args.fold {
        Some(k) => {
            exp.check_fold(k)
                .with_context(|| format!("--fold {k} (data.folds = {})", cfg.data.folds))?;
            vec![k]
        }
        None => (0..exp.split.n_folds).collect(),
    };
    println!(
        "experiment {}: {} images in {} folds ({})",
        exp.dir.display(),
        exp.split.ids.len(),
        exp.split.n_folds,
        exp.dir.join(cellseg::experiment::FOLDS_FILE).display()
    );
    for k in folds {
        let dir = exp.fold_dir(k);
        let start = match exp.fold_state(k) {
            FoldState::Finished => {
                println!("fold {k}: finished earlier ({}), skipped", dir.display());
                continue;
            }
            FoldState::Interrupted if args.all_folds || args.run.resume => Start::Resume,
            FoldState::Interrupted => return Err(run_exists(&dir)),
            FoldState::New if args.run.resume => {
                anyhow::bail!("--resume: fold {k} has no checkpoint in {}", dir.display())
            }
            FoldState::New => Start::Fresh,
        };
        println!("== fold {k} of {} ({:?}) in {}", exp.split.n_folds, start, dir.display());
        let mut fcfg = cfg.clone();
        fcfg.data.fold = k;
        fcfg.train.run_dir = dir.clone();
        let (train, val) = data.fold_cloned(k);
        let done = train_one(
            arch,
            &fcfg,
            &args,
            &Some(paths.clone()),
            device,
            Fold { train, val, dsb_val: Vec::new(), start },
            &group,
        )?;
        if group.is_main() {
            mark_finished(&dir, &Finished { fold: k, ..done })?;
        }
    }
    println!("whole run {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// The error of a run folder that already holds a run, before anything is written into it.
fn run_exists(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} already holds a training run (a latest checkpoint); nothing was written to it \
         (heldout/ is unchanged). Continue it with --resume, or train elsewhere with --run-dir; \
         folds of one data set belong in an experiment (--fold K / --all-folds)",
        dir.display()
    )
}

/// Fresh or resumed, checked before anything is written into `dir`.
fn start_of(dir: &Path, resume: bool) -> anyhow::Result<Start> {
    match (cellseg::experiment::run_state(dir), resume) {
        (FoldState::New, true) => anyhow::bail!("--resume: {} has no checkpoint", dir.display()),
        (FoldState::New, false) => Ok(Start::Fresh),
        (_, true) => Ok(Start::Resume),
        (_, false) => Err(run_exists(dir)),
    }
}

/// The data and start of one training run.
struct Fold {
    train: Vec<cellseg::data::Sample>,
    val: Vec<cellseg::data::Sample>,
    dsb_val: Vec<cellseg::data::Sample>,
    start: Start,
}

/// Trains one run folder (`cfg.train.run_dir`): held-out images written (new run) or checked
/// (resumed run), the metric before and after, the outputs; returns what `finished.json` records.
fn train_one(
    arch: Arch,
    cfg: &setup::Config,
    args: &Args,
    paths: &Option<(PathBuf, PathBuf)>,
    device: tch::Device,
    Fold { train, val, dsb_val, start }: Fold,
    group: &Arc<ProcessGroup>,
) -> anyhow::Result<Finished> {
    let t0 = Instant::now();
    println!(
        "data: {} training images{}, {} held-out images ({}){}",
        train.len(),
        if cfg.data.repeat > 1 {
            format!(" (x{} per epoch)", cfg.data.repeat)
        } else {
            String::new()
        },
        val.len(),
        paths.as_ref().map_or("synthetic cells".into(), |(c, _)| c.display().to_string()),
        if dsb_val.is_empty() {
            String::new()
        } else {
            format!(", {} held-out DSB2018 images (real nuclei)", dsb_val.len())
        }
    );
    let run_dir = &cfg.train.run_dir;
    if start == Start::Resume {
        check_held_out(run_dir, &val)?;
    }
    // Seeded per run, so that a fold's model starts alike whether the folds before it trained in
    // this process or not.
    tch::manual_seed(cfg.train.seed as i64);
    let mut model = Detector::from_config(device, &cfg.model)
        .map_err(|e| anyhow::anyhow!("building the model: {e}"))?;
    println!("model: {} with a {:?} trunk on {device:?}", arch.name(), cfg.model.trunk);
    // Starting weights before anything is written: a checkpoint that does not fit leaves the
    // run folder as it was.
    if let (Some(path), Start::Fresh) = (&args.pretrained, start) {
        let report = load_pretrained(model.var_store(), path, &cfg.pretrained)?;
        println!("pretrained: {report}");
    }
    if start == Start::Fresh {
        crate::load_init(&model, &cfg.init)?;
        if group.is_main() {
            write_held_out(run_dir, &val, &dsb_val)?;
        }
    }
    let held_out: Vec<&str> = val.iter().take(8).map(|s| s.id.as_str()).collect();
    println!("held out: {}{}", held_out.join(", "), if val.len() > 8 { ", ..." } else { "" });
    let mut validator = DetectorValidator::new(val, cfg.postproc.clone())
        .map_err(|e| anyhow::anyhow!("postproc config: {e}"))?;
    let before = crate::evaluate(&validator, &model, group)?;
    let dsb_validator = if dsb_val.is_empty() {
        None
    } else {
        Some(
            DetectorValidator::new(dsb_val, cfg.postproc.clone())
                .map_err(|e| anyhow::anyhow!("postproc config: {e}"))?,
        )
    };
    let dsb_before = match &dsb_validator {
        Some(v) => Some(crate::evaluate(v, &model, group).context("DSB2018")?),
        None => None,
    };

    let data = SampleData::new(train, cfg.augment.clone())
        .map_err(|e| anyhow::anyhow!("augment config: {e}"))?
        .with_repeat(cfg.data.repeat);
    let crate::Fitted { report, after, train_s, overlays } = crate::fit_and_evaluate(
        &mut model,
        data,
        &cfg.train,
        &mut validator,
        crate::FitRun {
            start,
            overlays: cfg.overlays,
            resolved: resolved_config(cfg, args, paths)?,
            group: group.clone(),
        },
    )?;

    println!();
    println!("competition metric on {} held-out images:", validator.samples().len());
    crate::print_report("untrained", &before);
    crate::print_report("trained", &after);
    if let (Some(v), Some(b)) = (&dsb_validator, &dsb_before) {
        let a = crate::evaluate(v, &model, group).context("DSB2018")?;
        println!(
            "real DSB2018 nuclei, {} held-out images: untrained {:.3}, trained {:.3}",
            v.samples().len(),
            b.score,
            a.score
        );
    }
    crate::print_outputs(&report, train_s, t0.elapsed().as_secs_f64(), &overlays);
    Ok(Finished {
        fold: cfg.data.fold,
        steps: report.steps,
        held_out: validator.samples().len(),
        metric: after.score,
    })
}

/// The run's `config.resolved.toml` ([`crate::resolved_config`]), headed by the data and
/// weights it read, the `--set` values and the config files.
fn resolved_config(
    cfg: &setup::Config,
    args: &Args,
    paths: &Option<(PathBuf, PathBuf)>,
) -> anyhow::Result<String> {
    let mut head = vec![match paths {
        Some((csv, images)) => format!(
            "data: {} with images in {} (fold {} of {} held out)",
            csv.display(),
            images.display(),
            cfg.data.fold,
            cfg.data.folds
        ),
        None => "data: the synthetic default ([synthetic], [dsb])".to_string(),
    }];
    head.extend(args.pretrained.as_ref().map(|p| format!("pretrained: {}", p.display())));
    head.extend(crate::set_line(&args.run.set));
    let configs: Vec<String> = args.config.iter().map(|p| p.display().to_string()).collect();
    head.push(format!("configs: {}", configs.join(" + ")));
    crate::resolved_config(cfg, &head)
}

/// Writes the held-out images and their truth (`heldout/images/` + `heldout/truth.csv`, and
/// `heldout_dsb/` for the DSB2018 images) into the run folder, so that `infer_ensemble` can
/// predict and score exactly what the validation saw.
fn write_held_out(
    run_dir: &std::path::Path,
    val: &[cellseg::data::Sample],
    dsb_val: &[cellseg::data::Sample],
) -> anyhow::Result<()> {
    use cellseg::data::Sample;
    // The type of an image is the majority label of its cells, as the post-processing votes.
    let majority = |s: &Sample| match cellseg::postproc::vote::cell_type_vote(&s.instances.labels) {
        Some(Ok(t)) => t.name().to_string(),
        _ => "unknown".to_string(),
    };
    let write = |name: &str, samples: &[Sample], cell_type: &dyn Fn(&Sample) -> String| {
        if samples.is_empty() {
            return Ok(());
        }
        let dir = run_dir.join(name);
        let csv = dir.join("truth.csv");
        cellseg::data::sartorius::write_annotated(&csv, &dir.join("images"), samples, cell_type)
    };
    write("heldout", val, &majority)?;
    write("heldout_dsb", dsb_val, &|_| "nuclei".to_string())?;
    Ok(())
}

/// Checks, before a resumed run goes on, that its `heldout/truth.csv` lists the images it
/// validates on now (a resumed run of another fold or split would validate on training images).
fn check_held_out(run_dir: &Path, val: &[cellseg::data::Sample]) -> anyhow::Result<()> {
    let truth = run_dir.join("heldout").join("truth.csv");
    if !truth.is_file() || val.is_empty() {
        return Ok(());
    }
    let recorded = cellseg::metrics::report::load_truth_csv(&truth)
        .with_context(|| format!("reading the held-out truth of {}", run_dir.display()))?;
    let mut was: Vec<&str> = recorded.iter().map(|t| t.id.as_str()).collect();
    // Images without instances have no truth row.
    let mut now: Vec<&str> =
        val.iter().filter(|s| !s.instances.masks.is_empty()).map(|s| s.id.as_str()).collect();
    was.sort_unstable();
    now.sort_unstable();
    if was != now {
        let first =
            now.iter().find(|id| !was.contains(id)).or(was.iter().find(|id| !now.contains(id)));
        anyhow::bail!(
            "{}: this run validated on other images than the ones held out now (first differing \
             id: {}); resuming it would validate on training images. heldout/ is unchanged",
            truth.display(),
            first.copied().unwrap_or("?")
        );
    }
    Ok(())
}
