//! Config and data of `examples/train_{maskrcnn,cascade,htc}.rs` (also used by the root
//! package's `tests/it`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use cellseg::data::dsb::DsbDataset;
use cellseg::data::sartorius::{SartoriusDataset, SartoriusOptions};
use cellseg::data::{AugmentConfig, Sample, Strictness, synthetic};
use cellseg::heads::init::InitConfig;
use cellseg::postproc::PostprocConfig;
use cellseg::train::TrainConfig;
use cellseg::train::detector::DetectorConfig;
use cellseg::train::pretrained::PretrainedConfig;
use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// libtorch intra-op threads (0: libtorch's default).
    pub threads: i32,
    /// Overlay PNGs written for the first held-out images.
    pub overlays: usize,
    /// The synthetic default data (no `--data` / `--csv`).
    pub synthetic: crate::SyntheticImages,
    /// Real DSB2018 nuclei added to the synthetic default.
    pub dsb: DsbSection,
    /// How real data is split.
    pub data: DataSection,
    /// Starting weights published for another data set (`--init`: an mmdet COCO checkpoint, a
    /// torchvision / timm backbone; default none).
    pub init: InitConfig,
    /// How `--pretrained` weights are loaded (default: the seed's re-initialised class layers).
    pub pretrained: PretrainedConfig,
    /// The architecture (default: the seed's R50 stride-1 Mask R-CNN).
    pub model: DetectorConfig,
    /// Training augmentations (default: the seed's).
    pub augment: AugmentConfig,
    /// Post-processing before the metric (default: the seed's).
    pub postproc: PostprocConfig,
    /// The training engine (default: the seed's finetuning recipe).
    pub train: TrainConfig,
}

/// The real DSB2018 nuclei added to the synthetic default (not used with `--data` / `--csv`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DsbSection {
    /// Add them (default true).
    pub enabled: bool,
    /// Folder with `stage1_solution_subset.csv` and `images/` (default: the repository's copy).
    pub dir: PathBuf,
    /// Images (the last by id) held out for their own validation line; the others train.
    pub val_images: usize,
}

impl Default for DsbSection {
    fn default() -> Self {
        Self { enabled: true, dir: PathBuf::from("tests/data/dsb2018_stage1_test"), val_images: 10 }
    }
}

/// What the example trains and validates on.
pub struct Data {
    /// Training samples.
    pub train: Vec<Sample>,
    /// Held-out samples scored during training.
    pub val: Vec<Sample>,
    /// Held-out real DSB2018 images (synthetic default only).
    pub dsb_val: Vec<Sample>,
}

/// How the real data is split (`--data` / `--csv`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Number of folds (seed: 5, `GroupKFold`).
    pub folds: usize,
    /// The held-out fold (seed trains one model per fold; 0 here).
    pub fold: usize,
    /// `"plate_well"` (seed) or `"id"` (one group per image, for CSVs without `sample_id`).
    pub group_by: GroupBy,
    /// Each training image is visited this many times per epoch, each time with its own random
    /// crop (ours, for small data sets; the seed: 1).
    pub repeat: usize,
    /// A fold CSV (columns `id` and `fold`, e.g. the seed's own split exported once, `SEED.md`
    /// §1.6) used instead of computing GroupKFold; its folds must be below `folds`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fold_csv: Option<PathBuf>,
    /// Heng's corrected astro masks (the seed's `hck_fix/`, SEED.md §1.3): a folder with one
    /// `{id}.png` per astro training image, red channel > 0 = foreground. Training masks are
    /// clipped to it; validation keeps the original annotations, as the seed's. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrected_masks: Option<PathBuf>,
}

/// The groups of the fold split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// `plate_well` from `sample_id` (the seed's GroupKFold).
    PlateWell,
    /// One group per image id.
    Id,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            folds: 5,
            fold: 0,
            group_by: GroupBy::PlateWell,
            repeat: 1,
            fold_csv: None,
            corrected_masks: None,
        }
    }
}

/// The DSB2018 images of `cfg.dir`: (training, held out).
pub fn load_dsb(cfg: &DsbSection) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    let csv = cfg.dir.join("stage1_solution_subset.csv");
    let ds =
        DsbDataset::read(&csv, &cfg.dir.join("images"), Strictness::Strict).with_context(|| {
            format!(
                "reading the DSB2018 images of {} (set dsb.enabled = false to skip them)",
                csv.display()
            )
        })?;
    let mut all = cellseg::data::sample::preload(&ds)?;
    let val = all.split_off(all.len().saturating_sub(cfg.val_images));
    Ok((all, val))
}

/// The training and held-out samples: synthetic (+ DSB2018) when `paths` is `None`, else the
/// `(csv, image folder)` of a Sartorius-layout data set split by `cfg.data`.
///
/// # Errors
/// Unreadable or malformed data, naming the file and row; too few groups for the folds.
pub fn load_data(cfg: &Config, paths: Option<&(PathBuf, PathBuf)>) -> anyhow::Result<Data> {
    match paths {
        None => {
            let s = &cfg.synthetic;
            let mut train = synthetic::samples(s.train_images, s.size(), s.seed);
            let val = synthetic::samples(s.val_images, s.size(), s.val_seed());
            let mut dsb_val = Vec::new();
            if cfg.dsb.enabled {
                let (t, v) = load_dsb(&cfg.dsb)?;
                train.extend(t);
                dsb_val = v;
            }
            Ok(Data { train, val, dsb_val })
        }
        Some(paths) => {
            let (train, val) = load_split_data(cfg, paths)?.fold(cfg.data.fold);
            Ok(Data { train, val, dsb_val: Vec::new() })
        }
    }
}

