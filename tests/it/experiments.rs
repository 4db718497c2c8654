//! The seed's workflow as a chain, with a small step count: `train_maskrcnn --all-folds` (the
//! examples' own `run`), cross-validation into one OOF, tweaking on it, and every refusal the
//! workflow owes its user.
//!
//! 1. Experiment A trains its 5 folds in this process; each fold's `config.resolved.toml` loads
//!    back as the config it was made with (its fold, data, augmentations, model).
//! 2. Experiment B trains the same in a child process (this test binary re-run on
//!    [`child_trains_all_folds`]), killed with SIGKILL once fold 2 has a checkpoint, then run
//!    again here: folds 0–1 keep their checkpoint bytes, fold 2 resumes, 3–4 train, and every
//!    fold's final weights equal A's (exact resume, per-fold seeding).
//! 3. Cross-validation of A and of B gives the same OOF bytes; the OOF holds every training image
//!    once, fold by fold; one image predicted by hand with its fold's model gives the OOF's soft
//!    detections; the CV equals `evaluate` on the post-processed OOF; the tuned CV that
//!    `tweak_thresholds` prints (`pipeline_score`) equals the CV with the tuned post-processing
//!    written to TOML and read back (to 1e-12; the two sum the same image scores in the same
//!    order, from masks and from RLEs).
//! 4. Refused, by name: another split against an existing `folds.csv`, `--fold 7` with 5 folds, a
//!    second fold trained into an existing run folder (the held-out trap: `heldout/` unchanged),
//!    an experiment with a missing fold, a broken checkpoint in the last fold (before any output), two experiments with different splits, a fold run
//!    trained on another split (its held-out images are not its fold's), an ensemble TOML
//!    naming an unknown experiment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cellseg::core::ImageSize;
use cellseg::core::testing::torch_lock;
use cellseg::cross_validation::{CrossValidation, CvReport, Error as CvError};
use cellseg::data::folds::FoldSplit;
use cellseg::data::synthetic::{SartoriusLayout, generate_sartorius_layout};
use cellseg::ensemble::EnsembleConfig;
use cellseg::experiment::{Experiment, FoldState};
use cellseg::inference::{Inference, Members, ensemble_config};
use cellseg::metrics::report::{competition_from_files, load_truth_csv};
use cellseg::postproc::oof::read_oof;
use cellseg::postproc::tweak::{TweakGrid, images_with_truth, pipeline_score, tweak};
use cellseg::postproc::{Pipeline, PostprocConfig};
use cellseg::train::checkpoint::MODEL_FILE;
use cellseg::train::detector::Arch;
use tch::Device;

use crate::{copy_dir, run};

/// Set in the child's environment: its arguments, one per line.
const CHILD_ENV: &str = "CELLSEG_EXPERIMENT_CHILD";

/// The test layer over `configs/demo.toml`: one thread (the same bits in the child and here),
/// 64×64 crops, 4 epochs of 3 steps per fold, a checkpoint per epoch.
const CONFIG: &str = "threads = 1\noverlays = 0\n\
    [augment.crop]\nheight = 64\nwidth = 64\n\
    [data]\nfolds = 5\nrepeat = 1\n\
    [train]\nepochs = 4\n\
    [train.eval]\nfirst_epoch = 4\nevery_epochs = 4\n\
    [train.checkpoint]\nevery_epochs = 1\nkeep_last = 1\n";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The arguments of `train_maskrcnn` on `data` into the experiment `exp`, then `extra`.
fn train_args(config: &Path, data: &Path, exp: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["train_maskrcnn".into(), "--config".into()];
    v.push(repo().join("configs/demo.toml").into());
    v.extend(["--config".into(), config.into(), "--data".into(), data.into()]);
    v.extend(["--run-dir".into(), exp.into()]);
    v.extend(extra.iter().map(OsString::from));
    v
}

/// `train_maskrcnn` with `argv`, in this process; the caller holds [`torch_lock`].
fn train(argv: Vec<OsString>) -> anyhow::Result<()> {
    run::run_from(Arch::MaskRcnn, Some(argv))
}

