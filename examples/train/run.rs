//! The training run shared by `examples/train_maskrcnn.rs`, `train_cascade.rs` and
//! `train_htc.rs`: arguments, data, the detector of the example's architecture, the metric
//! before and after training.

use std::path::PathBuf;
use std::time::Instant;

use cellseg::train::TrainableModel;
use cellseg::train::detector::{Arch, Detector, DetectorValidator, SampleData};
use cellseg::train::pretrained::load_pretrained;
use clap::{CommandFactory, FromArgMatches, Parser};

use crate::{setup, support};

#[derive(Parser, Debug)]
struct Args {
    /// TOML config (see configs/demo.toml); every key has a default. Repeat it to layer files: a
    /// later file sets only the keys it writes (e.g. `--config configs/train_maskrcnn.toml
    /// --config configs/train_cascade.toml`). A Mask R-CNN `[model]` is converted to the
    /// example's architecture with the seed's settings (`DetectorConfig::to_arch`).
    #[arg(long, default_value = "configs/demo.toml")]
    config: Vec<PathBuf>,
    /// Sartorius folder (`train.csv` + `train/`); synthetic cells when neither this nor `--csv`
    /// is given.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A `train.csv`-layout file (overrides `<data>/train.csv`).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The folder of its `{id}.png` images (overrides `<data>/train`; default: the CSV's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Overrides `train.run_dir`.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in `run_dir` from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start from these weights (a `model.safetensors`, a checkpoint folder or a run folder such
    /// as `runs/pretrain_livecell`); the class-specific layers are re-initialised as the seed did
    /// (`[pretrained]` in the config). Ignored with `--resume`.
    #[arg(long)]
    pretrained: Option<PathBuf>,
}

/// Where the real data is, from `--data` / `--csv` / `--images`; `None`: synthetic cells.
fn real_data_paths(args: &Args) -> Option<(PathBuf, PathBuf)> {
    let csv = match (&args.csv, &args.data) {
        (Some(c), _) => c.clone(),
        (None, Some(d)) => d.join("train.csv"),
        (None, None) => return None,
    };
    let images = match (&args.images, &args.data) {
        (Some(i), _) => i.clone(),
        (None, Some(d)) => d.join("train"),
        (None, None) => csv.parent().map_or_else(|| PathBuf::from("."), PathBuf::from),
    };
    Some((csv, images))
}

/// Trains a detector of `arch` (the example's) as the command line says.
///
/// # Errors
/// Bad arguments or configs, unreadable data, a config of another cascade architecture, and
/// every training error, each naming what failed.
pub fn run(arch: Arch) -> anyhow::Result<()> {
    support::init_tracing();
    let about = format!(
        "Train a {} on synthetic cells (default) or the Sartorius layout",
        match arch {
            Arch::MaskRcnn => "Mask R-CNN",
            Arch::Cascade => "Cascade Mask R-CNN",
            Arch::Htc => "Hybrid Task Cascade (HTC)",
        }
    );
    let args = Args::from_arg_matches(&Args::command().about(about).get_matches())?;
    let t0 = Instant::now();
    let paths: Vec<&std::path::Path> = args.config.iter().map(PathBuf::as_path).collect();
    let mut cfg = setup::load_configs(&paths)?;
    support::select_arch(&mut cfg.model, &mut cfg.train.run_dir, arch)?;
    if let Some(d) = &args.run_dir {
        cfg.train.run_dir = d.clone();
    }
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads);
    }
    tch::manual_seed(cfg.train.seed as i64);
    println!("cellseg {}", cellseg::libtorch_report());

    let paths = real_data_paths(&args);
    let setup::Data { train, val, dsb_val } = setup::load_data(&cfg, paths.as_ref())?;
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
    write_held_out(&cfg.train.run_dir, &val, &dsb_val)?;
    let device = tch::Device::cuda_if_available();
    let mut model = Detector::from_config(device, &cfg.model)
        .map_err(|e| anyhow::anyhow!("building the model: {e}"))?;
    let held_out: Vec<&str> = val.iter().take(8).map(|s| s.id.as_str()).collect();
    println!("held out: {}{}", held_out.join(", "), if val.len() > 8 { ", ..." } else { "" });
    println!("model: {} with a {:?} trunk on {device:?}", arch.name(), cfg.model.trunk);
    if let (Some(path), false) = (&args.pretrained, args.resume) {
        let report = load_pretrained(model.var_store(), path, &cfg.pretrained)?;
        println!("pretrained: {report}");
    }
    let mut validator = DetectorValidator::new(val, cfg.postproc.clone())
        .map_err(|e| anyhow::anyhow!("postproc config: {e}"))?;
    let before = validator.evaluate(&model).map_err(|e| anyhow::anyhow!("evaluating: {e}"))?;
    let dsb_validator = if dsb_val.is_empty() {
        None
    } else {
        Some(
            DetectorValidator::new(dsb_val, cfg.postproc.clone())
                .map_err(|e| anyhow::anyhow!("postproc config: {e}"))?,
        )
    };
    let dsb_before = match &dsb_validator {
        Some(v) => Some(v.evaluate(&model).map_err(|e| anyhow::anyhow!("evaluating DSB: {e}"))?),
        None => None,
    };

    let data = SampleData::new(train, cfg.augment.clone())
        .map_err(|e| anyhow::anyhow!("augment config: {e}"))?
        .with_repeat(cfg.data.repeat);
    let support::Fitted { report, after, train_s, overlays } = support::fit_and_evaluate(
        &mut model,
        data,
        &cfg.train,
        &mut validator,
        args.resume,
        cfg.overlays,
    )?;

    println!();
    println!("competition metric on {} held-out images:", validator.samples().len());
    support::print_report("untrained", &before.report);
    support::print_report("trained", &after.report);
    if let (Some(v), Some(b)) = (&dsb_validator, &dsb_before) {
        let a = v.evaluate(&model).map_err(|e| anyhow::anyhow!("evaluating DSB: {e}"))?;
        println!(
            "real DSB2018 nuclei, {} held-out images: untrained {:.3}, trained {:.3}",
            v.samples().len(),
            b.report.score,
            a.report.score
        );
    }
    support::print_outputs(&report, train_s, t0.elapsed().as_secs_f64(), &overlays);
    Ok(())
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
