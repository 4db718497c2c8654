//! The config and data loading of `examples/pretrain_livecell.rs`: the committed config holds the
//! seed's pretraining values, a partly filled table keeps them, bad keys / types name the key and
//! the file, and a json pointing at a missing image names the image.

#[path = "../../examples/pretrain_livecell/setup.rs"]
#[allow(dead_code)]
mod setup;

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
