//! The command-line layer of the `cellseg` example binaries, compiled once for all of them: the
//! flags two examples share ([`DataArgs`], [`InferenceArgs`]), the training run of
//! `train_maskrcnn` / `train_cascade` / `train_htc` ([`train`]) and of `pretrain_livecell`
//! ([`pretrain`]), an `indicatif` progress bar that observes the training engine
//! ([`ProgressObserver`]), overlay PNGs of held-out predictions and the closing report.
//!
//! It is the binaries' side of the workspace: errors are `anyhow` chains that name the file, row
//! or key, printed by [`cellseg::exit_code`]. An example binary is one call:
//!
//! ```
//! use cellseg_cli::train;
//! use cellseg::train::detector::Arch;
//!
//! // `cargo run --example train_cascade -- --help`, without exiting the process:
//! let argv = ["train_cascade", "--help"].map(std::ffi::OsString::from).to_vec();
//! let help = train::run_from(Arch::Cascade, Some(argv)).unwrap_err();
//! assert!(format!("{help}").contains("--config"));
//! ```

pub mod pretrain;
pub mod train;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cellseg::data::Sample;
use cellseg::dist::{Launch, ProcessGroup, Role};
use cellseg::postproc::Processed;
use cellseg::train::detector::{Arch, Detector, DetectorConfig, DetectorValidator, SampleData};
use cellseg::train::{
    EvalRecord, EvalReport, NonFiniteStep, RunPlan, Start, StepStats, TrainConfig, TrainObserver,
    TrainReport, Trainer, overlay,
};
use indicatif::{ProgressBar, ProgressStyle};

/// What every example does first: log to stderr, filtered by `RUST_LOG` (default `warn`: the
/// progress bar and the report carry the run), and keep libtorch's freed CPU memory for reuse
/// ([`cellseg::heads::cpu_memory::retain_freed_memory`]: large activations are not page-faulted
/// anew on every step). A second call (a test running several examples' runs) keeps the first
/// subscriber.
pub fn init_process() {
    cellseg::heads::cpu_memory::retain_freed_memory();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

/// Where a Sartorius-layout data set is: `--data` / `--csv` / `--images` (the training examples
/// and `cross_validate`).
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Sartorius folder (`train.csv` + `train/`); the training examples train on synthetic cells
    /// when neither this nor `--csv` is given.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A `train.csv`-layout file (overrides `<data>/train.csv`).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// The folder of its `{id}.png` images (overrides `<data>/train`; default: the CSV's folder).
    #[arg(long)]
    pub images: Option<PathBuf>,
}

impl DataArgs {
    /// `(csv, image folder)`, or `None` when neither `--data` nor `--csv` is given.
    pub fn paths(&self) -> Option<(PathBuf, PathBuf)> {
        let csv = match (&self.csv, &self.data) {
            (Some(c), _) => c.clone(),
            (None, Some(d)) => d.join("train.csv"),
            (None, None) => return None,
        };
        let images = match (&self.images, &self.data) {
            (Some(i), _) => i.clone(),
            (None, Some(d)) => d.join("train"),
            (None, None) => csv.parent().map_or_else(|| PathBuf::from("."), PathBuf::from),
        };
        Some((csv, images))
    }
}

