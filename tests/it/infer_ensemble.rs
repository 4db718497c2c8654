//! Inference from run folders (`cellseg::inference`, what `infer_ensemble` runs): a small Mask
//! R-CNN trained through the engine into a run folder, then predicted on held-out synthetic
//! images and on the real DSB2018 images of `tests/data`; the submission scores with the
//! `evaluate` example's function exactly as the in-run `--truth` metric; a two-member ensemble of
//! identical members equals one member; every bad input is refused by name before any output.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cellseg::core::ImageSize;
use cellseg::core::testing::torch_lock;
use cellseg::data::sartorius::write_annotated;
use cellseg::data::{AugmentConfig, Sample, Strictness, synthetic};
use cellseg::ensemble::EnsembleConfig;
use cellseg::inference::{
    Error, ImageFile, Inference, InferenceReport, Members, Outputs, list_images,
};
use cellseg::metrics::report::competition_from_files;
use cellseg::postproc::{Pipeline, PostprocConfig};
use cellseg::train::detector::{Detector, DetectorConfig, SampleData};
use cellseg::train::{Start, TrainConfig, Trainer};
use tch::Device;

use crate::copy_dir;

struct Trained {
    _dir: tempfile::TempDir,
    run: PathBuf,
    /// Held-out synthetic images (`images/`) and their truth (`truth.csv`).
    heldout: PathBuf,
}

/// A small 3-class Mask R-CNN trained for 200 steps on synthetic cells, once per test binary. The
/// caller holds [`torch_lock`].
fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        tch::manual_seed(0);
        let dir = tempfile::tempdir().unwrap();
        let cfg = DetectorConfig::tiny(3);
        let mut model = Detector::from_config(Device::Cpu, &cfg).unwrap();
        let mut aug = AugmentConfig::default();
        aug.crop.height = 96;
        aug.crop.width = 96;
        let mut data =
            SampleData::new(synthetic::samples(32, ImageSize::new(128, 128), 11), aug).unwrap();
        let run = dir.path().join("run");
        let toml = format!(
            "run_dir = {run:?}\nseed = 0\nepochs = 25\nbatch_size = 4\n\
             [optimizer]\nlr = 2e-3\nclip_grad_norm = 10.0\n\
             [schedule]\nkind = \"cosine\"\nwarmup_prop = 0.05\nhorizon = \"steps\"\n\
             [loss]\ndecay = false\n[checkpoint]\nevery_epochs = 25\nkeep_last = 1\n"
        );
        let tc: TrainConfig =
            cellseg::core::config::parse_toml(&toml, "infer_ensemble.rs").unwrap();
        Trainer::new(tc).unwrap().fit(&mut model, &mut data, None, &mut (), Start::Fresh).unwrap();
        let heldout = dir.path().join("heldout");
        let val = synthetic::samples(6, ImageSize::new(128, 160), 1_000_011);
        write_annotated(&heldout.join("truth.csv"), &heldout.join("images"), &val, majority)
            .unwrap();
        Trained { _dir: dir, run, heldout }
    })
}

fn majority(s: &Sample) -> String {
    match cellseg::postproc::vote::cell_type_vote(&s.instances.labels) {
        Some(Ok(t)) => t.name().to_string(),
        _ => "unknown".into(),
    }
}

fn postproc() -> Pipeline {
    Pipeline::new(PostprocConfig { min_size: [0; 3], ..PostprocConfig::default() }).unwrap()
}

/// The seed's ENS ensemble with thresholds a 200-step model passes.
fn ens_config() -> EnsembleConfig {
    let mut c = EnsembleConfig::default();
    c.proposals.score_thr = [0.5; 3];
    c
}

fn infer(
    members: &Members,
    cfg: EnsembleConfig,
    images: &[ImageFile],
    outputs: &Outputs,
) -> Result<InferenceReport, Error> {
    let ensemble = members.ensemble(cfg)?;
    let pipeline = postproc();
    let input = &members.card().unwrap().input;
    let inf = Inference { ensemble: &ensemble, input, pipeline: &pipeline, device: Device::Cpu };
    inf.run(images, outputs, &mut |_| {})
}

