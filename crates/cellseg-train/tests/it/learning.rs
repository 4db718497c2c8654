//! It learns on the production path: for each architecture, a small detector (TinyConvNet trunk)
//! goes through `Detector` + `SampleData` (the seed's augmentations, random crops) + `Trainer`
//! (AdamW, warm-up + cosine, clipping) + `DetectorValidator` (post-processing, competition
//! metric) on synthetic cells of the three types, and the held-out metric rises from about 0 to
//! well above it.
//!
//! Each architecture trains in its own process (this test binary re-run on
//! [`child_learns_one_architecture`]) with one libtorch thread: the engine re-seeds libtorch's
//! process-wide generator every step, so a process of its own keeps every run deterministic, and
//! [`run_children`] runs them at most one per core, the slowest first. `LEARN_STEPS=n` overrides
//! the number of steps for experiments (the children inherit it).

use std::process::{Command, Stdio};

use cellseg_core::ImageSize;
use cellseg_data::{AugmentConfig, synthetic};
use cellseg_postproc::PostprocConfig;
use cellseg_train::detector::{Arch, Detector, DetectorConfig, DetectorValidator, SampleData};
use cellseg_train::{Start, TrainConfig, Trainer};

/// The untrained metric is at most this; the trained one at least [`GAIN`] above it.
const UNTRAINED_MAX: f64 = 0.05;
const GAIN: f64 = 0.2;
/// Steps of the run of `arch` unless `LEARN_STEPS` says otherwise: about the fewest that pass
/// with margin. Measured (one thread, this machine), held-out metric from 0.000 to: Mask R-CNN
/// 0.289 at 240 steps (margin +0.089 over untrained + [`GAIN`]; 0.110 at 120), Cascade 0.299 at
/// 240 (+0.099; 0.137 at 120), HTC 0.314 at 180 (+0.114; 0.376 at 240, 0.115 at 120). HTC, a
/// step three times Mask R-CNN's, then takes about as long as Mask R-CNN and Cascade one after
/// the other on the second core.
fn steps(arch: Arch) -> usize {
    match arch {
        Arch::MaskRcnn | Arch::Cascade => 240,
        Arch::Htc => 180,
    }
}
/// Set in a child's environment: the name of the architecture it trains.
const CHILD_ENV: &str = "CELLSEG_LEARNING_CHILD";
/// The line of a child's standard output that carries its result.
const RESULT: &str = "LEARNED";
const ARCHS: [Arch; 3] = [Arch::MaskRcnn, Arch::Cascade, Arch::Htc];

fn config(arch: Arch) -> DetectorConfig {
    let mut cfg = DetectorConfig::tiny(3).to_arch(arch).unwrap();
    cfg.heads.htc.semantic_head.num_convs = 2;
    cfg
}

/// (untrained, trained) held-out metric of `arch` after `steps` steps.
fn learn(arch: Arch, steps: usize) -> (f64, f64) {
    tch::manual_seed(0);
    let size = ImageSize::new(128, 128);
    let dir = tempfile::tempdir().unwrap();
    let mut model = Detector::from_config(tch::Device::Cpu, &config(arch)).unwrap();
    let mut aug = AugmentConfig::default();
    aug.crop.height = 96;
    aug.crop.width = 96;
    let train = synthetic::samples(32, size, 11);
    let mut data = SampleData::new(train, aug).unwrap();
    model.check_training_data(&data).unwrap();
    let post = PostprocConfig { min_size: [0; 3], ..PostprocConfig::default() };
    let mut val = DetectorValidator::new(synthetic::samples(8, size, 1_000_011), post).unwrap();
    let untrained = val.evaluate(&model).unwrap().report.score;
    let batch = 4;
    let epochs = (steps * batch).div_ceil(32);
    // The demo's recipe (configs/demo.toml [train]).
    let toml = format!(
        "run_dir = {:?}\nseed = 0\nepochs = {epochs}\nbatch_size = {batch}\n\
         [optimizer]\nlr = 2e-3\nclip_grad_norm = 10.0\n\
         [schedule]\nkind = \"cosine\"\nwarmup_prop = 0.05\nhorizon = \"steps\"\n\
         [loss]\ndecay = false\n[eval]\nfirst_epoch = {epochs}\nevery_epochs = {epochs}\n\
         [checkpoint]\nevery_epochs = {epochs}\nkeep_last = 1\n",
        dir.path().join("run")
    );
    let cfg: TrainConfig = cellseg_core::config::parse_toml(&toml, "learning.rs").unwrap();
    let t0 = std::time::Instant::now();
    let report = Trainer::new(cfg)
        .unwrap()
        .fit(&mut model, &mut data, Some(&mut val), &mut (), Start::Fresh)
        .unwrap();
    let trained = val.evaluate(&model).unwrap().report.score;
    println!(
        "{}: {} steps in {:.1} s, held-out metric {untrained:.3} -> {trained:.3} ({} non-finite steps)",
        arch.name(),
        report.steps,
        t0.elapsed().as_secs_f64(),
        report.nonfinite_steps
    );
    (untrained, trained)
}

