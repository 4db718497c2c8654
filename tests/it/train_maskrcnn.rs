//! The config and data loading of `examples/train_maskrcnn.rs`: every committed config parses, the
//! seed-recipe config holds the seed's values, bad keys / types / folds name the key and the file,
//! and a data folder with a missing image names the image.

use crate::setup;

use std::path::{Path, PathBuf};

use cellseg::backbones::{BackboneKind, Norm};
use cellseg::train::detector::Trunk;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir()
            .join(format!("cellseg-train-maskrcnn-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_committed_config_loads() {
    for name in ["demo", "sartorius_r50", "train_maskrcnn"] {
        let path = repo().join("configs").join(format!("{name}.toml"));
        let cfg =
            setup::load_configs(&[path.as_path()]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        cfg.augment.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The seed's experiments: each trunk layer over each detector's recipe (README "Reproduce").
    let configs = repo().join("configs");
    for (name, kind) in [
        ("rx101_32x4d", BackboneKind::Resnext101_32x4d),
        ("rx101_64x4d", BackboneKind::Resnext101_64x4d),
        ("effb4", BackboneKind::TfEfficientnetB4),
        ("effb5", BackboneKind::TfEfficientnetB5),
        ("effb6", BackboneKind::TfEfficientnetB6),
    ] {
        let layer = configs.join(format!("experiments/{name}.toml"));
        for detector in [None, Some("train_cascade"), Some("train_htc")] {
            let mut paths = vec![configs.join("train_maskrcnn.toml")];
            paths.extend(detector.map(|d| configs.join(format!("{d}.toml"))));
            paths.push(layer.clone());
            let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            let cfg = setup::load_configs(&refs).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(cfg.model.backbone.kind, kind, "{name}");
            assert_eq!(cfg.model.backbone.stem_stride, 1, "{name}");
            let effnet = kind.efficientnet().is_some();
            let norm = if effnet { Norm::BatchNorm } else { Norm::BatchNormEval };
            assert_eq!(cfg.model.backbone.norm, norm, "{name}");
        }
    }
}

#[test]
fn the_seed_recipe_config_holds_the_seed_values() {
    let cfg = setup::load_configs(&[repo().join("configs/train_maskrcnn.toml").as_path()]).unwrap();
    assert_eq!(cfg.model.trunk, Trunk::Backbone);
    assert_eq!(cfg.model.backbone.kind, BackboneKind::Resnet50);
    assert_eq!(cfg.model.backbone.stem_stride, 1);
    assert_eq!(cfg.model.backbone.norm, Norm::BatchNormEval);
    assert_eq!(cfg.model.heads.num_classes, 8);
    assert_eq!(cfg.model.heads.rpn.anchors.strides, vec![2, 4, 8, 16, 32]);
    assert_eq!((cfg.augment.crop.height, cfg.augment.crop.width), (256, 256));
    assert_eq!(cfg.train.optimizer.lr, 2e-4);
    assert_eq!((cfg.train.epochs, cfg.train.batch_size), (40, 4));
    assert!(cfg.train.loss.decay);
    assert_eq!(cfg.train.seed, 42);
    assert_eq!((cfg.data.folds, cfg.data.group_by), (5, setup::GroupBy::PlateWell));
    assert_eq!(cfg.pretrained.reinit_patterns, ["fc_cls", "fc_reg", "conv_logits"]);
}

#[test]
fn bad_configs_name_the_key_and_the_file() {
    let dir = Scratch::new("bad");
    for (text, needle) in [
        ("[train]\nepoch = 3\n", "epoch"),
        ("[train]\nepochs = \"three\"\n", "epochs"),
        ("[model.backbone]\nkind = \"resnet51\"\n", "resnet51"),
        ("[data]\nfolds = 4\nfold = 4\n", "data.fold"),
        ("[data]\nrepeat = 0\n", "data.repeat"),
        ("[trian]\n", "trian"),
    ] {
        let path = dir.write("bad.toml", text);
        let msg = format!("{:#}", setup::load_configs(&[path.as_path()]).unwrap_err());
        assert!(msg.contains(needle), "{text:?}: {msg}");
        assert!(msg.contains("bad.toml"), "{text:?}: {msg}");
    }
}

#[test]
fn a_missing_image_is_named() {
    let real = repo().join("../shared/realdata/sartorius");
    if !real.exists() {
        // The skip of `cellseg_core::testing::realdata` (whose `testing` feature this crate does not
        // enable): a failure under CELLSEG_REQUIRE_REALDATA=1, else reported past cargo's capture.
        let required = std::env::var_os("CELLSEG_REQUIRE_REALDATA").is_some_and(|v| v == "1");
        assert!(!required, "{} is absent and CELLSEG_REQUIRE_REALDATA=1", real.display());
        let why = format!("SKIPPED a_missing_image_is_named: {} is absent\n", real.display());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), why.as_bytes());
        return;
    }
    let dir = Scratch::new("missing-image");
    let images = dir.0.join("train");
    std::fs::create_dir_all(&images).unwrap();
    for id in ["0030fd0e6378", "2d8810967b36", "f17f964687b3"] {
        let name = format!("{id}.png");
        std::fs::copy(real.join("train_images").join(&name), images.join(&name)).unwrap();
    }
    std::fs::copy(real.join("train_subset.csv"), dir.0.join("train.csv")).unwrap();
    let cfg = setup::load_configs(&[repo().join("configs/sartorius_r50.toml").as_path()]).unwrap();
    let paths = (dir.0.join("train.csv"), images);
    let err = setup::load_data(&cfg, Some(&paths)).err().expect("an image is missing");
    let msg = format!("{err:#}");
    assert!(msg.contains("ffc2ead3e8cc"), "{msg}");
}

#[test]
fn a_fold_csv_gives_the_split_and_validation_truth_keeps_the_holes() {
    use cellseg::data::synthetic::{SartoriusLayout, generate_sartorius_layout};
    let dir = Scratch::new("fold-csv");
    let layout = SartoriusLayout {
        images: 6,
        test_images: 0,
        size: cellseg::core::ImageSize::new(64, 64),
        seed: 1,
        real: Vec::new(),
    };
    generate_sartorius_layout(&dir.0, &layout).unwrap();
    let paths = (dir.0.join("train.csv"), dir.0.join("train"));
    let mut cfg = setup::Config::default();
    cfg.data.folds = 3;
    let ids: Vec<String> = setup::load_split_data(&cfg, &paths).unwrap().split.ids;
    // The seed's own split, as a fold CSV: image i in fold i % 3.
    let rows: String = ids.iter().enumerate().map(|(i, id)| format!("{id},{}\n", i % 3)).collect();
    cfg.data.fold_csv = Some(dir.write("seed_folds.csv", &format!("id,fold\n{rows}")));
    // A ring cell (11x11 with a 3x3 hole) added to the first image: training fills the hole
    // (the seed's `fix`), the validation truth keeps it (`df … nofix`).
    let mut rle = String::new();
    for r in 10..21 {
        let runs: &[(usize, usize)] =
            if (14..17).contains(&r) { &[(10, 4), (17, 4)] } else { &[(10, 11)] };
        for &(c0, len) in runs {
            rle.push_str(&format!("{} {len} ", r * 64 + c0 + 1));
        }
    }
    let csv = std::fs::read_to_string(&paths.0).unwrap();
    let first = csv.lines().nth(1).unwrap().to_string();
    let mut fields: Vec<&str> = first.split(',').collect();
    fields[1] = rle.trim();
    std::fs::write(&paths.0, format!("{csv}{}\n", fields.join(","))).unwrap();
    let ring_id = fields[0].to_string();
    let data = setup::load_split_data(&cfg, &paths).unwrap();
    assert_eq!(data.split.folds, [0, 1, 2, 0, 1, 2]);
    let (train, val) = data.fold_cloned(1);
    assert_eq!((train.len(), val.len()), (4, 2));
    assert_eq!(val[0].id, ids[1]);
    let ring = |samples: &[cellseg::data::Sample]| {
        let s = samples.iter().find(|s| s.id == ring_id).unwrap();
        s.instances.masks.iter().map(|m| m.area()).find(|&a| a == 121 - 9 || a == 121).unwrap()
    };
    let k = data.split.fold_of(&ring_id).unwrap();
    let (_, val_k) = data.fold_cloned(k);
    assert_eq!(ring(&val_k), 112, "validation truth: the original annotation");
    let (train_other, _) = data.fold_cloned((k + 1) % 3);
    assert_eq!(ring(&train_other), 121, "training masks: holes filled");
    // A fold the split does not have.
    let rows: String = ids.iter().enumerate().map(|(i, id)| format!("{id},{}\n", i % 4)).collect();
    cfg.data.fold_csv = Some(dir.write("bad_folds.csv", &format!("id,fold\n{rows}")));
    let e = format!("{:#}", setup::load_split_data(&cfg, &paths).err().unwrap());
    assert!(e.contains("bad_folds.csv") && e.contains("3 with 3 folds"), "{e}");
}

/// The layer over `configs/demo.toml` for a run of a few seconds: 4 + 2 synthetic images, no
/// DSB2018 images, 64×64 crops, one epoch of 2 steps.
const QUICK: &str = "threads = 1\noverlays = 0\n\
    [synthetic]\ntrain_images = 4\nval_images = 2\nheight = 96\nwidth = 96\n\
    [dsb]\nenabled = false\n[augment.crop]\nheight = 64\nwidth = 64\n\
    [train]\nepochs = 1\nbatch_size = 2\n[train.eval]\nfirst_epoch = 1\nevery_epochs = 1\n\
    [train.checkpoint]\nevery_epochs = 1\nkeep_last = 1\n";

/// `make demo` run twice: the second `train_maskrcnn` with the same arguments reuses the finished
/// run (exit 0, nothing rewritten); with another config it is an error that writes nothing.
#[test]
fn an_example_run_again_reuses_its_finished_run_and_refuses_another_config() {
    let _lock = cellseg::core::testing::torch_lock();
    let dir = Scratch::new("again");
    let quick = dir.write("quick.toml", QUICK);
    let run_dir = dir.0.join("run");
    let demo = repo().join("configs/demo.toml");
    let argv = |extra: &[&Path]| {
        let mut v: Vec<std::ffi::OsString> = vec!["train_maskrcnn".into()];
        let configs: Vec<&Path> =
            [demo.as_path(), quick.as_path()].into_iter().chain(extra.iter().copied()).collect();
        for c in configs {
            v.extend(["--config".into(), c.into()]);
        }
        v.extend(["--run-dir".into(), run_dir.clone().into()]);
        v
    };
    let train = |v| crate::run::run_from(cellseg::train::detector::Arch::MaskRcnn, Some(v));
    train(argv(&[])).unwrap();
    assert!(run_dir.join("finished.json").is_file());
    let files = |d: &Path| -> Vec<(PathBuf, std::time::SystemTime)> {
        let mut v: Vec<_> = walk(d)
            .into_iter()
            .map(|p| {
                let t = std::fs::metadata(&p).unwrap().modified().unwrap();
                (p, t)
            })
            .collect();
        v.sort();
        v
    };
    let before = files(&run_dir);
    train(argv(&[])).unwrap();
    assert_eq!(files(&run_dir), before, "the second run rewrote files");
    let other = dir.write("other.toml", "[train]\nepochs = 2\n");
    let e = format!("{:#}", train(argv(&[&other])).unwrap_err());
    assert!(
        e.contains("finished run of another config") && e.contains("nothing was written"),
        "{e}"
    );
    assert_eq!(files(&run_dir), before);
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// `--init`, `--set`, `--device` and `--threads` of the training examples (#29): an mmdet-style
/// checkpoint with another class count (an mmdet `{meta, state_dict}` `.pth`, as a COCO file is)
/// loads with the seed's class layers re-initialised and everything else copied, and trains; the
/// run folder's `config.resolved.toml` records it. Bad flags are errors naming what is wrong, and
/// leave no run folder behind.
#[test]
fn init_set_and_device_flags_work_and_bad_ones_are_named() {
    use cellseg::heads::init::{InitConfig, InitKind, load_init};
    use cellseg::train::TrainableModel;
    use cellseg::train::detector::{Arch, Detector};
    let _lock = cellseg::core::testing::torch_lock();
    let dir = Scratch::new("init");
    let quick = dir.write("quick.toml", QUICK);
    let demo = repo().join("configs/demo.toml");
    let cfg = setup::load_configs(&[demo.as_path(), quick.as_path()]).unwrap();
    let to_pth = |model: &cellseg::heads::DetectorConfig, name: &str| {
        let src = Detector::from_config(tch::Device::Cpu, model).unwrap();
        let st = dir.0.join(format!("{name}.safetensors"));
        cellseg::backbones::checkpoint::save(src.var_store(), &st, None).unwrap();
        let pth = dir.0.join(format!("{name}.pth"));
        cellseg::core::testing::run_tool(
            "backbones_fixtures.py",
            &["to-pth", st.to_str().unwrap(), pth.to_str().unwrap()],
        );
        (src, pth)
    };
    let mut coco = cfg.model.clone();
    coco.heads.num_classes = 80;
    let (src, pth) = to_pth(&coco, "coco");

    // The library call the examples make.
    let dst = Detector::from_config(tch::Device::Cpu, &cfg.model).unwrap();
    let init = InitConfig { file: Some(pth.clone()), ..InitConfig::default() };
    let report = load_init(dst.var_store(), &pth, &init).unwrap();
    assert_eq!(report.kind, InitKind::Detector);
    assert_eq!(report.reinitialised.len(), 6, "{report}");
    assert_eq!(report.skipped.len(), 6, "{report}");
    let (theirs, ours) = (src.var_store().variables(), dst.var_store().variables());
    assert_eq!(report.loaded.len() + 6, ours.len());
    for k in &report.loaded {
        assert!(ours[k].equal(&theirs[k]), "{k} not copied");
    }
    for k in &report.reinitialised {
        assert_ne!(ours[k].size(), theirs[k].size(), "{k}: the class layers differ in shape");
    }

    let argv = |run: &str, extra: &[&str]| {
        let mut v: Vec<std::ffi::OsString> = vec!["train_maskrcnn".into()];
        for c in [demo.as_path(), quick.as_path()] {
            v.extend(["--config".into(), c.into()]);
        }
        v.extend(["--run-dir".into(), dir.0.join(run).into()]);
        v.extend(extra.iter().map(std::ffi::OsString::from));
        v
    };
    let train = |v| crate::run::run_from(Arch::MaskRcnn, Some(v));
    let pth_s = pth.to_str().unwrap();
    train(argv(
        "run",
        &["--init", pth_s, "--set", "train.batch_size=1", "--device", "cpu", "--threads", "1"],
    ))
    .unwrap();
    let resolved = std::fs::read_to_string(dir.0.join("run/config.resolved.toml")).unwrap();
    assert!(resolved.contains("[init]") && resolved.contains(pth_s), "{resolved}");
    assert!(resolved.contains("# set: train.batch_size=1"), "{resolved}");
    assert!(resolved.contains("batch_size = 1"), "{resolved}");

    // Bad inputs.
    let cascade_cfg = cfg.model.to_arch(Arch::Cascade).unwrap();
    let (_, cascade) = to_pth(&cascade_cfg, "cascade");
    let truncated = dir.0.join("truncated.pth");
    let bytes = std::fs::read(&pth).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let list = dir.0.join("list");
    std::fs::create_dir_all(&list).unwrap();
    crate::support_pth_formats(&list);
    let (cascade_s, truncated_s) = (cascade.to_str().unwrap(), truncated.to_str().unwrap());
    let list_s = list.join("list.pth");
    let list_s = list_s.to_str().unwrap();
    let mut cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--init", cascade_s], vec!["missing key", "unexpected key", "roi_head.bbox_head.0."]),
        (vec!["--init", truncated_s], vec!["truncated or damaged", "truncated.pth"]),
        (vec!["--init", list_s], vec!["holds no state_dict", "list"]),
        (vec!["--set", "train.epochz=1"], vec!["--set train.epochz=1", "epochz"]),
        (vec!["--set", "train.epochs=many"], vec!["--set train.epochs=many", "string"]),
        (vec!["--set", "train.batch_size=0"], vec!["--set train.batch_size=0", "batch_size"]),
        (vec!["--set", "train"], vec!["KEY=VALUE"]),
        (vec!["--device", "tpu"], vec!["expected cpu, cuda or cuda:N"]),
        (vec!["--device", "cuda:7"], vec!["--device cuda:7", "use --device cpu"]),
        (vec!["--threads", "0"], vec!["--threads 0"]),
        (vec!["--init", pth_s, "--pretrained", pth_s], vec!["--pretrained", "--init"]),
        (vec!["--set", "init.file=x.pth", "--pretrained", pth_s], vec!["start from one of them"]),
    ];
    if !tch::Cuda::is_available() {
        cases.push((vec!["--device", "cuda"], vec!["libtorch sees 0 CUDA device(s)"]));
    }
    for (i, (extra, says)) in cases.iter().enumerate() {
        let run = format!("bad{i}");
        let e = format!("{:#}", train(argv(&run, extra)).unwrap_err());
        for s in says {
            assert!(e.contains(s), "{extra:?}: {e:?} lacks {s:?}");
        }
        assert!(!dir.0.join(&run).exists(), "{extra:?} left {run}/ behind");
        eprintln!("{extra:?}: {}", e.lines().next().unwrap_or(""));
    }
}

/// `[data] corrected_masks` (Heng's `hck_fix`, SEED.md §1.3) on the real images: the astro
/// image's training masks are clipped to the corrected mask's red channel, its validation truth
/// stays the original annotation, the other images are untouched; a folder without the astro
/// image's mask, and one that does not exist, are errors naming them.
#[test]
fn corrected_masks_clip_training_masks_only_and_a_missing_one_is_named() {
    let Some(real) = cellseg::core::testing::realdata() else { return };
    let sartorius = real.join("sartorius");
    let dir = Scratch::new("corrected");
    let fix = dir.0.join("hck_fix");
    std::fs::create_dir_all(&fix).unwrap();
    let astro = "ffc2ead3e8cc";
    let size = cellseg::core::ImageSize::new(520, 704);
    // Red on the left half only.
    let mut rgb = vec![0u8; size.pixels() * 3];
    for r in 0..size.height {
        for c in 0..size.width / 2 {
            rgb[(r * size.width + c) * 3] = 255;
        }
    }
    let png = fix.join(format!("{astro}.png"));
    let image = cellseg::data::Image::new(size, 3, rgb).unwrap();
    cellseg::data::raster::write_png(&image, &png).unwrap();
    let paths = (sartorius.join("train_subset.csv"), sartorius.join("train_images"));
    let mut cfg =
        setup::load_configs(&[repo().join("configs/sartorius_r50.toml").as_path()]).unwrap();
    cfg.data.group_by = setup::GroupBy::Id;
    cfg.data.folds = 2;
    let plain = setup::load_split_data(&cfg, &paths).unwrap();
    cfg.data.corrected_masks = Some(fix.clone());
    let fixed = setup::load_split_data(&cfg, &paths).unwrap();
    let area = |i: &cellseg::core::Instances| i.masks.iter().map(|m| m.area()).sum::<usize>();
    for (k, (p, f)) in plain.samples.iter().zip(&fixed.samples).enumerate() {
        assert_eq!(plain.val_truth[k], fixed.val_truth[k], "{}: validation truth changed", p.id);
        if p.id == astro {
            let (a, b) = (area(&p.instances), area(&f.instances));
            assert!(b < a && b > 0, "{astro}: area {a} -> {b}");
            for m in &f.instances.masks {
                let full = m.to_full();
                for r in 0..size.height {
                    for c in size.width / 2..size.width {
                        assert!(!full.get(r, c), "{astro}: a pixel right of the clip");
                    }
                }
            }
        } else {
            assert_eq!(p.instances, f.instances, "{}: not astro, unchanged", p.id);
        }
    }
    std::fs::remove_file(&png).unwrap();
    let e = format!("{:#}", setup::load_split_data(&cfg, &paths).err().unwrap());
    assert!(e.contains(&format!("astro image {astro}")) && e.contains("hck_fix"), "{e}");
    cfg.data.corrected_masks = Some(dir.0.join("nope"));
    let e = format!("{:#}", setup::load_split_data(&cfg, &paths).err().unwrap());
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
}

/// Set in a child's environment: the training example's arguments, one per line.
const RANK_CHILD_ENV: &str = "CELLSEG_TRAIN_RANK_CHILD";

/// `--nproc-per-node 2` as the launcher (or `torchrun --no-python`) starts it: two ranks of the
/// training example (this binary on [`child_trains_as_a_rank`], torchrun's variables set) write
/// one run folder, with the steps of one process whose batch is both ranks' together.
#[test]
fn two_ranks_of_the_training_example_write_one_run_folder() {
    let dir = Scratch::new("ranks");
    let quick = dir.write("quick.toml", QUICK);
    let demo = repo().join("configs/demo.toml");
    let args = |run: &Path, batch: usize, nproc: usize| -> Vec<String> {
        let mut v = vec!["train_maskrcnn".to_string()];
        for c in [&demo, &quick] {
            v.extend(["--config".into(), c.display().to_string()]);
        }
        v.extend(["--run-dir".into(), run.display().to_string()]);
        v.extend(["--set".into(), format!("train.batch_size={batch}")]);
        v.extend(["--nproc-per-node".into(), nproc.to_string()]);
        v
    };
    let two = dir.0.join("two");
    let argv = args(&two, 1, 2).join("\n");
    crate::run_two_ranks("train_maskrcnn::child_trains_as_a_rank", (RANK_CHILD_ENV, &argv));
    let one = dir.0.join("one");
    {
        let _lock = cellseg::core::testing::torch_lock();
        let v = args(&one, 2, 1).into_iter().map(Into::into).collect();
        crate::run::run_from(cellseg::train::detector::Arch::MaskRcnn, Some(v)).unwrap();
    }
    let steps = |run: &Path| -> Vec<u64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["kind"] == "step").then(|| v["step"].as_u64().unwrap())
            })
            .collect()
    };
    assert!(!steps(&one).is_empty());
    assert_eq!(steps(&two), steps(&one), "the steps of a global batch of 2 × 1 and of 1 × 2");
    for f in ["finished.json", "config.resolved.toml", "model.toml", "latest.json", "curves.png"] {
        assert!(two.join(f).is_file(), "{f} missing in {}", two.display());
    }
    let listing = |run: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(&two), listing(&one));
}

#[test]
#[ignore = "run by two_ranks_of_the_training_example_write_one_run_folder in a child process"]
fn child_trains_as_a_rank() {
    let args = std::env::var(RANK_CHILD_ENV).expect("a child of the two-rank test");
    let argv = args.lines().map(Into::into).collect();
    crate::run::run_from(cellseg::train::detector::Arch::MaskRcnn, Some(argv)).unwrap();
}
