//! It learns on the production path: for each architecture, a small detector (TinyConvNet trunk)
//! goes through `Detector` + `SampleData` (the seed's augmentations, random crops) + `Trainer`
//! (AdamW, warm-up + cosine, clipping) + `DetectorValidator` (post-processing, competition
//! metric) on synthetic cells of the three types, and the held-out metric rises from about 0 to
//! well above it.
//!
//! The three architectures train at once, each in its own process (this test binary re-run on
//! [`child_learns_one_architecture`]) with one libtorch thread: the engine re-seeds libtorch's
//! process-wide generator every step, so a process of its own keeps every run deterministic, and
//! three processes finish in about the time of the slowest. `LEARN_STEPS=n` overrides the number
//! of steps for experiments (the children inherit it).

use std::process::{Command, Stdio};

use cellseg_core::ImageSize;
use cellseg_data::{AugmentConfig, synthetic};
use cellseg_postproc::PostprocConfig;
use cellseg_train::detector::{Arch, Detector, DetectorConfig, DetectorValidator, SampleData};
use cellseg_train::{Start, TrainConfig, Trainer};

/// The untrained metric is at most this; the trained one at least [`GAIN`] above it.
const UNTRAINED_MAX: f64 = 0.05;
const GAIN: f64 = 0.2;
/// Steps of each run unless `LEARN_STEPS` says otherwise.
const STEPS: usize = 240;
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
        std::env::var("LEARN_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(STEPS);
    let (before, after) = learn(arch, steps);
    println!("{RESULT} {before} {after}");
}

#[test]
fn every_architecture_learns_through_the_trainer() {
    let children: Vec<_> = ARCHS
        .map(|arch| {
            let child = Command::new(std::env::current_exe().unwrap())
                .args(["learning::child_learns_one_architecture", "--exact", "--ignored"])
                .arg("--nocapture")
                .env(CHILD_ENV, arch.name())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (arch, child)
        })
        .into_iter()
        .collect();
    let mut failures = Vec::new();
    for (arch, child) in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: the child failed ({}):\n{stdout}\n{}",
            arch.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
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