/// The inference options `infer_ensemble` and `cross_validate` share.
#[derive(clap::Args, Debug, Clone)]
pub struct InferenceArgs {
    /// Ensemble config; its `[usage]` lists may name `--model` / `--experiment` folders (their
    /// folder names). Default: the seed's ENS values, or its SINGLE values for one member.
    #[arg(long)]
    pub ensemble: Option<PathBuf>,
    /// Post-processing config (default: the seed's, `configs/postproc.toml`; a
    /// `tweak_thresholds` output applies the tuned settings).
    #[arg(long)]
    pub postproc: Option<PathBuf>,
    /// The identity view only (no flip TTA).
    #[arg(long)]
    pub no_tta: bool,
    /// `--device`, `--threads`.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The flags every training example shares (`train_*`, `pretrain_livecell`) beyond `--config`
/// (whose default differs per example).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Overrides `train.run_dir`.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in `run_dir` from its latest checkpoint (with `--fold K`: that fold's
    /// run).
    #[arg(long)]
    pub resume: bool,
    /// Set one config value on top of the `--config` files, checked as strictly as a file (an
    /// unknown key or a wrong type is an error naming it): `--set train.optimizer.lr=2e-4`,
    /// `--set train.epochs=2`, `--set model.trunk=resnet50`. Repeatable; a VALUE that is not
    /// TOML is a string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Start from weights published for another data set (`[init] file`): an mmdet 2.x COCO
    /// checkpoint (`.pth`, the whole detector) or a torchvision / timm ImageNet classifier (the
    /// backbone; FPN and heads random). The class layers (`fc_cls`, `fc_reg`, `conv_logits`) are
    /// re-initialised as the seed did, every other key must match. Ignored with `--resume`.
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// `--device`, `--threads`.
    #[command(flatten)]
    pub device: DeviceArgs,
    /// `--nproc-per-node`, `--nnodes`, `--node-rank`, `--master-addr`, `--master-port`.
    #[command(flatten)]
    pub launch: LaunchArgs,
}

/// Data-parallel training over several processes, as torchrun lays them out (a process started
/// by `torchrun --no-python` with its variables joins that group instead).
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchArgs {
    /// Processes on this machine: one per GPU on CUDA; on the CPU the cores are split between
    /// them. `batch_size` is per process: the global batch is `batch_size × processes`, and
    /// the schedule and step count follow it.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub nproc_per_node: usize,
    /// Machines, each started with the same command and its own --node-rank.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's index (0 hosts rank 0, which writes the run folder).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub node_rank: usize,
    /// The address of machine 0.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub master_addr: String,
    /// The port of rank 0's rendezvous store.
    #[arg(long, value_name = "PORT", default_value_t = 29500)]
    pub master_port: u16,
}

impl Default for LaunchArgs {
    /// One process (the flags' defaults).
    fn default() -> Self {
        let l = Launch::default();
        Self {
            nproc_per_node: l.nproc_per_node,
            nnodes: l.nnodes,
            node_rank: l.node_rank,
            master_addr: l.master_addr,
            master_port: l.master_port,
        }
    }
}

impl LaunchArgs {
    /// The group this process trains in, or `None` when it was the launcher: it started one
    /// worker per `--nproc-per-node` (this program again, with `argv`'s arguments and
    /// torchrun's variables), they finished, and it has nothing left to do.
    ///
    /// # Errors
    /// A layout that cannot be, a worker that failed (naming its rank), a group that cannot
    /// form.
    pub fn join_or_launch(
        &self,
        argv: &[std::ffi::OsString],
    ) -> anyhow::Result<Option<Arc<ProcessGroup>>> {
        let launch = Launch {
            nproc_per_node: self.nproc_per_node,
            nnodes: self.nnodes,
            node_rank: self.node_rank,
            master_addr: self.master_addr.clone(),
            master_port: self.master_port,
        };
        match launch.role()? {
            Role::Worker(group) => Ok(Some(Arc::new(group))),
            Role::Launcher => {
                let me = std::env::current_exe().context("finding this program to launch")?;
                println!(
                    "launching {} processes on this machine ({} in all)",
                    launch.nproc_per_node,
                    launch.world_size()
                );
                launch.run(
                    |_| {
                        let mut c = std::process::Command::new(&me);
                        c.args(argv.iter().skip(1));
                        c
                    },
                    std::time::Duration::from_secs(60),
                )?;
                Ok(None)
            }
        }
    }
}

