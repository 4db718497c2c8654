//! Kill-and-resume exactness for real detectors. For Mask R-CNN and Cascade Mask R-CNN (a small
//! TinyConvNet trunk whose batch norms update their running statistics, the RPN and RoI samplers,
//! the seed's augmentations and random crops, AdamW), on the CPU:
//!
//! 1. a run of [`STEPS`] steps in this process;
//! 2. the same run in a child process (this test binary re-run on [`child_trains_until_killed`])
//!    that writes periodic checkpoints every [`EVERY_STEPS`] steps, is killed with SIGKILL during
//!    step [`KILLED_AT`] (after the checkpoint of step 8 and the log line of step 9), and is
//!    resumed here from its latest checkpoint;
//! 3. the same killed run with that latest checkpoint's weights cut in half, which resumes from
//!    the previous checkpoint (step 5) after a warning naming the broken one.
//!
//! After [`STEPS`] steps every variable (batch-norm buffers included) is bit-identical to the
//! uninterrupted run's, and so is every logged step loss.
//!
//! The engine re-seeds libtorch's global generator every step, so both tests hold
//! [`torch_lock`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cellseg_core::ImageSize;
use cellseg_core::testing::torch_lock;
use cellseg_data::{AugmentConfig, synthetic};
use cellseg_train::checkpoint::{MODEL_FILE, named_variables};
use cellseg_train::detector::{Arch, Detector, DetectorConfig, SampleData};
use cellseg_train::{
    CheckpointConfig, Start, StepStats, TrainConfig, TrainObserver, TrainableModel, Trainer,
};

/// Steps of the whole run: 10 images, batches of 2, two epochs.
const STEPS: u64 = 10;
const EVERY_STEPS: u64 = 4;
/// The child blocks when step 10 is reported: steps 1–9 are in `metrics.jsonl`, the latest
/// checkpoint is step 8 (periodic; step 5 is the end of epoch 1).
const KILLED_AT: u64 = 10;
/// Set in the child's environment: `<arch>|<run dir>`.
const CHILD_ENV: &str = "CELLSEG_KILL_RESUME_CHILD";
/// The file the child writes when it is ready to be killed.
const READY_FILE: &str = "ready-to-be-killed";

fn model(arch: Arch) -> Detector {
    tch::manual_seed(0);
    let cfg = DetectorConfig::tiny(3).to_arch(arch).unwrap();
    Detector::from_config(tch::Device::Cpu, &cfg).unwrap()
}

fn data() -> SampleData {
    let mut aug = AugmentConfig::default();
    aug.crop.height = 64;
    aug.crop.width = 64;
    SampleData::new(synthetic::samples(10, ImageSize::new(96, 96), 7), aug).unwrap()
}

fn trainer(run_dir: &Path) -> Trainer {
    Trainer::new(TrainConfig {
        run_dir: run_dir.to_path_buf(),
        seed: 3,
        epochs: 2,
        batch_size: 2,
        checkpoint: CheckpointConfig { every_epochs: 1, every_steps: EVERY_STEPS, keep_last: 10 },
        ..TrainConfig::default()
    })
    .unwrap()
}

/// Blocks the run forever once step [`KILLED_AT`] is reported, after writing the ready file.
struct BlockAt {
    ready: PathBuf,
}

