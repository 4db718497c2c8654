//! The training loop end to end on the toy model: exact resume, best checkpoint, non-finite
//! losses, bad inputs.

use std::path::Path;

use cellseg_train::{
    Error, OptimizerKind, ScheduleKind, Start, TrainConfig, Trainer, checkpoint::MODEL_FILE,
    metrics_log::Record,
};

use crate::toy::{Collect, Toy, ToyData, ToyValidator};
use cellseg_core::testing::torch_lock;

fn config(run_dir: &Path) -> TrainConfig {
    let mut cfg = TrainConfig {
        run_dir: run_dir.to_path_buf(),
        seed: 7,
        epochs: 3,
        batch_size: 4,
        ..TrainConfig::default()
    };
    cfg.optimizer.lr = 1e-2;
    cfg.schedule.warmup_prop = 0.2;
    cfg.eval.first_epoch = 1;
    cfg.eval.every_epochs = 1;
    cfg
}

fn assert_same_weights(a: &Toy, b: &Toy) {
    let (wa, wb) = (a.weights(), b.weights());
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (k, t) in &wa {
        assert!(t.equal(&wb[k]), "variable {k} differs:\n{t}\n{}", wb[k]);
    }
}

/// Runs `cfg` straight, then again stopped after `stop` steps and resumed with a differently
/// initialised model; the final weights must be bit-identical.
fn straight_vs_resumed(cfg: TrainConfig, stop: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut straight_cfg = cfg.clone();
    straight_cfg.run_dir = dir.path().join("straight");
    let mut a = Toy::new(1);
    let mut obs_a = Collect::default();
    let ra = Trainer::new(straight_cfg)
        .unwrap()
        .fit(
            &mut a,
            &mut ToyData::new(34),
            Some(&mut ToyValidator::new()),
            &mut obs_a,
            Start::Fresh,
        )
        .unwrap();

    let mut split_cfg = cfg.clone();
    split_cfg.run_dir = dir.path().join("split");
    let trainer = Trainer::new(split_cfg).unwrap();
    let mut b = Toy::new(1);
    let mut obs_b = Collect { stop_at: Some(stop), ..Collect::default() };
    let rb = trainer
        .fit(
            &mut b,
            &mut ToyData::new(34),
            Some(&mut ToyValidator::new()),
            &mut obs_b,
            Start::Fresh,
        )
        .unwrap();
    assert!(rb.stopped_early);
    assert_eq!(rb.steps, stop);
    // A fresh process: another initialisation, another torch RNG state.
    let mut c = Toy::new(99);
    tch::manual_seed(12345);
    let mut obs_c = Collect::default();
    let rc = trainer
        .fit(
            &mut c,
            &mut ToyData::new(34),
            Some(&mut ToyValidator::new()),
            &mut obs_c,
            Start::Resume,
        )
        .unwrap();
    assert_eq!(rc.steps, ra.steps);
    assert_same_weights(&a, &c);
    // The resumed half logs exactly the steps the straight run made after `stop`.
    let tail: Vec<(u64, f64)> =
        obs_a.steps.iter().filter(|s| s.step > stop).map(|s| (s.step, s.loss)).collect();
    let resumed: Vec<(u64, f64)> = obs_c.steps.iter().map(|s| (s.step, s.loss)).collect();
    assert_eq!(tail, resumed);
    assert_eq!(ra.best, rc.best);
    // metrics.jsonl of the split run has one line per step, none duplicated by the resume.
    let text = std::fs::read_to_string(rc.metrics_log).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .filter_map(|l| match serde_json::from_str::<Record>(l).unwrap() {
            Record::Step(s) => Some(s.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, (1..=ra.steps).collect::<Vec<_>>());
}

#[test]
fn resume_mid_epoch_gives_bit_identical_weights_adamw() {
    let _torch = torch_lock();
    // 34 samples, bs 4: 8 steps per epoch, 24 in all; stop in the middle of epoch 2.
    let cfg = config(Path::new("unused"));
    straight_vs_resumed(cfg.clone(), 12);
    // Stopped exactly at the end of epoch 1, before its validation and checkpoint.
    straight_vs_resumed(cfg, 8);
}

#[test]
fn resume_gives_bit_identical_weights_sgd_accumulation_cosine() {
    let _torch = torch_lock();
    let mut cfg = config(Path::new("unused"));
    cfg.optimizer.kind = OptimizerKind::Sgd;
    cfg.optimizer.sgd.nesterov = true;
    cfg.schedule.kind = ScheduleKind::Cosine;
    cfg.grad_accumulation = 2;
    cfg.checkpoint.every_steps = 3;
    // 34 samples, bs 4, accumulation 2: 4 steps per epoch; stop at the end of epoch 1 + 1 step.
    straight_vs_resumed(cfg, 5);
}

#[test]
fn training_reduces_the_loss_and_keeps_the_best_checkpoint() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("run"));
    cfg.epochs = 6;
    let mut model = Toy::new(3);
    let mut obs = Collect::default();
    let mut val = ToyValidator::new();
    let report = Trainer::new(cfg.clone())
        .unwrap()
        .fit(&mut model, &mut ToyData::new(64), Some(&mut val), &mut obs, Start::Fresh)
        .unwrap();
    assert_eq!(report.steps, 6 * 16);
    assert_eq!(val.calls, 6);
    let first = obs.steps[..8].iter().map(|s| s.loss).sum::<f64>();
    let last = obs.steps[obs.steps.len() - 8..].iter().map(|s| s.loss).sum::<f64>();
    assert!(last < 0.5 * first, "loss did not go down: {first} → {last}");
    // The seed's schedule: first step at lr 0, peak after warm-up.
    assert_eq!(obs.steps[0].lr, 0.0);
    let best = report.best.clone().unwrap();
    let best_eval =
        obs.evals.iter().max_by(|a, b| a.report.score.total_cmp(&b.report.score)).unwrap();
    assert_eq!(best.score, best_eval.report.score);
    assert!(obs.evals.iter().filter(|e| e.is_best).count() >= 1);
    assert_eq!(obs.evals[0].report.per_type.len(), 2);
    // The best checkpoint holds the weights that scored best.
    let best_dir = report.best_checkpoint.unwrap();
    let mut reloaded = Toy::new(5);
    cellseg_train::load_weights(&reloaded.vs, &best_dir.join(MODEL_FILE)).unwrap();
    let mut v = ToyValidator::new();
    let score = cellseg_train::Validator::validate(&mut v, &mut reloaded).unwrap().score;
    assert_eq!(score, best.score);
    // Files next to the checkpoints.
    for f in ["metrics.jsonl", "curves.png", "config.resolved.toml", "latest.json", "best.json"] {
        assert!(dir.path().join("run").join(f).is_file(), "{f} missing");
    }
    let resolved = TrainConfig::load(dir.path().join("run/config.resolved.toml")).unwrap();
    assert_eq!(resolved, cfg);
    // keep_last = 2 regular + the best.
    let n = std::fs::read_dir(dir.path().join("run/checkpoints")).unwrap().count();
    assert!(n <= 3, "{n} checkpoints kept");
}