/// The device of one rank: a data-parallel rank on CUDA uses the GPU of its local rank, and a
/// rank on the CPU the threads its launcher gave it (`OMP_NUM_THREADS`) unless `--threads`
/// says otherwise.
pub fn rank_device(device: tch::Device, group: &ProcessGroup, threads: Option<i32>) -> tch::Device {
    if group.world_size() == 1 {
        return device;
    }
    if threads.is_none()
        && let Some(t) = std::env::var("OMP_NUM_THREADS").ok().and_then(|v| v.parse().ok())
    {
        tch::set_num_threads(t);
    }
    match device {
        tch::Device::Cuda(_) => tch::Device::Cuda(group.local_rank()),
        d => d,
    }
}

impl RunArgs {
    /// `init` with `--init` applied over `[init] file`.
    pub fn init_config(
        &self,
        init: &cellseg::heads::init::InitConfig,
    ) -> cellseg::heads::init::InitConfig {
        let mut init = init.clone();
        if let Some(f) = &self.init {
            init.file = Some(f.clone());
        }
        init
    }
}

/// Loads the starting weights of `init` (when it names a file) into the fresh `model` and prints
/// what was loaded, skipped and re-initialised.
///
/// # Errors
/// An unreadable checkpoint or one of another architecture, listing the keys.
pub fn load_init(model: &Detector, init: &cellseg::heads::init::InitConfig) -> anyhow::Result<()> {
    use cellseg::train::TrainableModel;
    let Some(file) = &init.file else { return Ok(()) };
    let report = cellseg::heads::init::load_init(model.var_store(), file, init)
        .with_context(|| format!("--init {}", file.display()))?;
    println!("init: {report}");
    Ok(())
}

/// `--device` and `--threads`, the same on every example.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// `cpu`, `cuda` (the first GPU) or `cuda:N`. Default: the first GPU when libtorch sees one,
    /// else the CPU.
    #[arg(long, value_name = "cpu|cuda|cuda:N")]
    pub device: Option<String>,
    /// libtorch intra-op CPU threads (overrides a config's `threads`; default: libtorch's, one
    /// per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<i32>,
}

impl DeviceArgs {
    /// Sets the threads (`--threads`, else `config_threads` when above 0) and returns the
    /// device of `--device`.
    ///
    /// # Errors
    /// An unknown device name, `cuda` when libtorch sees no GPU, `cuda:N` beyond the GPUs it
    /// sees, or fewer than one thread.
    pub fn apply(&self, config_threads: i32) -> anyhow::Result<tch::Device> {
        let threads = self.threads.unwrap_or(config_threads);
        if let Some(t) = self.threads {
            anyhow::ensure!(t >= 1, "--threads {t}: at least 1 thread");
        }
        if threads > 0 {
            tch::set_num_threads(threads);
        }
        parse_device(self.device.as_deref())
    }
}

/// The device `name` means (`None`: the first GPU when there is one, else the CPU).
///
/// # Errors
/// As [`DeviceArgs::apply`].
pub fn parse_device(name: Option<&str>) -> anyhow::Result<tch::Device> {
    let Some(name) = name else { return Ok(cellseg::best_device()) };
    let gpus = tch::Cuda::device_count();
    let index = match name {
        "cpu" => return Ok(tch::Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => i,
            _ => anyhow::bail!("--device {other}: expected cpu, cuda or cuda:N"),
        },
    };
    anyhow::ensure!(
        (index as i64) < gpus,
        "--device {name}: libtorch sees {gpus} CUDA device(s){}; use --device cpu",
        if gpus == 0 { " (no GPU, or a CPU-only libtorch)" } else { "" }
    );
    Ok(tch::Device::Cuda(index))
}

impl InferenceArgs {
    /// Sets the threads and returns the device (`--device`, `--threads`).
    ///
    /// # Errors
    /// As [`DeviceArgs::apply`].
    pub fn device(&self) -> anyhow::Result<tch::Device> {
        self.device.apply(0)
    }

    /// The post-processing of `--postproc` (default: the seed's).
    ///
    /// # Errors
    /// An unreadable or invalid config, naming the file and key.
    pub fn pipeline(&self) -> anyhow::Result<cellseg::postproc::Pipeline> {
        let cfg = match &self.postproc {
            Some(p) => cellseg::postproc::PostprocConfig::load(p)?,
            None => cellseg::postproc::PostprocConfig::default(),
        };
        Ok(cellseg::postproc::Pipeline::new(cfg)?)
    }

