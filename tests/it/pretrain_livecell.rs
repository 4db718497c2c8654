//! The config and data loading of `examples/pretrain_livecell.rs`: the committed config holds the
//! seed's pretraining values, a partly filled table keeps them, bad keys / types name the key and
//! the file, and a json pointing at a missing image names the image.

use cellseg_cli::pretrain::{self as run, setup};

use std::path::{Path, PathBuf};

use cellseg::core::LivecellClass;
use cellseg::data::synthetic;

/// A fresh scratch folder (removed by [`Scratch::drop`]).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir()
            .join(format!("cellseg-pretrain-livecell-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pretrain.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn committed_config_holds_the_seed_pretraining_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/pretrain_livecell.toml");
    let cfg = setup::load_configs(&[&path]).unwrap();
    // The seed's detector: the finetuning config's with 8 classes.
    let fine = crate::setup::load_configs(&[
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/train_maskrcnn.toml")
    ])
    .unwrap();
    let mut model = fine.model.clone();
    model.heads.num_classes = 8;
    assert_eq!(toml::to_string(&cfg.model).unwrap(), toml::to_string(&model).unwrap());
    assert_eq!(cfg.model.heads.num_classes, 8);
    assert_eq!(cfg.train.optimizer.lr, 3e-4);
    assert!(!cfg.train.loss.decay);
    assert_eq!(cfg.train.epochs as usize, 2 * cfg.train.batch_size);
    assert_eq!(cfg.augment.flip_paste.p, 0.0);
    cfg.train.validate().unwrap();
}