#[test]
fn the_submission_scores_as_evaluate_scores_it_and_two_equal_members_are_one() {
    let _torch = torch_lock();
    let t = trained();
    let out = tempfile::tempdir().unwrap();
    let images = list_images(&t.heldout.join("images")).unwrap();
    assert_eq!(images.len(), 6);
    let members = Members::load(std::slice::from_ref(&t.run), Device::Cpu).unwrap();
    let r = infer(&members, ens_config(), &images, &outputs_in(out.path(), &t.heldout)).unwrap();
    let metric = r.metric.as_ref().unwrap();
    let evaluated =
        competition_from_files(&t.heldout.join("truth.csv"), &out.path().join("submission.csv"))
            .unwrap();
    println!("held-out synthetic: metric {:.4}\n{}", metric.overall, metric.table());
    assert_eq!(metric.overall, evaluated.overall);
    assert_eq!(metric.per_cell_type, evaluated.per_cell_type);
    assert!(metric.overall > 0.05, "the trained member predicts cells: {}", metric.overall);
    // Every image has its rows, the OOF file reads back, one overlay per image.
    let sub = std::fs::read_to_string(out.path().join("submission.csv")).unwrap();
    for f in &images {
        assert!(sub.lines().any(|l| l.starts_with(&format!("{},", f.id))), "{}", f.id);
    }
    let oof = cellseg::postproc::oof::read_oof(out.path().join("oof.bin")).unwrap();
    assert_eq!(oof.len(), 6);
    assert_eq!(std::fs::read_dir(out.path().join("overlays")).unwrap().count(), 6);

    // The same run folder twice: the mean of identical members is that member.
    let twice = Members::load(&[t.run.clone(), t.run.clone()], Device::Cpu).unwrap();
    let r2 = infer(&twice, ens_config(), &images, &Outputs::default()).unwrap();
    // Equal up to float rounding: a mean over 8 passes is summed in another order than over 4.
    for (a, b) in r2.processed.iter().zip(&r.processed) {
        let (da, db) = (&a.detections, &b.detections);
        assert_eq!((&a.image_id, &da.labels), (&b.image_id, &db.labels));
        assert!(da.scores.iter().zip(&db.scores).all(|(x, y)| (x - y).abs() < 1e-5));
        let coords = |d: &cellseg::core::Detections| -> Vec<f32> {
            d.boxes.iter().flat_map(|b| [b.x1, b.y1, b.x2, b.y2]).collect()
        };
        assert!(coords(da).iter().zip(&coords(db)).all(|(x, y)| (x - y).abs() < 1e-3));
        let same_masks = da.masks.iter().zip(&db.masks).filter(|(x, y)| x == y).count();
        assert!(
            same_masks + 1 >= da.masks.len(),
            "{} of {} masks equal",
            same_masks,
            da.masks.len()
        );
    }
}

#[test]
fn real_dsb2018_images_of_every_size_get_rows_and_a_score() {
    let _torch = torch_lock();
    let t = trained();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dsb2018_stage1_test");
    let ds = cellseg::data::dsb::DsbDataset::read(
        &root.join("stage1_solution_subset.csv"),
        &root.join("images"),
        Strictness::Strict,
    )
    .unwrap();
    let samples: Vec<Sample> =
        cellseg::data::sample::preload(&ds).unwrap().into_iter().take(8).collect();
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.csv");
    write_annotated(&truth, &dir.path().join("images"), &samples, |_| "nuclei".into()).unwrap();
    let images = list_images(&dir.path().join("images")).unwrap();
    let sizes: std::collections::BTreeSet<(usize, usize)> =
        images.iter().map(|f| (f.size.height, f.size.width)).collect();
    assert!(sizes.len() > 1, "the DSB images have several sizes");
    let members = Members::load(std::slice::from_ref(&t.run), Device::Cpu).unwrap();
    let mut cfg = ens_config();
    cfg.views = vec![cellseg::ensemble::View::Identity, cellseg::ensemble::View::Horizontal];
    let sub = dir.path().join("submission.csv");
    let outputs =
        Outputs { submission: Some(sub.clone()), truth: Some(truth.clone()), ..Outputs::default() };
    let r = infer(&members, cfg, &images, &outputs).unwrap();
    let evaluated = competition_from_files(&truth, &sub).unwrap();
    let m = r.metric.unwrap();
    println!("DSB2018 (trained on synthetic cells only): metric {:.4}", m.overall);
    assert_eq!(m.overall, evaluated.overall);
}