    /// The ensemble config of `--ensemble` for `n_members` members named by `names`.
    ///
    /// # Errors
    /// As [`cellseg::inference::ensemble_config`].
    pub fn ensemble(
        &self,
        names: &[(String, Vec<usize>)],
        n_members: usize,
    ) -> anyhow::Result<cellseg::ensemble::EnsembleConfig> {
        Ok(cellseg::inference::ensemble_config(
            self.ensemble.as_deref(),
            names,
            n_members,
            self.no_tta,
        )?)
    }
}

/// What [`fit_and_evaluate`] returns.
pub struct Fitted {
    /// The engine's report (checkpoints, logs, best validation).
    pub report: TrainReport,
    /// The final validation of the trained model.
    pub after: EvalReport,
    /// Seconds spent in training.
    pub train_s: f64,
    /// Overlay PNGs of the first held-out images.
    pub overlays: Vec<PathBuf>,
}

/// Makes `model` a detector of `arch` (`DetectorConfig::to_arch`: a Mask R-CNN config is converted
/// with the seed's settings of `arch`); a converted model trains in its own run folder,
/// `<run_dir>_<arch>`.
///
/// # Errors
/// A config of another cascade architecture (it would silently lose or invent settings).
pub fn select_arch(
    model: &mut DetectorConfig,
    run_dir: &mut PathBuf,
    arch: Arch,
) -> anyhow::Result<()> {
    if model.arch == arch {
        return Ok(());
    }
    *model = model.to_arch(arch)?;
    let name = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.ends_with(arch.name()) {
        run_dir.set_file_name(format!("{name}_{}", arch.name()));
    }
    Ok(())
}

/// The example that trains `arch` on the Sartorius data (`train_maskrcnn`, `train_cascade`,
/// `train_htc`).
pub fn training_example(arch: Arch) -> &'static str {
    match arch {
        Arch::MaskRcnn => "train_maskrcnn",
        Arch::Cascade => "train_cascade",
        Arch::Htc => "train_htc",
    }
}

/// The text of a run's `config.resolved.toml`: the whole config `cfg` (every default filled in),
/// headed by `head` (what the run read: data, weights, `--set`, config files), one `# ` line
/// each. A run folder alone says how it was made, and an example run again compares it
/// ([`reuse_finished`]).
///
/// # Errors
/// A config that does not serialise to TOML.
pub fn resolved_config<T: serde::Serialize>(cfg: &T, head: &[String]) -> anyhow::Result<String> {
    let mut text = String::from("# The whole config of this run (every default filled in).\n");
    for line in head {
        text.push_str(&format!("# {line}\n"));
    }
    Ok(text + &toml::to_string(cfg).context("serialising the config")?)
}

/// The config layers `paths` + `--set` assignments `sets` as one name for messages
/// (`configs/a.toml + configs/b.toml + --set train.epochs=2`).
pub fn layer_names(paths: &[&Path], sets: &[String]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .chain(sets.iter().map(|s| format!("--set {s}")))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// `set: …` for the head of [`resolved_config`], when `--set` was given.
pub fn set_line(sets: &[String]) -> Option<String> {
    (!sets.is_empty()).then(|| format!("set: {}", sets.join(" ")))
}

/// Synthetic cells as the default data of an example (`[synthetic]`): the training examples'
/// three cell types, `pretrain_livecell`'s cells written as LIVECell cell lines.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticImages {
    /// Training images (types cycle shsy5y, astro, cort).
    pub train_images: usize,
    /// Held-out (validation) images.
    pub val_images: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Seed of the training images (the held-out ones use [`Self::val_seed`]).
    pub seed: u64,
}

impl Default for SyntheticImages {
    /// The training examples' default: 48 training and 12 held-out 256×256 images, seed 0.
    fn default() -> Self {
        Self { train_images: 48, val_images: 12, height: 256, width: 256, seed: 0 }
    }
}

