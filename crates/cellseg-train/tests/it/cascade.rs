//! Cascade Mask R-CNN and HTC through the same adapter, engine, validator and run folders as
//! Mask R-CNN, and their bad inputs: a Mask R-CNN checkpoint loaded into a cascade, a stage-count
//! mismatch, HTC training data without masks.
//!
//! Its own test binary: the engine re-seeds libtorch's global generator every step.

use cellseg_core::testing::torch_lock;
use cellseg_core::{CroppedMask, ImageSize, Instances};
use cellseg_data::{AugmentConfig, Batch, synthetic};
use cellseg_postproc::PostprocConfig;
use cellseg_train::detector::{
    Arch, Detector, DetectorConfig, DetectorValidator, SIZE_DIVISOR, SampleData,
};
use cellseg_train::pretrained::{PretrainedConfig, load_pretrained};
use cellseg_train::{EvalConfig, Start, TrainConfig, TrainableModel, Trainer};

#[test]
fn cascade_and_htc_train_through_the_engine_and_rebuild_from_their_run_folders() {
    let _torch = torch_lock();
    tch::set_num_threads(2);
    let size = ImageSize::new(96, 96);
    for arch in [Arch::Cascade, Arch::Htc] {
        tch::manual_seed(0);
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::micro_detector(arch);
        let mut model = Detector::from_config(tch::Device::Cpu, &cfg).unwrap();
        let mut aug = AugmentConfig::default();
        aug.crop.height = 64;
        aug.crop.width = 64;
        let mut data = SampleData::new(synthetic::samples(4, size, 7), aug).unwrap();
        let mut val = DetectorValidator::new(
            synthetic::samples(2, size, 8),
            PostprocConfig { min_size: [0; 3], ..PostprocConfig::default() },
        )
        .unwrap();
        let run_dir = dir.path().join("run");
        let train = TrainConfig {
            run_dir: run_dir.clone(),
            epochs: 3,
            batch_size: 2,
            eval: EvalConfig { first_epoch: 3, every_epochs: 3 },
            ..TrainConfig::default()
        };
        let report = Trainer::new(train)
            .unwrap()
            .fit(&mut model, &mut data, Some(&mut val), &mut (), Start::Fresh)
            .unwrap();
        assert_eq!((report.steps, report.nonfinite_steps), (6, 0), "{arch:?}");
        let batch = Batch::collate(synthetic::samples(2, size, 9), SIZE_DIVISOR);
        // Rebuilt from its run folder alone, it predicts what the in-process model predicts.
        let rebuilt = Detector::from_run(tch::Device::Cpu, &run_dir).unwrap();
        assert_eq!(rebuilt.model().arch(), arch);
        let want = model.predict(&batch).unwrap();
        assert!(want.iter().any(|d| !d.boxes.is_empty()), "{arch:?}: nothing detected");
        // (Not assert_eq: the Debug of soft masks is megabytes.)
        assert!(rebuilt.predict(&batch).unwrap() == want, "{arch:?}: predictions differ");
        // Every stage's losses, finite, in mmdet's names (after the predictions: a training
        // forward updates the trunk's BatchNorm statistics).
        let losses = model.losses(&batch).unwrap();
        let names: Vec<&str> = losses.iter().map(|(n, _)| n).collect();
        let mut want = vec!["loss_rpn_cls", "loss_rpn_bbox"];
        if arch == Arch::Htc {
            want.push("loss_semantic_seg");
        }
        let stages = [
            "s0.loss_cls",
            "s0.loss_bbox",
            "s0.loss_mask",
            "s1.loss_cls",
            "s1.loss_bbox",
            "s1.loss_mask",
            "s2.loss_cls",
            "s2.loss_bbox",
            "s2.loss_mask",
        ];
        want.extend(stages);
        assert_eq!(names, want, "{arch:?}");
        for (n, t) in losses.iter() {
            assert!(f64::try_from(t).unwrap().is_finite(), "{arch:?} {n}");
        }
    }
}

/// The weights of a fresh `cfg` model, saved to `dir/<name>.safetensors`.
fn saved(cfg: &DetectorConfig, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let model = Detector::from_config(tch::Device::Cpu, cfg).unwrap();
    let path = dir.join(format!("{name}.safetensors"));
    model.var_store().save(&path).unwrap();
    path
}