#[test]
fn a_partly_filled_table_keeps_the_pretraining_defaults() {
    let dir = Scratch::new("partial");
    let cfg = setup::load_configs(&[&write_config(&dir.0, "[train]\nepochs = 3\n")]).unwrap();
    assert_eq!(cfg.train.epochs, 3);
    assert_eq!(cfg.train.optimizer.lr, 3e-4);
    assert!(!cfg.train.loss.decay);
    assert_eq!(cfg.model.heads.num_classes, 8);
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key_and_the_file() {
    let dir = Scratch::new("bad");
    let path = write_config(&dir.0, "[train.optimizer]\nlearning_rate = 1e-3\n");
    let msg = format!("{:#}", setup::load_configs(&[&path]).unwrap_err());
    assert!(msg.contains("learning_rate") && msg.contains("pretrain.toml"), "{msg}");
    let path = write_config(&dir.0, "[train]\nepochs = \"eight\"\n");
    let msg = format!("{:#}", setup::load_configs(&[&path]).unwrap_err());
    assert!(msg.contains("epochs") && msg.contains("pretrain.toml"), "{msg}");
    let path = write_config(&dir.0, "[model.heads]\nnum_classes = 3\n");
    let msg = format!("{:#}", setup::load_configs(&[&path]).unwrap_err());
    assert!(msg.contains("model.heads.num_classes") && msg.contains("pretrain.toml"), "{msg}");
}

#[test]
fn livecell_layout_loads_and_a_missing_image_is_named() {
    let dir = Scratch::new("layout");
    synthetic::generate_livecell(&dir.0, 4, 3).unwrap();
    let ann = dir.0.join("annotations/LIVECell");
    let (train_json, val_json) =
        (ann.join("livecell_coco_train.json"), ann.join("livecell_coco_val.json"));
    let images = dir.0.join("images");
    let cfg = setup::Config::default();
    let (train, val, _) =
        setup::load_data(&cfg, Some(&train_json), Some(&val_json), Some(&images)).unwrap();
    assert_eq!((train.len(), val.len()), (2, 1));
    let shsy5y = LivecellClass::Shsy5y.label();
    let a172 = LivecellClass::A172.label();
    assert!(train[0].instances.labels.iter().all(|&l| l == shsy5y));
    assert!(train[1].instances.labels.iter().all(|&l| l == a172));

    let gone = std::fs::read_dir(images.join("livecell_train_val_images/A172"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&gone).unwrap();
    let err =
        setup::load_data(&cfg, Some(&train_json), Some(&val_json), Some(&images)).unwrap_err();
    let msg = format!("{err:#}");
    let name = gone.file_name().unwrap().to_string_lossy().into_owned();
    assert!(msg.contains(&name) && msg.contains("livecell_coco_train.json"), "{msg}");
}

#[test]
fn synthetic_default_uses_livecell_labels() {
    let cfg = setup::Config::default();
    let (train, _, source) = setup::load_data(&cfg, None, None, None).unwrap();
    assert!(source.contains("synthetic"));
    let labels: std::collections::BTreeSet<usize> =
        train.iter().flat_map(|s| s.instances.labels.iter().copied()).collect();
    let expect = [LivecellClass::A172, LivecellClass::Huh7, LivecellClass::Shsy5y]
        .map(LivecellClass::label)
        .into_iter()
        .collect();
    assert_eq!(labels, expect);
}

/// The test layer over `configs/pretrain_livecell.toml` (the seed's R50 recipe): one step of one
/// 128×128 crop, no overlays.
const PRETRAIN_LAYER: &str = "overlays = 0\n[augment.crop]\nheight = 128\nwidth = 128\n\
    [train]\nbatch_size = 1\nepochs = 1\n[train.checkpoint]\nevery_epochs = 1\nkeep_last = 1\n";

/// The test layer over `configs/train_maskrcnn.toml` (+ `train_cascade.toml` / `train_htc.toml`):
/// the 4 real Sartorius images in 4 folds by id (fold 2 held out, as `configs/sartorius_r50.toml`),
/// one step of the other three as 128×128 crops.
const FINETUNE_LAYER: &str = "overlays = 0\n[data]\nfolds = 4\nfold = 2\ngroup_by = \"id\"\n\
    repeat = 1\n[augment.crop]\nheight = 128\nwidth = 128\n\
    [train]\nbatch_size = 3\nepochs = 1\n[train.eval]\nfirst_epoch = 10\n\
    [train.checkpoint]\nevery_epochs = 1\nkeep_last = 1\n";

/// `json` restricted to the image whose file name is `file`.
fn one_image_json(json: &Path, file: &str, out: &Path) -> PathBuf {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let image = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file_name"] == file)
        .unwrap_or_else(|| panic!("{} has no image {file}", json.display()))
        .clone();
    let anns: Vec<serde_json::Value> = v["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["image_id"] == image["id"])
        .cloned()
        .collect();
    v["images"] = serde_json::Value::Array(vec![image]);
    v["annotations"] = serde_json::Value::Array(anns);
    std::fs::write(out, serde_json::to_vec(&v).unwrap()).unwrap();
    out.to_path_buf()
}

/// The finetuning configs of `arch` as the README layers them, then `layer`.
fn finetune_configs(arch: cellseg::train::detector::Arch, layer: &Path) -> Vec<PathBuf> {
    use cellseg::train::detector::Arch;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs = vec![repo.join("configs/train_maskrcnn.toml")];
    match arch {
        Arch::MaskRcnn => {}
        Arch::Cascade => configs.push(repo.join("configs/train_cascade.toml")),
        Arch::Htc => configs.push(repo.join("configs/train_htc.toml")),
    }
    configs.push(layer.to_path_buf());
    configs
}

/// Asserts that `report`, a load into the finetuning detector of `arch`, copied every tensor but
/// the class layers `fc_cls` / `fc_reg` / `conv_logits` of every stage.
fn assert_all_but_class_layers(
    arch: cellseg::train::detector::Arch,
    report: &cellseg::train::pretrained::PretrainedReport,
    model_keys: usize,
) {
    use cellseg::train::detector::Arch;
    assert!(report.is_exact(), "{arch:?}: {report}");
    assert_eq!(report.loaded.len() + report.reinitialised.len(), model_keys, "{arch:?}: {report}");
    let class_layer = |k: &String| {
        ["fc_cls", "fc_reg", "conv_logits"].iter().any(|p| k.split('.').any(|s| s == *p))
    };
    assert!(report.reinitialised.iter().all(class_layer), "{arch:?}: {report}");
    assert!(!report.loaded.iter().any(class_layer), "{arch:?}: {report}");
    let stages = if arch == Arch::MaskRcnn { 1 } else { 3 };
    // weight + bias per stage; HTC's semantic head has a `conv_logits` too
    let semantic = usize::from(arch == Arch::Htc);
    for (layer, n) in [("fc_cls", 0), ("fc_reg", 0), ("conv_logits", semantic)] {
        let got = report.reinitialised.iter().filter(|k| k.contains(layer)).count();
        assert_eq!(got, 2 * (stages + n), "{arch:?} {layer}: {report}");
    }
    assert_eq!(report.dropped, report.reinitialised, "{arch:?}");
}

/// The README's pretrain → finetune chain for `arch`, run through the two examples on the real
/// data of `real` (`../shared/realdata`) with the seed's real configs and the test layers (one
/// step each): `pretrain_livecell --config configs/pretrain_livecell.toml --arch <arch>` on a
/// real LIVECell image, then `train_<arch> --config configs/train_maskrcnn.toml [--config
/// configs/train_{cascade,htc}.toml] --pretrained <that run>` on the real Sartorius images. The
/// finetuning run loads strictly (a missing, unexpected or wrongly shaped key is an error), and
/// the same load done here copies every tensor but the class layers.
fn chain_through_the_examples(arch: cellseg::train::detector::Arch, real: &Path) {
    use cellseg::train::TrainableModel;
    use cellseg::train::detector::Detector;
    use cellseg::train::pretrained::load_pretrained;
    let t0 = std::time::Instant::now();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Scratch::new(&format!("chain-{}", arch.name()));
    let livecell = real.join("livecell");
    let train_json = one_image_json(
        &livecell.join("livecell_coco_test_subset.json"),
        "Huh7_Phase_A12_2_01d20h00m_1.tif",
        &dir.0.join("chain_test.json"),
    );
    let val_json = one_image_json(
        &livecell.join("livecell_coco_val_subset.json"),
        "Huh7_Phase_A10_1_02d12h00m_3.tif",
        &dir.0.join("chain_val.json"),
    );
    let pre_layer = dir.0.join("pretrain_layer.toml");
    std::fs::write(&pre_layer, PRETRAIN_LAYER).unwrap();
    let fine_layer = dir.0.join("finetune_layer.toml");
    std::fs::write(&fine_layer, FINETUNE_LAYER).unwrap();
    let sartorius = real.join("sartorius");
    let os = |p: &Path| std::ffi::OsString::from(p);

    // The seed's start where no COCO checkpoint exists (SEED.md §2.1): an ImageNet classifier as
    // torchvision saves it, its trunk into the backbone, FPN and heads random.
    let imagenet = dir.0.join("resnet50.pth");
    cellseg::core::testing::run_tool(
        "backbones_fixtures.py",
        &["classifier-pth", "resnet50", imagenet.to_str().unwrap()],
    );
    let pre = dir.0.join("pretrain");
    let mut argv: Vec<std::ffi::OsString> = vec!["pretrain_livecell".into(), "--config".into()];
    argv.extend([os(&repo.join("configs/pretrain_livecell.toml")), "--config".into()]);
    argv.extend([os(&pre_layer), "--train-json".into(), os(&train_json)]);
    argv.extend(["--val-json".into(), os(&val_json), "--images".into()]);
    argv.extend([os(&livecell.join("images")), "--run-dir".into(), os(&pre)]);
    argv.extend(["--arch".into(), arch.name().into(), "--init".into(), os(&imagenet)]);
    run::run_from(Some(argv)).unwrap_or_else(|e| panic!("pretraining {arch:?}: {e:#}"));
    let pre_s = t0.elapsed().as_secs_f64();
    let resolved = std::fs::read_to_string(pre.join("config.resolved.toml")).unwrap();
    assert!(resolved.contains(imagenet.to_str().unwrap()), "{resolved}");
    // The load the pretraining did: the whole trunk, the classifier head skipped.
    {
        use cellseg::heads::init::{InitKind, load_init};
        let mut cfg = setup::load_configs(&[&repo.join("configs/pretrain_livecell.toml")]).unwrap();
        let mut run_dir = cfg.train.run_dir.clone();
        crate::support::select_arch(&mut cfg.model, &mut run_dir, arch).unwrap();
        let model = Detector::from_config(tch::Device::Cpu, &cfg.model).unwrap();
        let r = load_init(model.var_store(), &imagenet, &cfg.init).unwrap();
        let vars = model.var_store().variables();
        let trunk = vars.keys().filter(|k| k.starts_with("backbone.")).count();
        assert_eq!(
            (r.kind, r.loaded.len(), r.fresh.len()),
            (InitKind::Backbone, trunk, vars.len() - trunk),
            "{r}"
        );
        assert_eq!(r.skipped, ["fc.bias", "fc.weight"], "{r}");
        assert!(r.reinitialised.is_empty(), "{r}");
        println!("{arch:?} pretraining --init: {r}");
    }

    let configs = finetune_configs(arch, &fine_layer);
    let fine = dir.0.join("finetune");
    let mut argv: Vec<std::ffi::OsString> = vec![format!("train_{}", arch.name()).into()];
    for c in &configs {
        argv.extend(["--config".into(), os(c)]);
    }
    argv.extend(["--csv".into(), os(&sartorius.join("train_subset.csv"))]);
    argv.extend(["--images".into(), os(&sartorius.join("train_images"))]);
    argv.extend(["--pretrained".into(), os(&pre), "--run-dir".into(), os(&fine)]);
    crate::run::run_from(arch, Some(argv))
        .unwrap_or_else(|e| panic!("finetuning {arch:?} from {}: {e:#}", pre.display()));

    // The load the finetuning did, key by key.
    let paths: Vec<&Path> = configs.iter().map(PathBuf::as_path).collect();
    let mut cfg = crate::setup::load_configs(&paths).unwrap();
    let mut run_dir = cfg.train.run_dir.clone();
    crate::support::select_arch(&mut cfg.model, &mut run_dir, arch).unwrap();
    let model = Detector::from_config(tch::Device::Cpu, &cfg.model).unwrap();
    let report = load_pretrained(model.var_store(), &pre, &cfg.pretrained).unwrap();
    assert_all_but_class_layers(arch, &report, model.var_store().variables().len());
    println!(
        "{arch:?}: pretraining {pre_s:.0} s, finetuning {:.0} s; loaded {} tensors, \
         re-initialised {}",
        t0.elapsed().as_secs_f64() - pre_s,
        report.loaded.len(),
        report.reinitialised.len()
    );
}

/// The README's chain with the seed's real configs: Mask R-CNN run through both examples on the
/// real images (about a minute on 2 cores; Cascade and HTC through the examples in
/// [`the_seed_configs_chain_cascade_and_htc_through_the_examples`]), and for all three detectors
/// the pretraining config's detector (`--arch` converted) loaded into the finetuning config's:
/// every tensor but the class layers.
#[test]
fn the_seed_configs_chain_pretraining_into_finetuning_for_every_detector() {
    use cellseg::train::TrainableModel;
    use cellseg::train::detector::{Arch, Detector};
    use cellseg::train::pretrained::load_pretrained;
    let Some(real) = cellseg::core::testing::realdata() else { return };
    let _lock = cellseg::core::testing::torch_lock();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    chain_through_the_examples(Arch::MaskRcnn, &real);
    let dir = Scratch::new("chain-keys");
    let layer = dir.0.join("finetune_layer.toml");
    std::fs::write(&layer, FINETUNE_LAYER).unwrap();
    let pre_cfg = setup::load_configs(&[&repo.join("configs/pretrain_livecell.toml")]).unwrap();
    for arch in [Arch::MaskRcnn, Arch::Cascade, Arch::Htc] {
        let mut pre = pre_cfg.model.clone();
        let mut run_dir = pre_cfg.train.run_dir.clone();
        crate::support::select_arch(&mut pre, &mut run_dir, arch).unwrap();
        let file = dir.0.join(format!("{}.safetensors", arch.name()));
        Detector::from_config(tch::Device::Cpu, &pre).unwrap().var_store().save(&file).unwrap();
        let configs = finetune_configs(arch, &layer);
        let paths: Vec<&Path> = configs.iter().map(PathBuf::as_path).collect();
        let mut cfg = crate::setup::load_configs(&paths).unwrap();
        crate::support::select_arch(&mut cfg.model, &mut run_dir, arch).unwrap();
        let model = Detector::from_config(tch::Device::Cpu, &cfg.model).unwrap();
        let report = load_pretrained(model.var_store(), &file, &cfg.pretrained).unwrap();
        assert_all_but_class_layers(arch, &report, model.var_store().variables().len());
    }
}

/// [`chain_through_the_examples`] for Cascade and HTC (about 3.5 minutes on 2 cores; run with
/// `cargo test -p cellseg --test it -- --ignored chain_cascade_and_htc`).
#[test]
#[ignore = "3.5 minutes on 2 cores; the key-level check of the same configs runs in the_seed_configs_chain_pretraining_into_finetuning_for_every_detector"]
fn the_seed_configs_chain_cascade_and_htc_through_the_examples() {
    use cellseg::train::detector::Arch;
    let real = cellseg::core::testing::realdata().expect("../shared/realdata");
    let _lock = cellseg::core::testing::torch_lock();
    chain_through_the_examples(Arch::Cascade, &real);
    chain_through_the_examples(Arch::Htc, &real);
}

/// The example's default (`pretrain_livecell.toml` + `pretrain_livecell_tiny.toml`) pretrains the
/// model of `configs/demo.toml` with 8 classes, for each architecture: finetuning it with demo.toml
/// (`PRETRAIN=1 make reproduce`) loads every tensor but the class layers.
#[test]
fn the_tiny_pretraining_finetunes_into_the_demo_models() {
    use cellseg::train::TrainableModel;
    use cellseg::train::detector::{Arch, Detector};
    use cellseg::train::pretrained::load_pretrained;
    let _lock = cellseg::core::testing::torch_lock();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pre = setup::load_configs(&[
        &repo.join("configs/pretrain_livecell.toml"),
        &repo.join("configs/pretrain_livecell_tiny.toml"),
    ])
    .unwrap();
    let demo = crate::setup::load_configs(&[&repo.join("configs/demo.toml")]).unwrap();
    let dir = Scratch::new("tiny-into-demo");
    for arch in [Arch::MaskRcnn, Arch::Cascade, Arch::Htc] {
        let (mut a, mut b) = (pre.model.clone(), demo.model.clone());
        let mut run_dir = PathBuf::from("runs/x");
        crate::support::select_arch(&mut a, &mut run_dir, arch).unwrap();
        crate::support::select_arch(&mut b, &mut run_dir, arch).unwrap();
        let file = dir.0.join(format!("{}.safetensors", arch.name()));
        Detector::from_config(tch::Device::Cpu, &a).unwrap().var_store().save(&file).unwrap();
        let model = Detector::from_config(tch::Device::Cpu, &b).unwrap();
        let report = load_pretrained(model.var_store(), &file, &demo.pretrained).unwrap();
        assert!(report.is_exact() && !report.reinitialised.is_empty(), "{arch:?}: {report}");
        assert_eq!(
            report.loaded.len() + report.reinitialised.len(),
            model.var_store().variables().len()
        );
    }
}