#[test]
fn non_finite_losses_are_skipped_reported_and_limited() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("run"));
    cfg.max_nonfinite_steps = 100;
    let mut data = ToyData::new(34);
    data.poison = Some(5);
    let mut model = Toy::new(1);
    let mut obs = Collect::default();
    let report = Trainer::new(cfg.clone())
        .unwrap()
        .fit(&mut model, &mut data, None, &mut obs, Start::Fresh)
        .unwrap();
    // Sample 5 is in one batch per epoch.
    assert_eq!(report.nonfinite_steps, 3);
    assert_eq!(obs.skipped.len(), 3);
    assert!(obs.skipped.iter().all(|s| s.image_ids.contains(&"img-5".to_string())));
    assert!(obs.skipped.iter().all(|s| s.what == "loss" && s.value.is_nan()));
    for (_, t) in model.weights() {
        assert!(bool::try_from(t.isfinite().all()).unwrap(), "a skipped step leaked NaN");
    }
    assert_eq!(obs.steps.len() + obs.skipped.len(), report.steps as usize);

    // With a limit of 1, the second bad step stops the run with the step and the image ids.
    cfg.run_dir = dir.path().join("run2");
    cfg.max_nonfinite_steps = 1;
    let err = Trainer::new(cfg)
        .unwrap()
        .fit(&mut Toy::new(1), &mut data, None, &mut (), Start::Fresh)
        .unwrap_err();
    match &err {
        Error::TooManyNonFinite {
            count: 2,
            limit: 1,
            key: "max_nonfinite_steps",
            step,
            streak,
        } => {
            assert_eq!(streak.last().map(|s| s.step), Some(*step), "{err}");
            assert!(*step > 8 && streak[0].image_ids.contains(&"img-5".to_string()), "{err}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("img-5") && err.to_string().contains("max_nonfinite_steps"));
}

#[test]
fn resume_with_another_architecture_lists_the_mismatched_keys() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("run"));
    cfg.epochs = 1;
    let trainer = Trainer::new(cfg).unwrap();
    trainer.fit(&mut Toy::new(1), &mut ToyData::new(16), None, &mut (), Start::Fresh).unwrap();
    let err = trainer
        .fit(&mut Toy::other_architecture(), &mut ToyData::new(16), None, &mut (), Start::Resume)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::CheckpointMismatch { .. }), "{msg}");
    assert!(
        msg.contains("extra.weight")
            && msg.contains("fc1.weight")
            && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn fresh_run_refuses_an_existing_run_and_resume_needs_one() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("run"));
    cfg.epochs = 1;
    let trainer = Trainer::new(cfg).unwrap();
    let err = trainer
        .fit(&mut Toy::new(1), &mut ToyData::new(16), None, &mut (), Start::Resume)
        .unwrap_err();
    assert!(matches!(err, Error::NoCheckpoint { .. }), "{err}");
    trainer.fit(&mut Toy::new(1), &mut ToyData::new(16), None, &mut (), Start::Fresh).unwrap();
    let err = trainer
        .fit(&mut Toy::new(1), &mut ToyData::new(16), None, &mut (), Start::Fresh)
        .unwrap_err();
    assert!(matches!(err, Error::RunExists { .. }), "{err}");
}