impl TrainObserver for BlockAt {
    fn on_step(&mut self, s: &StepStats) {
        if s.step == KILLED_AT {
            std::fs::write(&self.ready, b"").unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The child's side: trains `arch` in the given run folder until it is killed.
#[test]
#[ignore = "the child process of kill_and_resume_is_exact_for_real_detectors"]
fn child_trains_until_killed() {
    let _torch = torch_lock();
    let spec =
        std::env::var(CHILD_ENV).expect("run by kill_and_resume_is_exact_for_real_detectors");
    let (arch, run_dir) = spec.split_once('|').unwrap();
    tch::set_num_threads(1);
    let mut m = model(crate::arch_named(arch));
    let mut obs = BlockAt { ready: Path::new(run_dir).with_extension(READY_FILE) };
    let _ = trainer(Path::new(run_dir)).fit(&mut m, &mut data(), None, &mut obs, Start::Fresh);
    panic!("the run ended without blocking at step {KILLED_AT}");
}

/// Trains `arch` in a child process and kills it with SIGKILL during step [`KILLED_AT`].
fn train_in_child_and_kill(arch: Arch, run_dir: &Path) {
    let ready = run_dir.with_extension(READY_FILE);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill_resume::child_trains_until_killed", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, format!("{}|{}", arch.name(), run_dir.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{}: the child exited ({status}) before step {KILLED_AT}", arch.name());
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "{}: the child is too slow", arch.name());
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{}: {status}", arch.name());
}

/// Every logged step of `run_dir/metrics.jsonl` without its timings.
fn logged_steps(run_dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "step")
        .map(|mut r| {
            let o = r.as_object_mut().unwrap();
            o.remove("images_per_s");
            o.remove("elapsed_s");
            r
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Resumes `run_dir` to the end; returns the checkpoint it resumed from and the model.
fn resume(arch: Arch, run_dir: &Path) -> (PathBuf, Detector) {
    let mut m = model(arch);
    let report = trainer(run_dir).fit(&mut m, &mut data(), None, &mut (), Start::Resume).unwrap();
    assert_eq!(report.steps, STEPS);
    (report.resumed_from.unwrap(), m)
}

fn assert_same(
    arch: Arch,
    case: &str,
    want: &Detector,
    got: &Detector,
    want_log: &Path,
    got_log: &Path,
) {
    let (a, b) = (named_variables(want.var_store()), named_variables(got.var_store()));
    assert_eq!(a.len(), b.len());
    let differ: Vec<&str> = a
        .iter()
        .zip(&b)
        .filter(|((_, x), (_, y))| !x.equal(y))
        .map(|((k, _), _)| k.as_str())
        .collect();
    assert!(differ.is_empty(), "{} {case}: variables differ: {differ:?}", arch.name());
    let (la, lb) = (logged_steps(want_log), logged_steps(got_log));
    assert_eq!(la.len() as u64, STEPS, "{} {case}", arch.name());
    assert_eq!(la, lb, "{} {case}: logged steps differ", arch.name());
}

#[test]
fn kill_and_resume_is_exact_for_real_detectors() {
    let _torch = torch_lock();
    tch::set_num_threads(1);
    for arch in [Arch::MaskRcnn, Arch::Cascade] {
        let dir = tempfile::tempdir().unwrap();
        let straight_dir = dir.path().join("straight");
        let mut straight = model(arch);
        let report = trainer(&straight_dir)
            .fit(&mut straight, &mut data(), None, &mut (), Start::Fresh)
            .unwrap();
        assert_eq!((report.steps, report.nonfinite_steps), (STEPS, 0), "{}", arch.name());
        // The batch norms did update their running statistics: the comparison covers them.
        let init = model(arch);
        let bn_moved = named_variables(straight.var_store())
            .iter()
            .zip(named_variables(init.var_store()))
            .any(|((k, a), (_, b))| k.ends_with("running_mean") && !a.equal(&b));
        assert!(bn_moved, "{}: no batch-norm buffer changed", arch.name());

        let killed = dir.path().join("killed");
        train_in_child_and_kill(arch, &killed);
        let logged = logged_steps(&killed).len() as u64;
        assert_eq!(logged, KILLED_AT - 1, "{}: steps logged before the kill", arch.name());
        let broken = dir.path().join("broken");
        copy_dir(&killed, &broken);

        let (from, resumed) = resume(arch, &killed);
        assert!(from.ends_with("checkpoints/step-00000008"), "{}: {from:?}", arch.name());
        assert_same(arch, "killed at step 10", &straight, &resumed, &straight_dir, &killed);

        // The latest checkpoint half-written: the previous one (end of epoch 1) takes over.
        let weights = broken.join("checkpoints/step-00000008").join(MODEL_FILE);
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
        let (from, resumed) = resume(arch, &broken);
        assert!(from.ends_with("checkpoints/step-00000005"), "{}: {from:?}", arch.name());
        assert_same(arch, "latest checkpoint broken", &straight, &resumed, &straight_dir, &broken);
    }
}
