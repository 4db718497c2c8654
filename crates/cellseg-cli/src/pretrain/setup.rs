//! The config and the data of `pretrain_livecell` (also used by the root package's
//! `tests/it/pretrain_livecell.rs`).

use std::path::Path;

use anyhow::{Context, bail};
use cellseg::core::{CellType, ImageSize};
use cellseg::data::livecell::LivecellDataset;
use cellseg::data::skip::Strictness;
use cellseg::data::{AugmentConfig, Sample, synthetic};
use cellseg::heads::init::InitConfig;
use cellseg::postproc::PostprocConfig;
use cellseg::train::TrainConfig;
use cellseg::train::detector::DetectorConfig;
use serde::{Deserialize, Serialize};

/// The whole config file. Keys the file omits take the values of `Config::default()` (the
/// seed's LIVECell pretraining recipe), also inside a table the file only partly fills.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// libtorch intra-op threads (0: libtorch's default).
    pub threads: i32,
    /// Overlay PNGs written for the first validation images.
    pub overlays: usize,
    /// The embedded default data.
    pub synthetic: crate::SyntheticImages,
    /// Reading the LIVECell jsons.
    pub livecell: LivecellSection,
    /// Starting weights (`--init`: the seed started LIVECell pretraining from an mmdet COCO
    /// checkpoint, or an ImageNet backbone where none exists; default none).
    pub init: InitConfig,
    /// The detector (default: the seed's ResNet-50 stride-1 Mask R-CNN with 8 classes).
    pub model: DetectorConfig,
    /// Training augmentations.
    pub augment: AugmentConfig,
    /// Post-processing before the metric.
    pub postproc: PostprocConfig,
    /// How validation scores the 8-class predictions.
    pub validation: ValidationSection,
    /// The training engine.
    pub train: TrainConfig,
}

impl Default for Config {
    fn default() -> Self {
        let mut model = DetectorConfig::default();
        model.heads.num_classes = 8; // SEED.md §3.6: num_classes=8
        let mut augment = AugmentConfig::default();
        // SEED.md §3.6: pretraining used config_aug.py, without FlipPaste (whose `label = 2`
        // would mean huh7 here).
        augment.flip_paste.p = 0.0;
        let mut train =
            TrainConfig { run_dir: "runs/pretrain_livecell".into(), ..Default::default() };
        // SEED.md §3.6: lr=3e-4, loss_decay=False, epochs = 2 × batch_size (bs 4: 8),
        // first_epoch_eval=10 (validation only at the last epoch); AdamW, linear schedule,
        // warmup_prop 0.05, weight decay 0.01, clipping at 10 and seed 42 as in finetuning (§3.1).
        train.optimizer.lr = 3e-4;
        train.loss.decay = false;
        train.epochs = 2 * train.batch_size as u32;
        train.eval.first_epoch = 10;
        Self {
            threads: 0,
            overlays: 4,
            // Half the training examples' default: pretraining runs two epochs per image batch.
            synthetic: crate::SyntheticImages {
                train_images: 24,
                val_images: 6,
                ..Default::default()
            },
            livecell: LivecellSection::default(),
            init: InitConfig::default(),
            model,
            augment,
            postproc: PostprocConfig::default(),
            validation: ValidationSection::default(),
            train,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
/// `[livecell]`: how the LIVECell reader treats bad images.
pub struct LivecellSection {
    /// `strict`: a bad image (missing TIFF, unknown cell line, size mismatch) is an error;
    /// `lenient`: it is skipped with a warning.
    pub strictness: Strictness,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
/// `[validation]`: how the LIVECell validation images are post-processed.
pub struct ValidationSection {
    /// The Sartorius type whose `[postproc]` thresholds every LIVECell image gets.
    pub postproc_as: CellType,
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self { postproc_as: CellType::Shsy5y }
    }
}

/// Reads the config files in order, each overlaid on the previous ones and on the defaults, so
/// that a partly filled table keeps the values set before it. Each file is first parsed strictly
/// on its own: unknown keys and wrong types are errors naming the file, the key and the line.
pub fn load_configs(paths: &[&Path]) -> anyhow::Result<Config> {
    load_configs_with(paths, &[])
}

/// [`load_configs`], then the `--set KEY=VALUE` assignments `sets` on top, each checked as a
/// file is.
///
/// # Errors
/// As [`load_configs`]; a bad assignment names its `--set` argument.
pub fn load_configs_with(paths: &[&Path], sets: &[String]) -> anyhow::Result<Config> {
    let cfg: Config = cellseg::core::config::load_toml_layers_and_sets(paths, sets)?;
    let names = crate::layer_names(paths, sets);
    if cfg.model.heads.num_classes < 8 {
        bail!(
            "{names}: `model.heads.num_classes` is {}, but LIVECell has 8 classes (labels 0..=7)",
            cfg.model.heads.num_classes
        );
    }
    cfg.init.validate().with_context(|| format!("checking [init] of {names}"))?;
    Ok(cfg)
}

/// Synthetic samples with their Sartorius labels written as LIVECell cell lines.
pub fn synthetic_livecell(n: usize, size: ImageSize, seed: u64) -> Vec<Sample> {
    let mut samples = synthetic::samples(n, size, seed);
    for s in &mut samples {
        for l in &mut s.instances.labels {
            let t = CellType::from_label(*l).expect("synthetic labels are cell types");
            *l = synthetic::livecell_class(t).label();
        }
    }
    samples
}

/// The LIVECell images of the COCO file `json` under `images`, read with `strictness`.
///
/// # Errors
/// A file that cannot be read, or a bad image under `Strictness::Strict`, named.
pub fn read_livecell(
    json: &Path,
    images: &Path,
    strictness: Strictness,
) -> anyhow::Result<Vec<Sample>> {
    let ds = LivecellDataset::read(json, images, strictness)
        .with_context(|| format!("reading LIVECell json {}", json.display()))?;
    let samples = cellseg::data::sample::preload(&ds)
        .with_context(|| format!("loading the images of {}", json.display()))?;
    if samples.is_empty() {
        bail!("{} lists no usable image (under {})", json.display(), images.display());
    }
    Ok(samples)
}

/// The training and validation samples and a description of their source: the LIVECell jsons
/// when both are given (images under `images`, default `images/` next to the training json),
/// else synthetic cells.
pub fn load_data(
    cfg: &Config,
    train_json: Option<&Path>,
    val_json: Option<&Path>,
    images: Option<&Path>,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>, String)> {
    match (train_json, val_json) {
        (Some(train_json), Some(val_json)) => {
            let images = match images {
                Some(d) => d.to_path_buf(),
                None => train_json.parent().unwrap_or(Path::new(".")).join("images"),
            };
            let s = cfg.livecell.strictness;
            let train = read_livecell(train_json, &images, s)?;
            let val = read_livecell(val_json, &images, s)?;
            Ok((train, val, source(Some(train_json), Some(val_json))))
        }
        _ => {
            let s = &cfg.synthetic;
            let train = synthetic_livecell(s.train_images, s.size(), s.seed);
            let val = synthetic_livecell(s.val_images, s.size(), s.val_seed());
            Ok((train, val, source(None, None)))
        }
    }
}

/// What [`load_data`] reads, in words: the two jsons, else the synthetic cells.
pub fn source(train_json: Option<&Path>, val_json: Option<&Path>) -> String {
    match (train_json, val_json) {
        (Some(t), Some(v)) => format!("LIVECell {} / {}", t.display(), v.display()),
        _ => "synthetic cells as LIVECell shsy5y / a172 / huh7".into(),
    }
}
