//! The Mask R-CNN adapter trains on tiny synthetic images through the engine: finite losses, a
//! checkpoint, metrics.jsonl, and a validation report per cell type.
//!
//! Its own test binary: the engine re-seeds libtorch's global generator every step, so a run in
//! parallel with the bit-exact resume tests of `tests/it` would make them differ.

use cellseg_core::ImageSize;
use cellseg_core::testing::torch_lock;
use cellseg_data::Batch;
use cellseg_data::{AugmentConfig, synthetic};
use cellseg_postproc::PostprocConfig;
use cellseg_train::detector::{
    Arch, Detector, DetectorValidator, ModelCard, SIZE_DIVISOR, SampleData,
};
use cellseg_train::{
    EvalConfig, EvalRecord, MODEL_CARD_FILE, Start, StepStats, TrainConfig, TrainObserver, Trainer,
};

#[derive(Default)]
struct Collect {
    steps: Vec<StepStats>,
    evals: Vec<EvalRecord>,
}

impl TrainObserver for Collect {
    fn on_step(&mut self, s: &StepStats) {
        self.steps.push(s.clone());
    }
    fn on_eval(&mut self, r: &EvalRecord) {
        self.evals.push(r.clone());
    }
}

#[test]
fn ten_steps_on_synthetic_cells_write_a_checkpoint_and_a_log() {
    let _torch = torch_lock();
    tch::manual_seed(0);
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let size = ImageSize::new(96, 96);
    let model_cfg = crate::micro_detector(Arch::MaskRcnn);
    let mut model = Detector::from_config(tch::Device::Cpu, &model_cfg).unwrap();
    let mut aug = AugmentConfig::default();
    aug.crop.height = 64;
    aug.crop.width = 64;
    let mut data = SampleData::new(synthetic::samples(4, size, 7), aug).unwrap();
    let mut val = DetectorValidator::new(
        synthetic::samples(3, size, 8),
        PostprocConfig { min_size: [0; 3], ..PostprocConfig::default() },
    )
    .unwrap();
    let run_dir = dir.path().join("run");
    let cfg = TrainConfig {
        run_dir: run_dir.clone(),
        epochs: 5,
        batch_size: 2,
        eval: EvalConfig { first_epoch: 5, every_epochs: 5 },
        ..TrainConfig::default()
    };
    let mut obs = Collect::default();
    let report = Trainer::new(cfg)
        .unwrap()
        .fit(&mut model, &mut data, Some(&mut val), &mut obs, Start::Fresh)
        .unwrap();
    // 4 images in batches of 2: 2 steps per epoch.
    assert_eq!(report.steps, 10);
    assert_eq!(report.nonfinite_steps, 0);
    assert_eq!(obs.steps.len(), 10);
    for s in &obs.steps {
        assert!(s.loss.is_finite(), "step {}: {}", s.step, s.loss);
        for name in ["loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"] {
            let v = s.losses.get(name).unwrap_or_else(|| panic!("{name} missing: {:?}", s.losses));
            assert!(v.is_finite(), "step {}: {name} = {v}", s.step);
        }
    }
    let ckpt = report.last_checkpoint.expect("a checkpoint");
    assert!(ckpt.is_dir(), "{}", ckpt.display());
    assert!(std::fs::read_dir(&ckpt).unwrap().count() > 0);
    let log = std::fs::read_to_string(&report.metrics_log).unwrap();
    assert!(log.lines().count() >= 10, "{log}");
    assert_eq!(obs.evals.len(), 1);
    let r = &obs.evals[0].report;
    assert!((0.0..=1.0).contains(&r.score), "{r:?}");
    assert_eq!(r.per_type.len(), 3, "{r:?}");

    // The run folder describes the model: rebuilt from it alone, it predicts exactly what the
    // in-process model predicts (boxes, scores, labels, soft mask bytes).
    let card = ModelCard::read(&run_dir.join(MODEL_CARD_FILE)).unwrap();
    assert_eq!(card.model, model_cfg);
    assert_eq!(card.class_names, ["shsy5y", "astro", "cort"]);
    let rebuilt = Detector::from_run(tch::Device::Cpu, &run_dir).unwrap();
    let from_ckpt = Detector::from_run(tch::Device::Cpu, &ckpt).unwrap();
    let batch = Batch::collate(synthetic::samples(2, size, 9), SIZE_DIVISOR);
    let want = model.predict(&batch).unwrap();
    assert_eq!(rebuilt.predict(&batch).unwrap(), want);
    assert_eq!(from_ckpt.predict(&batch).unwrap(), want);
    assert!(want.iter().any(|d| !d.boxes.is_empty()), "nothing detected: the comparison is empty");

    // A model card that does not match the weights, or none at all: typed errors naming them.
    let card_path = run_dir.join(MODEL_CARD_FILE);
    let text = std::fs::read_to_string(&card_path).unwrap();
    std::fs::write(&card_path, text.replace("fc_channels = 32", "fc_channels = 48")).unwrap();
    let err = Detector::from_run(tch::Device::Cpu, &run_dir).unwrap_err().to_string();
    assert!(err.contains("roi_head.bbox_head.shared_fcs.0.weight"), "{err}");
    std::fs::write(&card_path, text.replace("format = 1", "format = 7")).unwrap();
    let err = Detector::from_run(tch::Device::Cpu, &run_dir).unwrap_err().to_string();
    assert!(err.contains("model.toml") && err.contains("format 7"), "{err}");
    std::fs::remove_file(&card_path).unwrap();
    let err = Detector::from_run(tch::Device::Cpu, &run_dir).unwrap_err().to_string();
    assert!(err.contains("no model.toml"), "{err}");
}