/// The model files of a run folder's checkpoints, by path relative to the run folder.
fn models(run: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let ckpts = run.join("checkpoints");
    for e in std::fs::read_dir(&ckpts).unwrap() {
        let p = e.unwrap().path().join(MODEL_FILE);
        if p.is_file() {
            out.insert(p.strip_prefix(run).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// Thresholds a 12-step model passes, so that the OOF holds detections.
fn ensemble() -> EnsembleConfig {
    let mut c = EnsembleConfig::seed_single();
    c.proposals.score_thr = [0.0; 3];
    c.boxes.score_thr = [0.05; 3];
    c
}

fn postproc() -> PostprocConfig {
    PostprocConfig { min_size: [0; 3], ..PostprocConfig::default() }
}

fn cross_validate(
    experiments: &[&Path],
    data: &Path,
    post: &PostprocConfig,
    oof: Option<PathBuf>,
    submission: Option<PathBuf>,
) -> Result<CvReport, CvError> {
    let cv = CrossValidation {
        experiments: experiments.iter().map(|p| p.to_path_buf()).collect(),
        images: data.join("train"),
        truth: data.join("train.csv"),
        ensemble: ensemble(),
        oof,
        submission,
    };
    cv.run(&Pipeline::new(post.clone()).unwrap(), Device::Cpu, &mut |_, _| {})
}

/// Set in a child's environment: `<experiment>|<data>|<output folder>|<threads>`.
const SHARD_CHILD_ENV: &str = "CELLSEG_CV_SHARD_CHILD";

/// One rank of the two that cross-validate the experiment of [`SHARD_CHILD_ENV`] together
/// (`oof_dp.bin`, `oof_dp.csv`).
#[test]
#[ignore = "run by experiments_train_cross_validate_tweak_and_resume in a child process"]
fn child_cross_validates_its_share() {
    let settings = std::env::var(SHARD_CHILD_ENV).expect("a child of the experiments test");
    let f: Vec<&str> = settings.split('|').collect();
    let (exp, data, out) = (PathBuf::from(f[0]), PathBuf::from(f[1]), PathBuf::from(f[2]));
    tch::set_num_threads(f[3].parse().unwrap());
    let group = cellseg::dist::ProcessGroup::from_env().unwrap();
    let cv = CrossValidation {
        experiments: vec![exp],
        images: data.join("train"),
        truth: data.join("train.csv"),
        ensemble: ensemble(),
        oof: Some(out.join("oof_dp.bin")),
        submission: Some(out.join("oof_dp.csv")),
    };
    let pipeline = Pipeline::new(postproc()).unwrap();
    let report = cv.run_sharded(&pipeline, Device::Cpu, &mut |_, _| {}, &group).unwrap();
    assert_eq!(report.is_some(), group.rank() == 0);
    println!("CHILD OK rank {}", group.rank());
}

/// The child of step 2: `train_maskrcnn` with the arguments of [`CHILD_ENV`], until killed.
#[test]
#[ignore = "run by experiments_train_cross_validate_tweak_and_resume in a child process"]
fn child_trains_all_folds() {
    let Some(args) = std::env::var_os(CHILD_ENV) else { return };
    let argv: Vec<OsString> =
        args.to_string_lossy().lines().map(OsString::from).collect::<Vec<_>>();
    train(argv).unwrap();
}

#[test]
fn experiments_train_cross_validate_tweak_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let layout = SartoriusLayout {
        images: 15,
        test_images: 0,
        size: ImageSize::new(96, 96),
        seed: 5,
        real: Vec::new(),
    };
    generate_sartorius_layout(&data, &layout).unwrap();
    let config = dir.path().join("test.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));

    // 1. A, uninterrupted.
    {
        let _torch = torch_lock();
        train(train_args(&config, &data, &a, &["--all-folds"])).unwrap();
    }
    let exp_a = Experiment::open(&a).unwrap();
    assert_eq!(exp_a.split.n_folds, 5);
    assert!((0..5).all(|k| exp_a.fold_state(k) == FoldState::Finished));
    // Each run folder records the whole config it was made with, loadable as a config.
    for k in [0, 3] {
        let resolved = exp_a.fold_dir(k).join("config.resolved.toml");
        let cfg = crate::setup::load_configs(&[resolved.as_path()]).unwrap();
        assert_eq!((cfg.data.fold, cfg.data.folds), (k, 5));
        assert_eq!((cfg.augment.crop.height, cfg.threads), (64, 1));
        assert_eq!(cfg.train.run_dir, exp_a.fold_dir(k));
        let text = std::fs::read_to_string(&resolved).unwrap();
        assert!(
            text.contains("[model") && text.contains("[postproc]") && text.contains("# data: ")
        );
    }

    // 2. B, killed in fold 2, then run again.
    let argv = train_args(&config, &data, &b, &["--all-folds"]);
    let lines: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["experiments::child_trains_all_folds", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, lines.join("\n"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let latest = b.join("fold2").join("latest.json");
    let t0 = Instant::now();
    while !latest.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited ({status}) before fold 2 wrote a checkpoint");
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "the child is too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let exp_b = Experiment::open(&b).unwrap();
    let states: Vec<FoldState> = (0..5).map(|k| exp_b.fold_state(k)).collect();
    assert_eq!(
        states,
        [
            FoldState::Finished,
            FoldState::Finished,
            FoldState::Interrupted,
            FoldState::New,
            FoldState::New
        ],
        "killed in fold 2 (if fold 2 finished, the child outran the poll)"
    );
    let before: Vec<_> = (0..2).map(|k| models(&exp_b.fold_dir(k))).collect();
    {
        let _torch = torch_lock();
        train(train_args(&config, &data, &b, &["--all-folds"])).unwrap();
    }
    for (k, was) in before.iter().enumerate() {
        assert_eq!(&models(&exp_b.fold_dir(k)), was, "fold {k} untouched");
    }
    assert!((0..5).all(|k| exp_b.fold_state(k) == FoldState::Finished));
    let resumed = std::fs::read_to_string(b.join("fold2/metrics.jsonl")).unwrap();
    for k in 0..5 {
        assert_eq!(models(&exp_a.fold_dir(k)), models(&exp_b.fold_dir(k)), "fold {k}: A = B");
    }
    assert!(!resumed.is_empty());

    // 3. Cross-validation.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let _torch = torch_lock();
    let post = postproc();
    let ra = cross_validate(
        &[&a],
        &data,
        &post,
        Some(out.join("oof_a.bin")),
        Some(out.join("oof_a.csv")),
    )
    .unwrap();
    cross_validate(&[&b], &data, &post, Some(out.join("oof_b.bin")), None).unwrap();
    let oof_bytes = std::fs::read(out.join("oof_a.bin")).unwrap();
    // `cross_validate --nproc-per-node 2`: two ranks (torchrun's variables) write the same OOF
    // and submission bytes, and no part file.
    let settings =
        format!("{}|{}|{}|{}", a.display(), data.display(), out.display(), tch::get_num_threads());
    crate::run_two_ranks(
        "experiments::child_cross_validates_its_share",
        (SHARD_CHILD_ENV, &settings),
    );
    assert_eq!(oof_bytes, std::fs::read(out.join("oof_dp.bin")).unwrap(), "2 ranks: other OOF");
    assert_eq!(
        std::fs::read(out.join("oof_a.csv")).unwrap(),
        std::fs::read(out.join("oof_dp.csv")).unwrap(),
        "2 ranks: another submission"
    );
    let parts: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".rank"))
        .collect();
    assert!(parts.is_empty(), "part files left: {parts:?}");
    assert_eq!(oof_bytes, std::fs::read(out.join("oof_b.bin")).unwrap(), "A and B: same OOF bytes");
    let oof = read_oof(out.join("oof_a.bin")).unwrap();
    let ids: Vec<&str> = oof.iter().map(|(id, _)| id.as_str()).collect();
    let fold_major: Vec<&str> = (0..5).flat_map(|k| exp_a.split.fold_ids(k)).collect();
    assert_eq!(ids, fold_major, "every training image once, fold by fold");
    assert_eq!(ids.len(), 15);
    assert!(oof.iter().any(|(_, d)| !d.masks.is_empty()), "the OOF holds detections");
    assert_eq!(ra.per_fold.len(), 5);
    assert_eq!(ra.per_fold.iter().map(|f| f.images.len()).sum::<usize>(), 15);

    // One image of fold 2, predicted by hand with fold 2's model.
    let id = exp_a.split.fold_ids(2)[0];
    let image =
        cellseg::data::raster::read_image(&data.join("train").join(format!("{id}.png"))).unwrap();
    let by_hand = |fold: usize| {
        let members = Members::load(&[exp_a.fold_dir(fold)], Device::Cpu).unwrap();
        let ens = members.ensemble(ensemble()).unwrap();
        let pipeline = Pipeline::new(post.clone()).unwrap();
        let input = &members.card().unwrap().input;
        let inf = Inference { ensemble: &ens, input, pipeline: &pipeline, device: Device::Cpu };
        inf.predict(&image).unwrap()
    };
    let in_oof = &oof.iter().find(|(i, _)| i == id).unwrap().1;
    assert_eq!(&by_hand(2), in_oof, "image {id} predicted by its fold's model");
    assert_ne!(&by_hand(0), in_oof, "fold 0's model predicts image {id} otherwise");

    // The CV is `evaluate` on the post-processed OOF.
    let evaluated =
        competition_from_files(&data.join("train.csv"), &out.join("oof_a.csv")).unwrap();
    assert_eq!(evaluated.overall, ra.overall.overall);
    assert_eq!(evaluated.per_cell_type, ra.overall.per_cell_type);

    // Tweaking on the OOF: the tuned CV reproduces through a TOML file and cross-validation.
    let truth = load_truth_csv(&data.join("train.csv")).unwrap();
    let paired =
        images_with_truth(oof, &truth, &out.join("oof_a.bin"), &data.join("train.csv")).unwrap();
    assert!(paired.ignored_truth.is_empty());
    let before_cv = pipeline_score(&paired.images, &post).unwrap();
    assert!(
        (before_cv - ra.overall.overall).abs() < 1e-12,
        "{before_cv} vs {}",
        ra.overall.overall
    );
    let grid = TweakGrid {
        mask_thresholds: vec![0.4, 0.5],
        nms_thresholds: vec![0.3, 0.5],
        min_sizes: vec![0, 10],
        confidence_thresholds: vec![0.05, 0.3, 0.6],
        ..TweakGrid::default()
    };
    let result = tweak(&paired.images, &grid, &|| {}).unwrap();
    let tuned = result.postproc_config(&post);
    let after = pipeline_score(&paired.images, &tuned).unwrap();
    let tuned_path = out.join("tuned.toml");
    tuned.save(&tuned_path, "tuned by the experiments test").unwrap();
    let reloaded = PostprocConfig::load(&tuned_path).unwrap();
    let rt = cross_validate(&[&a], &data, &reloaded, None, None).unwrap();
    assert!((rt.overall.overall - after).abs() < 1e-12, "{} vs {after}", rt.overall.overall);
    println!(
        "CV {:.5}, tuned {:.5} (tweak's grid estimate {:.5})",
        ra.overall.overall, after, result.cv
    );

    // 4. Refusals.
    let err = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());
    // Another split against the recorded one; nothing trained.
    let by_id = dir.path().join("by_id.toml");
    std::fs::write(&by_id, "[data]\ngroup_by = \"id\"\n").unwrap();
    let mut argv = train_args(&config, &data, &a, &["--all-folds"]);
    argv.extend(["--config".into(), by_id.clone().into()]);
    let e = err(train(argv));
    assert!(e.contains("folds.csv") && e.contains("first differing id"), "{e}");
    // --fold 7 of 5.
    let e = err(train(train_args(&config, &data, &a, &["--fold", "7"])));
    assert!(e.contains("fold 7 does not exist") && e.contains("5 folds"), "{e}");
    // The held-out trap: fold 1 trained into fold 0's run folder.
    let fold1 = dir.path().join("fold1.toml");
    std::fs::write(&fold1, "[data]\nfold = 1\n").unwrap();
    let heldout = std::fs::read(a.join("fold0/heldout/truth.csv")).unwrap();
    for resume in [false, true] {
        let mut argv =
            train_args(&config, &data, &a.join("fold0"), if resume { &["--resume"] } else { &[] });
        argv.extend(["--config".into(), fold1.clone().into()]);
        let e = err(train(argv));
        assert!(e.contains("heldout/") && e.contains("unchanged"), "resume {resume}: {e}");
        assert_eq!(std::fs::read(a.join("fold0/heldout/truth.csv")).unwrap(), heldout);
    }
    // An experiment with a missing fold.
    let missing = dir.path().join("missing");
    copy_dir(&a, &missing);
    std::fs::remove_dir_all(missing.join("fold3")).unwrap();
    let e = cross_validate(&[&a, &missing], &data, &post, None, None).unwrap_err().to_string();
    assert!(e.contains("fold 3 is not trained"), "{e}");
    // A broken checkpoint in the last fold: refused before anything is predicted or written.
    let broken = dir.path().join("broken");
    copy_dir(&a, &broken);
    for (path, _) in models(&broken.join("fold4")) {
        std::fs::write(broken.join("fold4").join(path), b"not a safetensors file").unwrap();
    }
    let oof_broken = out.join("oof_broken.bin");
    let e = cross_validate(&[&broken], &data, &post, Some(oof_broken.clone()), None).unwrap_err();
    assert!(e.to_string().contains("fold4"), "{e}");
    assert!(
        !oof_broken.exists()
            && std::fs::read_dir(&out)
                .unwrap()
                .all(|f| { !f.unwrap().file_name().to_string_lossy().contains("oof_broken") })
    );
    // Two experiments with different splits.
    let other = dir.path().join("other");
    let s = &exp_a.split;
    let mut folds = s.folds.clone();
    let (i, j) = (0..15)
        .flat_map(|i| (0..15).map(move |j| (i, j)))
        .find(|&(i, j)| {
            folds[i] != folds[j] && s.fold_ids(folds[i]).len() > 1 && s.fold_ids(folds[j]).len() > 1
        })
        .unwrap();
    folds.swap(i, j);
    let swapped = FoldSplit::new(s.ids.clone(), s.groups.clone(), folds, 5).unwrap();
    Experiment::record(&other, &swapped).unwrap();
    let e = cross_validate(&[&a, &other], &data, &post, None, None).unwrap_err().to_string();
    assert!(e.contains("split differs") && e.contains("first differing id"), "{e}");
    // A fold run trained on another split: its held-out images are not its fold's.
    let foreign = dir.path().join("foreign");
    copy_dir(&a, &foreign);
    swapped.write(&foreign.join("folds.csv")).unwrap();
    let e = cross_validate(&[&foreign], &data, &post, None, None).unwrap_err().to_string();
    assert!(e.contains("trained on another split"), "{e}");
    // An ensemble TOML naming an unknown experiment.
    let ens = dir.path().join("ensemble.toml");
    std::fs::write(&ens, "[usage]\ncls = [\"a\", \"nope\"]\n").unwrap();
    let names = vec![("a".to_string(), vec![0, 1]), ("b".to_string(), vec![2])];
    let e = ensemble_config(Some(&ens), &names, 3, false).unwrap_err().to_string();
    assert!(e.contains("`nope`") && e.contains("a, b"), "{e}");
    std::fs::write(&ens, "[usage]\ncls = [\"b\"]\nastro = [\"a\", 2]\n").unwrap();
    let c = ensemble_config(Some(&ens), &names, 3, false).unwrap();
    let u = c.usage.unwrap();
    assert_eq!((u.cls, u.astro), (Some(vec![2]), Some(vec![0, 1, 2])));
}