#[test]
fn unwritable_run_dir_is_a_clear_error() {
    let _torch = torch_lock();
    // Tests run as root, so permissions do not block writes: put the run folder under a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a_file");
    std::fs::write(&file, b"not a folder").unwrap();
    let cfg = config(&file.join("run"));
    let err = Trainer::new(cfg)
        .unwrap()
        .fit(&mut Toy::new(1), &mut ToyData::new(16), None, &mut (), Start::Fresh)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Io { .. }) && msg.contains("a_file/run"), "{msg}");
}

#[test]
fn too_little_data_and_bad_values_are_errors() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { batch_size: 8, grad_accumulation: 4, ..config(dir.path()) };
    let err = Trainer::new(cfg)
        .unwrap()
        .fit(&mut Toy::new(1), &mut ToyData::new(16), None, &mut (), Start::Fresh)
        .unwrap_err();
    assert!(matches!(err, Error::NotEnoughData { samples: 16, needed: 32 }), "{err}");
    let mut cfg = config(dir.path());
    cfg.optimizer.lr = -1.0;
    assert!(Trainer::new(cfg).unwrap_err().to_string().contains("optimizer.lr"));
}

#[test]
fn mixed_precision_on_cpu_is_a_no_op() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("amp"));
    cfg.epochs = 1;
    cfg.mixed_precision = true;
    let mut a = Toy::new(1);
    Trainer::new(cfg.clone())
        .unwrap()
        .fit(&mut a, &mut ToyData::new(16), None, &mut (), Start::Fresh)
        .unwrap();
    cfg.mixed_precision = false;
    cfg.run_dir = dir.path().join("fp32");
    let mut b = Toy::new(1);
    Trainer::new(cfg)
        .unwrap()
        .fit(&mut b, &mut ToyData::new(16), None, &mut (), Start::Fresh)
        .unwrap();
    assert_same_weights(&a, &b);
}

#[test]
fn non_finite_gradients_are_skipped_too() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("run"));
    cfg.max_nonfinite_steps = 2;
    let mut model = Toy::new(1);
    model.nan_grad = true;
    let before = model.weights();
    let mut obs = Collect::default();
    let err = Trainer::new(cfg)
        .unwrap()
        .fit(&mut model, &mut ToyData::new(16), None, &mut obs, Start::Fresh)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyNonFinite { count: 3, step: 3, key: "max_nonfinite_steps", .. }
        ),
        "{err}"
    );
    assert!(obs.skipped.iter().all(|s| s.what == "grad_norm" && !s.value.is_finite()));
    assert_eq!(obs.skipped[0].image_ids.len(), 4);
    for (k, t) in model.weights() {
        assert!(t.equal(&before[&k]), "{k} changed by a skipped step");
    }
}