impl SyntheticImages {
    /// The images' size.
    pub fn size(&self) -> cellseg::core::ImageSize {
        cellseg::core::ImageSize::new(self.height, self.width)
    }

    /// The seed of the held-out images: `seed + 1_000_000`, apart from every training seed.
    pub fn val_seed(&self) -> u64 {
        self.seed.wrapping_add(1_000_000)
    }
}

/// Whether `run_dir` holds a finished run (`finished.json`) made with exactly `resolved` (its
/// `config.resolved.toml`): an example run again with the same arguments reuses it instead of
/// failing. `false` for a folder without a finished run.
///
/// # Errors
/// A finished run of another config (nothing is written then), naming the folder.
pub fn reuse_finished(run_dir: &Path, resolved: &str) -> anyhow::Result<bool> {
    use cellseg::experiment::{FoldState, run_state};
    if run_state(run_dir) != FoldState::Finished {
        return Ok(false);
    }
    let recorded =
        std::fs::read_to_string(run_dir.join("config.resolved.toml")).unwrap_or_default();
    anyhow::ensure!(
        recorded == resolved,
        "{} holds a finished run of another config (its config.resolved.toml differs from this \
         run's); nothing was written to it (its heldout/, if any, is unchanged). Train elsewhere \
         with --run-dir, or delete it",
        run_dir.display()
    );
    println!(
        "{}: a finished run of this same config, reused (delete it, or give --run-dir, to train \
         again)",
        run_dir.display()
    );
    Ok(true)
}

/// How [`fit_and_evaluate`] runs.
pub struct FitRun {
    /// Fresh or resumed.
    pub start: Start,
    /// Overlay PNGs to write under `<run_dir>/overlays`.
    pub overlays: usize,
    /// The whole config, recorded by a new run as its `config.resolved.toml`.
    pub resolved: String,
    /// The data-parallel group (rank 0 writes).
    pub group: Arc<ProcessGroup>,
}

/// Trains `model` on `data` as `run` says with a progress bar (rank 0), validates it on
/// `validator` (every rank together), and writes the overlay PNGs (rank 0).
///
/// # Errors
/// Config, training, evaluation or overlay errors.
pub fn fit_and_evaluate(
    model: &mut Detector,
    mut data: SampleData,
    train_cfg: &TrainConfig,
    validator: &mut DetectorValidator,
    FitRun { start, overlays: n_overlays, resolved, group }: FitRun,
) -> anyhow::Result<Fitted> {
    model.check_training_data(&data)?;
    let trainer =
        Trainer::new(train_cfg.clone())?.with_resolved_config(resolved).with_group(group.clone());
    let t_train = std::time::Instant::now();
    // Rank 0 shows the progress; the others are quiet.
    let mut progress = ProgressObserver::new();
    let observer: &mut dyn TrainObserver = if group.is_main() { &mut progress } else { &mut () };
    let report = trainer.fit(model, &mut data, Some(validator), observer, start)?;
    let train_s = t_train.elapsed().as_secs_f64();
    let overlays_dir = train_cfg.run_dir.join("overlays");
    let (after, overlays) = if group.world_size() == 1 {
        let after = validator.evaluate(model).map_err(|e| anyhow::anyhow!("evaluating: {e}"))?;
        let overlays =
            write_overlays(&overlays_dir, validator.samples(), &after.processed, n_overlays)?;
        (after.report, overlays)
    } else {
        let after = evaluate(validator, model, &group)?;
        let overlays = if group.is_main() {
            let processed = validator
                .process_first(model, n_overlays)
                .map_err(|e| anyhow::anyhow!("evaluating: {e}"))?;
            write_overlays(&overlays_dir, validator.samples(), &processed, n_overlays)?
        } else {
            Vec::new()
        };
        (after, overlays)
    };
    Ok(Fitted { report, after, train_s, overlays })
}