/// A Sartorius-layout data set with its split: every image with its training masks (the seed's
/// hole-filled annotations) and its validation truth (the original annotations: the seed
/// validates and scores OOF on `df … nofix`, `SEED.md` §1).
pub struct SplitData {
    /// Every image with its training masks, in id order.
    pub samples: Vec<Sample>,
    /// The validation truth of each image (same order).
    pub val_truth: Vec<cellseg::core::Instances>,
    /// The split.
    pub split: cellseg::data::folds::FoldSplit,
}

impl SplitData {
    /// `(training samples, held-out samples with their validation truth)` of fold `k`.
    pub fn fold(self, k: usize) -> (Vec<Sample>, Vec<Sample>) {
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for ((s, truth), f) in self.samples.into_iter().zip(self.val_truth).zip(&self.split.folds) {
            if *f == k {
                val.push(Sample { instances: truth, ..s });
            } else {
                train.push(s);
            }
        }
        (train, val)
    }

    /// [`SplitData::fold`] without consuming: for trainings of several folds.
    pub fn fold_cloned(&self, k: usize) -> (Vec<Sample>, Vec<Sample>) {
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for ((s, truth), f) in self.samples.iter().zip(&self.val_truth).zip(&self.split.folds) {
            if *f == k {
                val.push(Sample { instances: truth.clone(), ..s.clone() });
            } else {
                train.push(s.clone());
            }
        }
        (train, val)
    }
}

/// Reads the `(csv, image folder)` of a Sartorius-layout data set and splits it by `cfg.data`
/// (GroupKFold on `group_by`, or the folds of `data.fold_csv`).
///
/// # Errors
/// Unreadable or malformed data, naming the file and row; too few groups for the folds; a fold
/// CSV that misses an image or names a fold not below `data.folds`.
pub fn load_split_data(
    cfg: &Config,
    (csv, images): &(PathBuf, PathBuf),
) -> anyhow::Result<SplitData> {
    let d = &cfg.data;
    let read = |options: &SartoriusOptions| {
        SartoriusDataset::read_csv(csv, images, options).with_context(|| {
            format!("reading {} with images in {}", csv.display(), images.display())
        })
    };
    // Training masks: the seed's fix (holes filled, Heng's corrected astro masks when given).
    let ds = read(&SartoriusOptions {
        corrected_masks: d.corrected_masks.clone(),
        ..SartoriusOptions::default()
    })?;
    if !ds.removed_anomalies.is_empty() {
        println!(
            "dropped {} image(s) with known wrong annotations (the seed's remove_anomalies): {}",
            ds.removed_anomalies.len(),
            ds.removed_anomalies.join(", ")
        );
    }
    if let Some(dir) = &d.corrected_masks {
        println!(
            "training masks clipped to the corrected masks of {} (validation: the original annotations)",
            dir.display()
        );
    }
    let ids: Vec<String> = ds.ids().into_iter().map(String::from).collect();
    let groups: Vec<String> = match d.group_by {
        GroupBy::PlateWell => ds.groups()?.into_iter().map(String::from).collect(),
        GroupBy::Id => ids.clone(),
    };
    let folds = match &d.fold_csv {
        Some(path) => cellseg::data::folds::read_fold_csv(path, &ids)
            .with_context(|| format!("reading the fold CSV {}", path.display()))?,
        None => cellseg::data::folds::group_kfold(&groups, d.folds)?,
    };
    let split = cellseg::data::folds::FoldSplit::new(ids, groups, folds, d.folds).with_context(
        || match &d.fold_csv {
            Some(p) => format!("the folds of {} with data.folds = {}", p.display(), d.folds),
            None => format!("the GroupKFold split into data.folds = {}", d.folds),
        },
    )?;
    let val_ds = read(&SartoriusOptions::validation())?;
    anyhow::ensure!(
        val_ds.ids() == ds.ids(),
        "{}: the validation read lists other images than the training read",
        csv.display()
    );
    let val_truth = val_ds.images.into_iter().map(|i| i.instances).collect();
    let samples = cellseg::data::sample::preload(&ds)?;
    Ok(SplitData { samples, val_truth, split })
}

/// Reads the config files in order, each overlaid on the ones before (a later file sets only the
/// keys it writes), and checks the result.
///
/// # Errors
/// Unreadable file; unknown keys and wrong types (naming the key, line and file); a `data.fold`
/// not below `data.folds`, a zero `data.repeat` or an invalid `[train]` (naming the files).
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
    anyhow::ensure!(
        cfg.data.fold < cfg.data.folds,
        "{names}: data.fold = {} must be below data.folds = {}",
        cfg.data.fold,
        cfg.data.folds
    );
    anyhow::ensure!(cfg.data.repeat > 0, "{names}: data.repeat must be at least 1");
    cfg.train.validate().with_context(|| format!("checking [train] of {names}"))?;
    cfg.init.validate().with_context(|| format!("checking [init] of {names}"))?;
    Ok(cfg)
}