#[test]
#[ignore = "the child process of every_architecture_learns_through_the_trainer"]
fn child_learns_one_architecture() {
    let name =
        std::env::var(CHILD_ENV).expect("run by every_architecture_learns_through_the_trainer");
    let arch = ARCHS
        .into_iter()
        .find(|a| a.name() == name)
        .unwrap_or_else(|| panic!("unknown architecture {name}"));
    tch::set_num_threads(1);
    let steps: usize =
        std::env::var("LEARN_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(steps(arch));
    let (before, after) = learn(arch, steps);
    println!("{RESULT} {before} {after}");
}

/// Spawns the child that trains `arch`, its standard output and error into files of `dir` (a
/// pipe nobody reads while the parent waits on another child could fill and stall it).
fn spawn_child(arch: Arch, dir: &std::path::Path) -> std::process::Child {
    let file = |stream: &str| {
        Stdio::from(std::fs::File::create(dir.join(format!("{}.{stream}", arch.name()))).unwrap())
    };
    Command::new(std::env::current_exe().unwrap())
        .args(["learning::child_learns_one_architecture", "--exact", "--ignored"])
        .arg("--nocapture")
        .env(CHILD_ENV, arch.name())
        .stdout(file("stdout"))
        .stderr(file("stderr"))
        .spawn()
        .unwrap()
}

/// Runs one child per architecture, at most one per core at a time, the slowest first (HTC
/// about 3x Mask R-CNN, Cascade 2x): on 2 cores HTC has a core to itself while Cascade and then
/// Mask R-CNN share the other, where three children at once left HTC alone on one core at the
/// end. Returns each child's exit status, standard output and error, in [`ARCHS`] order.
fn run_children() -> Vec<(Arch, std::process::ExitStatus, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // Popped from the back: HTC first, then Cascade, then Mask R-CNN.
    let mut queue = ARCHS.to_vec();
    let mut running: Vec<(Arch, std::process::Child)> = Vec::new();
    let mut done = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < cores {
            let Some(arch) = queue.pop() else { break };
            running.push((arch, spawn_child(arch, dir.path())));
        }
        let finished =
            running.iter_mut().find_map(|(arch, c)| Some((*arch, c.try_wait().unwrap()?)));
        match finished {
            Some((arch, status)) => {
                running.retain(|(a, _)| *a != arch);
                let read = |stream: &str| {
                    std::fs::read_to_string(dir.path().join(format!("{}.{stream}", arch.name())))
                        .unwrap()
                };
                done.push((arch, status, read("stdout"), read("stderr")));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    done.sort_by_key(|(arch, ..)| ARCHS.iter().position(|a| a == arch));
    done
}

#[test]
fn every_architecture_learns_through_the_trainer() {
    let mut failures = Vec::new();
    for (arch, status, stdout, stderr) in run_children() {
        assert!(
            status.success(),
            "{}: the child failed ({status}):\n{stdout}\n{stderr}",
            arch.name()
        );
        for line in stdout.lines().filter(|l| l.starts_with(arch.name())) {
            println!("{line}");
        }
        let result = stdout
            .lines()
            .find_map(|l| l.strip_prefix(RESULT))
            .unwrap_or_else(|| panic!("{}: no {RESULT} line in:\n{stdout}", arch.name()));
        let [before, after]: [f64; 2] = result
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        println!("{}: margin {:+.3} over untrained + {GAIN}", arch.name(), after - (before + GAIN));
        if before > UNTRAINED_MAX || after < before + GAIN {
            failures.push(format!("{}: {before:.3} -> {after:.3}", arch.name()));
        }
    }
    assert!(
        failures.is_empty(),
        "held-out metric not above untrained + {GAIN} (untrained <= {UNTRAINED_MAX}): {failures:?}"
    );
}