/// The metric of `model` on `validator`'s images, by every rank of `group` together.
///
/// # Errors
/// An evaluation error, or a failing collective.
pub fn evaluate(
    validator: &DetectorValidator,
    model: &Detector,
    group: &ProcessGroup,
) -> anyhow::Result<EvalReport> {
    let report = if group.world_size() == 1 {
        validator.evaluate(model).map(|e| e.report)
    } else {
        validator.evaluate_sharded(model, group)
    };
    report.map_err(|e| anyhow::anyhow!("evaluating: {e}"))
}

/// One line: the overall metric and the metric per cell type (or cell line).
pub fn print_report(what: &str, r: &EvalReport) {
    let per: Vec<String> = r.per_type.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
    println!("{what:<10} metric {:.3}   [{}]", r.score, per.join(", "));
}

/// Writes overlay PNGs of the first `n` held-out images into `dir`; returns their paths.
///
/// # Errors
/// The folder cannot be created or a PNG cannot be written (naming the path).
pub fn write_overlays(
    dir: &Path,
    samples: &[Sample],
    processed: &[Processed],
    n: usize,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut paths = Vec::new();
    for (s, p) in samples.iter().zip(processed).take(n) {
        let path = dir.join(format!("{}.png", s.id));
        overlay::write_overlay(&path, &s.image, &p.detections)?;
        paths.push(path);
    }
    Ok(paths)
}

/// The best validation, the step count and time, and where the checkpoints, logs, curves and
/// overlays are.
pub fn print_outputs(report: &TrainReport, train_s: f64, whole_s: f64, overlays: &[PathBuf]) {
    if let Some(b) = &report.best {
        println!("best validation metric {:.3} at step {}", b.score, b.step);
    }
    println!("steps: {} in {train_s:.0} s (whole run {whole_s:.0} s)", report.steps);
    if let Some(c) = &report.last_checkpoint {
        println!("checkpoint: {}", c.display());
    }
    if let Some(c) = &report.best_checkpoint {
        println!("best checkpoint: {}", c.display());
    }
    println!("metrics log: {}", report.metrics_log.display());
    println!("curves: {}", report.curves.display());
    for o in overlays {
        println!("overlay: {}", o.display());
    }
}

/// A progress bar with loss, learning rate, speed and ETA; evaluations and checkpoints are printed
/// above it.
pub struct ProgressObserver {
    bar: ProgressBar,
}

impl Default for ProgressObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressObserver {
    /// A hidden bar until the run starts.
    pub fn new() -> Self {
        Self { bar: ProgressBar::hidden() }
    }

    /// Prints above the bar, or plainly when the bar is hidden (output not a terminal).
    fn say(&self, line: String) {
        if self.bar.is_hidden() { println!("{line}") } else { self.bar.println(line) }
    }
}

impl TrainObserver for ProgressObserver {
    fn on_start(&mut self, plan: &RunPlan) {
        let bar = ProgressBar::new(plan.total_steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .expect("valid template"),
        );
        bar.set_position(plan.start_step);
        self.bar = bar;
    }

    fn on_step(&mut self, s: &StepStats) {
        self.bar.set_position(s.step);
        self.bar.set_message(format!(
            "epoch {}/{}  loss {:.3}  lr {:.1e}  {:.1} img/s",
            s.epoch, s.epochs, s.loss, s.lr, s.images_per_s
        ));
    }

    fn on_nonfinite(&mut self, s: &NonFiniteStep) {
        self.say(format!(
            "step {}: non-finite {} = {} (images {:?}); skipped ({} so far)",
            s.step, s.what, s.value, s.image_ids, s.count
        ));
    }

    fn on_eval(&mut self, r: &EvalRecord) {
        let per: Vec<String> =
            r.report.per_type.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        self.say(format!(
            "step {} (epoch {}): metric {:.3} [{}]{}",
            r.step,
            r.epoch,
            r.report.score,
            per.join(", "),
            if r.is_best { "  best" } else { "" }
        ));
    }

    fn on_checkpoint(&mut self, _dir: &Path, _step: u64) {}

    fn on_end(&mut self, _report: &TrainReport) {
        self.bar.finish_and_clear();
    }
}