#[test]
fn a_mask_rcnn_checkpoint_loaded_into_a_cascade_names_the_keys() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = saved(&crate::micro_detector(Arch::MaskRcnn), dir.path(), "maskrcnn");
    let cascade =
        Detector::from_config(tch::Device::Cpu, &crate::micro_detector(Arch::Cascade)).unwrap();
    let err = load_pretrained(cascade.var_store(), &ckpt, &PretrainedConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("maskrcnn.safetensors"), "{err}");
    assert!(err.contains("missing keys [roi_head.bbox_head.0.shared_fcs.0.bias"), "{err}");
    assert!(err.contains("unexpected keys [roi_head.bbox_head.shared_fcs.0.bias"), "{err}");
}

#[test]
fn a_stage_count_mismatch_names_the_missing_stage() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut two = crate::micro_detector(Arch::Cascade);
    two.heads.cascade.stages.truncate(2);
    let ckpt = saved(&two, dir.path(), "two_stages");
    let three =
        Detector::from_config(tch::Device::Cpu, &crate::micro_detector(Arch::Cascade)).unwrap();
    let err = load_pretrained(three.var_store(), &ckpt, &PretrainedConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing keys [roi_head.bbox_head.2.shared_fcs.0.bias"), "{err}");
    assert!(err.contains("unexpected keys [none]"), "{err}");
    // The other way round: the checkpoint's third stage is unexpected.
    let ckpt = saved(&crate::micro_detector(Arch::Cascade), dir.path(), "three_stages");
    let two = Detector::from_config(tch::Device::Cpu, &two).unwrap();
    let err = load_pretrained(two.var_store(), &ckpt, &PretrainedConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected keys [roi_head.bbox_head.2.shared_fcs.0.bias"), "{err}");
}

#[test]
fn htc_training_data_without_masks_is_an_error_naming_the_image() {
    let _torch = torch_lock();
    let size = ImageSize::new(64, 64);
    let mut samples = synthetic::samples(3, size, 3);
    // The second image keeps its boxes but loses every mask pixel.
    let inst = &samples[1].instances;
    let empty = vec![CroppedMask::empty(size); inst.len()];
    samples[1].instances =
        Instances::new(size, inst.boxes.clone(), inst.labels.clone(), empty).unwrap();
    let id = samples[1].id.clone();
    let data = SampleData::new(samples, AugmentConfig::default()).unwrap();
    let htc = Detector::from_config(tch::Device::Cpu, &crate::micro_detector(Arch::Htc)).unwrap();
    let err = htc.check_training_data(&data).unwrap_err().to_string();
    assert!(
        err.contains(&format!("training image `{id}`")) && err.contains("no mask pixel"),
        "{err}"
    );
    // A cascade does not need the masks' union.
    let cascade =
        Detector::from_config(tch::Device::Cpu, &crate::micro_detector(Arch::Cascade)).unwrap();
    cascade.check_training_data(&data).unwrap();
    // A batch whose only cell lost its mask to a crop still trains (its target is background).
    let mut one = synthetic::samples(1, size, 4);
    let inst = &one[0].instances;
    one[0].instances = Instances::new(
        size,
        inst.boxes[..1].to_vec(),
        inst.labels[..1].to_vec(),
        vec![CroppedMask::empty(size)],
    )
    .unwrap();
    let mut htc = htc;
    assert!(htc.losses(&Batch::collate(one, SIZE_DIVISOR)).is_ok());
}

#[test]
fn pretrained_cascade_and_htc_reinitialise_the_class_layers_of_every_stage() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    for arch in [Arch::Cascade, Arch::Htc] {
        let ckpt = saved(&crate::micro_detector(arch), dir.path(), arch.name());
        let model = Detector::from_config(tch::Device::Cpu, &crate::micro_detector(arch)).unwrap();
        let report =
            load_pretrained(model.var_store(), &ckpt, &PretrainedConfig::default()).unwrap();
        let mut want: Vec<String> = (0..3)
            .flat_map(|i| {
                [
                    format!("roi_head.bbox_head.{i}.fc_cls.bias"),
                    format!("roi_head.bbox_head.{i}.fc_cls.weight"),
                    format!("roi_head.bbox_head.{i}.fc_reg.bias"),
                    format!("roi_head.bbox_head.{i}.fc_reg.weight"),
                    format!("roi_head.mask_head.{i}.conv_logits.bias"),
                    format!("roi_head.mask_head.{i}.conv_logits.weight"),
                ]
            })
            .collect();
        if arch == Arch::Htc {
            // The seed matches by substring, so HTC's semantic logits are re-initialised too.
            want.push("roi_head.semantic_head.conv_logits.bias".into());
            want.push("roi_head.semantic_head.conv_logits.weight".into());
        }
        want.sort();
        let mut got = report.reinitialised.clone();
        got.sort();
        assert_eq!(got, want, "{arch:?}");
        assert!(report.missing.is_empty() && report.unexpected.is_empty());
    }
}