/// Runs whenever CUDA is visible (the GPU machine); on a CPU-only machine it says so on stderr and
/// returns, unless `CELLSEG_EXPECT_CUDA` is set (as on the GPU machine), where it fails.
#[test]
fn mixed_precision_trains_on_cuda() {
    if !tch::Cuda::is_available() {
        assert!(
            std::env::var_os("CELLSEG_EXPECT_CUDA").is_none(),
            "CELLSEG_EXPECT_CUDA is set but CUDA is not available"
        );
        eprintln!("mixed_precision_trains_on_cuda: skipped, no CUDA device visible");
        return;
    }
    let _torch = torch_lock();
    let device = tch::Device::Cuda(0);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("amp"));
    cfg.mixed_precision = true;
    cfg.epochs = 4;
    let mut model = Toy::on(device);
    let mut data = ToyData::new(64);
    data.device = device;
    let mut obs = Collect::default();
    let report = Trainer::new(cfg)
        .unwrap()
        .fit(&mut model, &mut data, None, &mut obs, Start::Fresh)
        .unwrap();
    assert_eq!(report.nonfinite_steps, 0);
    let first = obs.steps[..8].iter().map(|s| s.loss).sum::<f64>();
    let last = obs.steps[obs.steps.len() - 8..].iter().map(|s| s.loss).sum::<f64>();
    assert!(last < first, "loss did not go down under autocast: {first} → {last}");
    let state =
        std::fs::read_to_string(report.last_checkpoint.unwrap().join("state.json")).unwrap();
    assert!(state.contains("\"growth_tracker\""), "{state}");
}

#[test]
fn a_streak_of_non_finite_steps_stops_the_run_naming_each_and_survives_a_resume() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("run"));
    cfg.max_nonfinite_steps = 100;
    cfg.max_nonfinite_in_a_row = 3;
    cfg.checkpoint.every_steps = 2;
    let trainer = Trainer::new(cfg).unwrap();
    let mut model = Toy::new(1);
    model.nan_grad = true;
    // Two skipped steps, then a stop (and a checkpoint holding the streak).
    let mut obs = Collect { stop_at: Some(2), ..Collect::default() };
    let report =
        trainer.fit(&mut model, &mut ToyData::new(16), None, &mut obs, Start::Fresh).unwrap();
    assert_eq!((report.steps, report.nonfinite_steps, report.stopped_early), (2, 2, true));
    assert_eq!(obs.skipped.iter().map(|s| s.in_a_row).collect::<Vec<_>>(), vec![1, 2]);
    // Resumed, the streak goes on from 2: steps 3 and 4 make it 4 > 3.
    let err =
        trainer.fit(&mut model, &mut ToyData::new(16), None, &mut (), Start::Resume).unwrap_err();
    match &err {
        Error::TooManyNonFinite {
            count: 4,
            limit: 3,
            key: "max_nonfinite_in_a_row",
            step: 4,
            streak,
        } => {
            assert_eq!(streak.iter().map(|s| s.step).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
            assert!(streak.iter().all(|s| s.image_ids.len() == 4), "{err}");
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("max_nonfinite_in_a_row") && msg.contains("step 1 images [\"img-"),
        "{msg}"
    );
}

#[test]
fn out_of_memory_names_the_batch_and_what_to_lower() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut model = Toy::new(1);
    model.oom = true;
    let err = Trainer::new(config(&dir.path().join("run")))
        .unwrap()
        .fit(&mut model, &mut ToyData::new(16), None, &mut (), Start::Fresh)
        .unwrap_err();
    match &err {
        Error::OutOfMemory {
            step: 1, batch_size: 4, image_ids, mixed_precision: false, ..
        } => {
            assert_eq!(image_ids.len(), 4, "{err}");
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    for needle in [
        "batch_size 4",
        "Lower `batch_size`",
        "grad_accumulation",
        "crop",
        "mixed_precision",
        "allocate",
    ] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
}