fn err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_inputs_are_named_and_leave_no_output() {
    let _torch = torch_lock();
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();

    // Run folders without a model card or a checkpoint.
    let no_card = tmp.path().join("no_card");
    copy_dir(&t.run, &no_card);
    std::fs::remove_file(no_card.join("model.toml")).unwrap();
    let e = err(Members::load(&[no_card], Device::Cpu));
    assert!(e.contains("no_card") && e.contains("model.toml"), "{e}");
    let no_ckpt = tmp.path().join("no_ckpt");
    copy_dir(&t.run, &no_ckpt);
    std::fs::remove_dir_all(no_ckpt.join("checkpoints")).unwrap();
    let e = err(Members::load(&[no_ckpt], Device::Cpu));
    assert!(e.contains("no_ckpt"), "{e}");
    // Another input normalisation is refused when the card is read, naming it.
    let other_norm = tmp.path().join("other_norm");
    copy_dir(&t.run, &other_norm);
    let card = std::fs::read_to_string(other_norm.join("model.toml")).unwrap();
    std::fs::write(other_norm.join("model.toml"), card.replace("pad_value = 130", "pad_value = 0"))
        .unwrap();
    let e = err(Members::load(&[t.run.clone(), other_norm], Device::Cpu));
    assert!(e.contains("other_norm") && e.contains("model.toml"), "{e}");
    // Other class names: both folders named.
    let other_names = tmp.path().join("other_names");
    copy_dir(&t.run, &other_names);
    let card = std::fs::read_to_string(other_names.join("model.toml")).unwrap();
    std::fs::write(other_names.join("model.toml"), card.replace("\"astro\"", "\"astrocyte\""))
        .unwrap();
    let e = err(Members::load(&[t.run.clone(), other_names], Device::Cpu));
    assert!(e.contains("other_names") && e.contains("class names"), "{e}");

    // Image folders: empty, a non-image file, a corrupt PNG header.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = err(list_images(&empty));
    assert!(e.contains("empty") && e.contains("no PNG or TIFF"), "{e}");
    let mixed = tmp.path().join("mixed");
    copy_dir(&t.heldout.join("images"), &mixed);
    std::fs::write(mixed.join("notes.txt"), "hello").unwrap();
    let e = err(list_images(&mixed));
    assert!(e.contains("notes.txt"), "{e}");
    std::fs::remove_file(mixed.join("notes.txt")).unwrap();
    std::fs::write(mixed.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let e = err(list_images(&mixed));
    assert!(e.contains("broken.png"), "{e}");

    // A PNG whose header reads but whose data is cut: the run stops naming it, and neither the
    // submission nor the OOF file (nor their temporary files) is left.
    std::fs::remove_file(mixed.join("broken.png")).unwrap();
    let first = list_images(&mixed).unwrap()[0].path.clone();
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(mixed.join("zz_cut.png"), &bytes[..bytes.len() / 2]).unwrap();
    let images = list_images(&mixed).unwrap();
    let members = Members::load(std::slice::from_ref(&t.run), Device::Cpu).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let outputs = Outputs {
        submission: Some(out.join("submission.csv")),
        oof: Some(out.join("oof.bin")),
        ..Outputs::default()
    };
    let e = err(infer(&members, ens_config(), &images, &outputs));
    assert!(e.contains("zz_cut.png"), "{e}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left in {}", out.display());

    // The first image fails post-processing (its overlay path is a folder): the run stops after
    // at most a few more images instead of predicting them all, names the image, and leaves no
    // output. Each prediction waits 300 ms so that the failure is seen.
    let images = list_images(&mixed).unwrap();
    let images = &images[..images.len() - 1]; // without zz_cut.png
    assert!(images.len() >= 6, "{} images", images.len());
    let overlays = tmp.path().join("overlays");
    std::fs::create_dir_all(overlays.join(format!("{}.png", images[0].id))).unwrap();
    let outputs = Outputs {
        submission: Some(out.join("submission.csv")),
        overlays: Some(overlays),
        ..Outputs::default()
    };
    let ensemble = members.ensemble(ens_config()).unwrap();
    let pipeline = postproc();
    let input = &members.card().unwrap().input;
    let inf = Inference { ensemble: &ensemble, input, pipeline: &pipeline, device: Device::Cpu };
    let mut predicted = 0;
    let e = err(inf.run(images, &outputs, &mut |n| {
        predicted = n;
        std::thread::sleep(std::time::Duration::from_millis(300));
    }));
    assert!(e.contains(&images[0].id), "{e}");
    assert!(predicted <= 3, "{predicted} of {} images predicted after the failure", images.len());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left in {}", out.display());

    // An output that cannot be written, and a truth that does not cover the images, fail
    // before the first prediction.
    let images = list_images(&t.heldout.join("images")).unwrap();
    let bad_out = Outputs {
        submission: Some(tmp.path().join("missing_dir/submission.csv")),
        ..Outputs::default()
    };
    let e = err(infer(&members, ens_config(), &images, &bad_out));
    assert!(e.contains("missing_dir/submission.csv"), "{e}");
    let truth = std::fs::read_to_string(t.heldout.join("truth.csv")).unwrap();
    let drop_id = &images[2].id;
    let partial: String = truth
        .lines()
        .filter(|l| !l.starts_with(drop_id.as_str()))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(tmp.path().join("partial.csv"), partial).unwrap();
    let bad_truth = Outputs { truth: Some(tmp.path().join("partial.csv")), ..Outputs::default() };
    let e = err(infer(&members, ens_config(), &images, &bad_truth));
    assert!(e.contains("partial.csv") && e.contains(drop_id.as_str()), "{e}");
}

/// Set in a child's environment: `<run folder>|<held-out folder>|<output folder>|<threads>`.
const SHARD_CHILD_ENV: &str = "CELLSEG_INFER_SHARD_CHILD";

fn outputs_in(dir: &Path, heldout: &Path) -> Outputs {
    Outputs {
        submission: Some(dir.join("submission.csv")),
        coco: Some(dir.join("results.json")),
        oof: Some(dir.join("oof.bin")),
        overlays: Some(dir.join("overlays")),
        truth: Some(heldout.join("truth.csv")),
    }
}

/// `infer_ensemble --nproc-per-node 2`'s inference: two ranks (this binary on
/// [`child_infers_its_share`], torchrun's variables set) write the submission, COCO results, OOF
/// file and overlays of one process, byte for byte, and leave no part file behind.
#[test]
fn two_ranks_write_the_outputs_of_one_process_byte_for_byte() {
    let _torch = torch_lock();
    let t = trained();
    let one = tempfile::tempdir().unwrap();
    let images = list_images(&t.heldout.join("images")).unwrap();
    let members = Members::load(std::slice::from_ref(&t.run), Device::Cpu).unwrap();
    let r = infer(&members, ens_config(), &images, &outputs_in(one.path(), &t.heldout)).unwrap();
    let two = tempfile::tempdir().unwrap();
    let settings = format!(
        "{}|{}|{}|{}",
        t.run.display(),
        t.heldout.display(),
        two.path().display(),
        tch::get_num_threads()
    );
    crate::run_two_ranks("infer_ensemble::child_infers_its_share", (SHARD_CHILD_ENV, &settings));
    assert!(r.metric.is_some());
    for f in ["submission.csv", "oof.bin", "results.json"] {
        let (a, b) = (one.path().join(f), two.path().join(f));
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{f} differs");
    }
    for f in &images {
        let name = format!("overlays/{}.png", f.id);
        let (a, b) = (one.path().join(&name), two.path().join(&name));
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{name} differs");
    }
    let mut left: Vec<String> = std::fs::read_dir(two.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["oof.bin", "overlays", "results.json", "submission.csv"]);
}

#[test]
#[ignore = "run by two_ranks_write_the_outputs_of_one_process_byte_for_byte in a child process"]
fn child_infers_its_share() {
    let settings = std::env::var(SHARD_CHILD_ENV).expect("a child of the sharded-inference test");
    let f: Vec<&str> = settings.split('|').collect();
    let (run, heldout, out) = (PathBuf::from(f[0]), PathBuf::from(f[1]), PathBuf::from(f[2]));
    tch::set_num_threads(f[3].parse().unwrap());
    let group = cellseg::dist::ProcessGroup::from_env().unwrap();
    let images = list_images(&heldout.join("images")).unwrap();
    let members = Members::load(std::slice::from_ref(&run), Device::Cpu).unwrap();
    let ensemble = members.ensemble(ens_config()).unwrap();
    let pipeline = postproc();
    let input = &members.card().unwrap().input;
    let inf = Inference { ensemble: &ensemble, input, pipeline: &pipeline, device: Device::Cpu };
    let report =
        inf.run_sharded(&images, &outputs_in(&out, &heldout), &mut |_| {}, &group).unwrap();
    assert_eq!(report.is_some(), group.rank() == 0);
    println!("CHILD OK rank {}", group.rank());
}
