//! The detector adapter: [`Detector`] ([`TrainableModel`] over cellseg-data [`Batch`]es, any
//! architecture behind [`TwoStageDetector`]), [`SampleData`] ([`TrainData`] over in-memory samples
//! with the cellseg-data augmentations) and [`DetectorValidator`] (predict soft masks →
//! cellseg-postproc at the configured mask threshold → competition metric, overall and per cell
//! type). A run folder describes its model ([`ModelCard`], `model.toml`), and
//! [`Detector::from_run`] rebuilds the trained model from the folder alone.
//!
//! # Example
//! ```no_run
//! use cellseg_core::ImageSize;
//! use cellseg_data::{synthetic, AugmentConfig};
//! use cellseg_postproc::PostprocConfig;
//! use cellseg_train::detector::{Detector, DetectorConfig, DetectorValidator, SampleData, Trunk};
//! use cellseg_train::{Start, TrainConfig, Trainer};
//!
//! let size = ImageSize::new(128, 128);
//! let mut cfg = DetectorConfig { trunk: Trunk::Tiny, ..DetectorConfig::default() };
//! cfg.heads.num_classes = 3;
//! cfg.neck.out_channels = 32;
//! let mut model = Detector::from_config(tch::Device::Cpu, &cfg)?;
//! let mut data = SampleData::new(synthetic::samples(12, size, 0), AugmentConfig::default())?;
//! let mut val = DetectorValidator::new(synthetic::samples(3, size, 1), PostprocConfig::default())?;
//! let train = TrainConfig { epochs: 2, batch_size: 2, run_dir: "runs/doc".into(), ..TrainConfig::default() };
//! Trainer::new(train)?.fit(&mut model, &mut data, Some(&mut val), &mut (), Start::Fresh)?;
//! // The run folder alone rebuilds the trained model.
//! let again = Detector::from_run(tch::Device::Cpu, "runs/doc")?;
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cellseg_core::{CellType, LivecellClass};
use cellseg_data::normalize::{MEAN_RGB, PAD_VALUE, STD_RGB};
use cellseg_data::{Augment, AugmentConfig, Batch, Sample};
use cellseg_dist::ProcessGroup;
use cellseg_heads::TwoStageDetector;
pub use cellseg_heads::detectors::{Arch, DetectorConfig, Trunk};
use cellseg_metrics::competition::{ImageScore, IouMatrix, image_score};
use cellseg_postproc::vote::majority_label;
use cellseg_postproc::{Pipeline, PostprocConfig, Processed, SoftDetections};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn};

use crate::error::{Error, HookError};
use crate::losses::Losses;
use crate::observer::EvalReport;
use crate::pretrained::{RunCheckpoint, resolve_checkpoint_file};
use crate::trainer::{MODEL_CARD_FILE, TrainData, TrainableModel, Validator};

/// Images are padded to a multiple of this (the coarsest FPN level, stride 32).
pub const SIZE_DIVISOR: usize = 32;

/// How images are turned into the model's input (cellseg-data's normalisation, mmdet's values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputNormalisation {
    /// Per-channel mean subtracted, RGB, 0–255 scale.
    pub mean_rgb: [f32; 3],
    /// Per-channel std dividing, RGB.
    pub std_rgb: [f32; 3],
    /// Grey value of the padding before normalisation.
    pub pad_value: u8,
    /// Images are padded to a multiple of this.
    pub size_divisor: usize,
}

impl Default for InputNormalisation {
    /// What cellseg-data's [`Batch::collate`] does.
    fn default() -> Self {
        Self {
            mean_rgb: MEAN_RGB,
            std_rgb: STD_RGB,
            pad_value: PAD_VALUE,
            size_divisor: SIZE_DIVISOR,
        }
    }
}

/// The self-description of a trained model, written as `model.toml` in its run folder: the
/// architecture, the name of each label, and the input normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// File format version (1).
    pub format: u32,
    /// The name of each label (`class_names[label]`).
    pub class_names: Vec<String>,
    /// Input normalisation the model was trained with.
    pub input: InputNormalisation,
    /// The architecture.
    pub model: DetectorConfig,
}

impl ModelCard {
    /// The current format version.
    pub const FORMAT: u32 = 1;

    /// Reads and checks `path` (`model.toml`).
    ///
    /// # Errors
    /// [`Error::ModelCard`] naming the file: unreadable, invalid TOML or keys, another format
    /// version, an input normalisation this version does not apply, or class names that do not
    /// match the heads.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::ModelCard { path: path.to_path_buf(), reason };
        let card: Self = cellseg_core::config::load_toml(path).map_err(|e| bad(e.to_string()))?;
        if card.format != Self::FORMAT {
            return Err(bad(format!(
                "format {} (this version reads {})",
                card.format,
                Self::FORMAT
            )));
        }
        if card.input != InputNormalisation::default() {
            return Err(bad(format!(
                "input normalisation {:?} differs from the one cellseg-data applies {:?}",
                card.input,
                InputNormalisation::default()
            )));
        }
        if card.class_names.len() as i64 != card.model.heads.num_classes {
            return Err(bad(format!(
                "{} class names for heads.num_classes = {}",
                card.class_names.len(),
                card.model.heads.num_classes
            )));
        }
        card.model.validate().map_err(|e| bad(e.to_string()))?;
        Ok(card)
    }
}

/// Default names of `n` labels: the Sartorius cell types for labels 0–2 when `n <= 3`, LIVECell's
/// cell lines when `n == 8`, else `class_<i>`.
pub fn default_class_names(n: i64) -> Vec<String> {
    let n = n.max(0) as usize;
    if n == LivecellClass::ALL.len() {
        return LivecellClass::ALL.iter().map(|c| c.name().to_string()).collect();
    }
    (0..n)
        .map(|i| match CellType::from_label(i) {
            Some(t) if n <= CellType::ALL.len() => t.name().to_string(),
            _ => format!("class_{i}"),
        })
        .collect()
}

/// A detector of any architecture and the variables it lives in.
#[derive(Debug)]
pub struct Detector {
    vs: nn::VarStore,
    model: Box<dyn TwoStageDetector>,
    card: ModelCard,
}

impl Detector {
    /// The detector that `cfg` describes, randomly initialised on `device`, with
    /// [`default_class_names`].
    ///
    /// # Errors
    /// The backbone's or the heads' config error, or an architecture not built yet.
    pub fn from_config(device: Device, cfg: &DetectorConfig) -> Result<Self, HookError> {
        let vs = nn::VarStore::new(device);
        let model = cfg.build(&vs.root())?;
        let card = ModelCard {
            format: ModelCard::FORMAT,
            class_names: default_class_names(cfg.heads.num_classes),
            input: InputNormalisation::default(),
            model: cfg.clone(),
        };
        Ok(Self { vs, model, card })
    }

    /// Names the labels (written to the run folder's `model.toml`).
    ///
    /// # Errors
    /// When the number of names differs from the number of classes.
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self, HookError> {
        if names.len() as i64 != self.model.num_classes() {
            return Err(format!(
                "{} class names for a model with {} classes",
                names.len(),
                self.model.num_classes()
            )
            .into());
        }
        self.card.class_names = names;
        Ok(self)
    }

    /// Rebuilds a trained model from its run folder alone (or a checkpoint folder inside one, or
    /// the `model.safetensors` of one): the architecture from the run's `model.toml`, the weights
    /// from `latest.json`'s checkpoint (a checkpoint folder: that one), loaded strictly.
    ///
    /// # Errors
    /// [`Error::ModelCard`] when no `model.toml` is found (naming where it was looked for) or it
    /// is invalid; the checkpoint errors of [`resolve_checkpoint_file`] and
    /// [`crate::checkpoint::load_weights`] (missing / unexpected / wrongly shaped keys by name).
    pub fn from_run(device: Device, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let weights = resolve_checkpoint_file(path, RunCheckpoint::Latest)?;
        let card_path = find_model_card(&weights).ok_or_else(|| Error::ModelCard {
            path: path.join(MODEL_CARD_FILE),
            reason: format!(
                "no {MODEL_CARD_FILE} beside {} or in the run folders above it (runs written \
                 before model cards cannot be rebuilt from their folder)",
                weights.display()
            ),
        })?;
        let card = ModelCard::read(&card_path)?;
        let vs = nn::VarStore::new(device);
        let model = card
            .model
            .build(&vs.root())
            .map_err(|e| Error::ModelCard { path: card_path.clone(), reason: e.to_string() })?;
        crate::checkpoint::load_weights(&vs, &weights)?;
        Ok(Self { vs, model, card })
    }

    /// The model.
    pub fn model(&self) -> &dyn TwoStageDetector {
        self.model.as_ref()
    }

    /// The model's self-description.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Checks that `data` can train this detector before the first step: when the detector
    /// [needs instance masks](TwoStageDetector::needs_instance_masks) (HTC builds its semantic
    /// target from them), every training image with ground truths needs at least one mask pixel
    /// (an empty mask after an augmentation crop is fine; data without masks is not). Other
    /// detectors accept any data.
    ///
    /// # Errors
    /// [`Error::NoMasks`] naming the first such image.
    pub fn check_training_data(&self, data: &SampleData) -> Result<(), Error> {
        if !self.model.needs_instance_masks() {
            return Ok(());
        }
        match data
            .samples()
            .iter()
            .find(|s| !s.instances.is_empty() && s.instances.masks.iter().all(|m| m.area() == 0))
        {
            Some(s) => Err(Error::NoMasks { id: s.id.clone(), instances: s.instances.len() }),
            None => Ok(()),
        }
    }

    /// Detections with soft masks of every image of `batch` (inference mode, no gradients).
    ///
    /// # Errors
    /// The heads' error.
    pub fn predict(&self, batch: &Batch) -> Result<Vec<SoftDetections>, HookError> {
        let images = batch_tensor(batch, self.vs.device());
        let dets = tch::no_grad(|| self.model.predict(&images, &batch.image_sizes))?;
        Ok(dets)
    }
}

/// `model.toml` in the folder of `weights` or up to three folders above it (a checkpoint is
/// `<run>/checkpoints/step-…/model.safetensors`).
fn find_model_card(weights: &Path) -> Option<PathBuf> {
    weights.ancestors().skip(1).take(4).map(|d| d.join(MODEL_CARD_FILE)).find(|p| p.is_file())
}

/// The `[B, 3, H, W]` tensor of a batch, on `device`.
pub fn batch_tensor(batch: &Batch, device: Device) -> Tensor {
    let s = batch.shape.map(|v| v as i64);
    Tensor::from_slice(&batch.images).view(s).to_device(device)
}

impl TrainableModel for Detector {
    type Batch = Batch;

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The detector's losses under mmdet's names (Mask R-CNN: `loss_rpn_cls`, `loss_rpn_bbox`,
    /// `loss_cls`, `loss_bbox`, `loss_mask`; Cascade: the RPN's and `s{i}.loss_cls`,
    /// `s{i}.loss_bbox`, `s{i}.loss_mask`; HTC also `loss_semantic_seg`).
    fn losses(&mut self, batch: &Batch) -> Result<Losses, HookError> {
        let images = batch_tensor(batch, self.vs.device());
        Ok(self.model.losses(&images, &batch.instances)?)
    }

    fn description(&self) -> Result<Option<String>, HookError> {
        Ok(Some(toml::to_string(&self.card)?))
    }
}

/// In-memory training samples, augmented per batch with a seed derived from the engine's seed.
#[derive(Debug)]
pub struct SampleData {
    samples: Vec<Sample>,
    augment: Augment,
    /// Each sample is visited this many times per epoch (index `i` is sample `i / repeat`).
    repeat: usize,
}

impl SampleData {
    /// Samples and the augmentation pipeline applied to them.
    ///
    /// # Errors
    /// An invalid augmentation config.
    pub fn new(samples: Vec<Sample>, augment: AugmentConfig) -> Result<Self, HookError> {
        Ok(Self { samples, augment: Augment::new(augment)?, repeat: 1 })
    }

    /// Visits each sample `repeat` times per epoch (at least once), each visit with its own
    /// augmentation draw — for small data sets, without copying the images.
    #[must_use]
    pub fn with_repeat(mut self, repeat: usize) -> Self {
        self.repeat = repeat.max(1);
        self
    }

    /// The sample behind epoch index `i`.
    fn sample(&self, i: usize) -> &Sample {
        &self.samples[i / self.repeat]
    }

    /// The samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }
}

impl TrainData for SampleData {
    type Batch = Batch;

    fn len(&self) -> usize {
        self.samples.len() * self.repeat
    }

    fn image_ids(&self, indices: &[usize]) -> Vec<String> {
        indices.iter().map(|&i| self.sample(i).id.clone()).collect()
    }

    /// Augments each sample (a crop that keeps no cell falls back to the un-augmented sample,
    /// with a warning) and collates them padded to [`SIZE_DIVISOR`].
    fn batch(&mut self, indices: &[usize], seed: u64) -> Result<Batch, HookError> {
        let mut out = Vec::with_capacity(indices.len());
        for (k, &i) in indices.iter().enumerate() {
            let s = self.sample(i);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((k as u64 + 1) << 32) ^ i as u64);
            match self.augment.apply(s, &mut rng) {
                Ok(a) => out.push(a),
                Err(cellseg_data::Error::NoInstanceSurvives { .. }) => {
                    tracing::warn!(id = %s.id, "no crop keeps a cell; using the full image");
                    out.push(s.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Batch::collate(out, SIZE_DIVISOR))
    }

    fn padded_size(&self, batch: &Batch) -> Option<(usize, usize)> {
        Some((batch.shape[2], batch.shape[3]))
    }
}

/// Held-out images scored with the competition metric after post-processing.
#[derive(Debug)]
pub struct DetectorValidator {
    samples: Vec<Sample>,
    pipeline: Pipeline,
    class_space: Option<ClassSpace>,
}

/// A label space other than the three Sartorius cell types (e.g. LIVECell's 8 cell lines), for
/// [`DetectorValidator::with_class_space`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSpace {
    /// The name of each label (`names[label]`); an image's per-group score is reported under the
    /// name of its ground truth's majority label (`label_<n>` past the end of the list).
    pub names: Vec<String>,
    /// The Sartorius cell type whose post-processing thresholds every image gets (cellseg-postproc
    /// indexes its per-type parameters by the 3 Sartorius types, and would reject other labels).
    pub postproc_as: CellType,
}

impl ClassSpace {
    /// LIVECell's 8 cell lines in the seed's `LIVECELL_CLASSES` order (SEED.md §1.4).
    pub fn livecell(postproc_as: CellType) -> Self {
        Self {
            names: LivecellClass::ALL.iter().map(|c| c.name().to_string()).collect(),
            postproc_as,
        }
    }
}

/// The outcome of [`DetectorValidator::evaluate`].
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Post-processed predictions, one per held-out image.
    pub processed: Vec<Processed>,
    /// Per-image metric (same order).
    pub scores: Vec<ImageScore>,
    /// Overall mean metric and per cell type.
    pub report: EvalReport,
}

impl DetectorValidator {
    /// A validator over `samples` (each image's cell type is its ground truth's majority label).
    ///
    /// # Errors
    /// An invalid post-processing config.
    pub fn new(samples: Vec<Sample>, postproc: PostprocConfig) -> Result<Self, HookError> {
        Ok(Self { samples, pipeline: Pipeline::new(postproc)?, class_space: None })
    }

    /// Scores a model whose labels are not the 3 Sartorius cell types (e.g. the 8 LIVECell cell
    /// lines): per-group scores use `space.names` of each image's majority ground-truth label, and
    /// every prediction is post-processed with the thresholds of `space.postproc_as` (the
    /// predicted labels are kept in [`Evaluation::processed`]).
    #[must_use]
    pub fn with_class_space(mut self, space: ClassSpace) -> Self {
        self.class_space = Some(space);
        self
    }

    /// The held-out samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Predicts, post-processes and scores every held-out image.
    ///
    /// # Errors
    /// The heads', post-processing's or metric's error, naming the image.
    pub fn evaluate(&self, model: &Detector) -> Result<Evaluation, HookError> {
        let mut processed = Vec::with_capacity(self.samples.len());
        let mut scores = Vec::with_capacity(self.samples.len());
        for s in &self.samples {
            let (p, score) = self.score(model, s)?;
            scores.push(score);
            processed.push(p);
        }
        let values: Vec<f64> = scores.iter().map(|s| s.score).collect();
        let report = self.report(&values);
        Ok(Evaluation { processed, scores, report })
    }

    /// [`Self::evaluate`]'s report, computed by the ranks of `group` together: rank `r` scores
    /// the images `r, r + world, …`, and every rank gets the same report, equal to the
    /// one-process one (the same per-image scores, summed in the same order).
    ///
    /// # Errors
    /// As [`Self::evaluate`]; a failing collective.
    pub fn evaluate_sharded(
        &self,
        model: &Detector,
        group: &ProcessGroup,
    ) -> Result<EvalReport, HookError> {
        let (rank, world) = (group.rank(), group.world_size());
        let mut mine = vec![0.0; self.samples.len()];
        for (i, s) in self.samples.iter().enumerate().skip(rank).step_by(world) {
            mine[i] = self.score(model, s)?.1.score;
        }
        // Each image is scored on one rank and 0 elsewhere: the sums are the scores exactly.
        let all = group.all_gather_f64(&mine)?;
        let values: Vec<f64> =
            (0..mine.len()).map(|i| all.iter().map(|r| r[i]).sum::<f64>()).collect();
        Ok(self.report(&values))
    }

    /// The post-processed predictions of the first `n` held-out images (for overlays).
    ///
    /// # Errors
    /// As [`Self::evaluate`].
    pub fn process_first(&self, model: &Detector, n: usize) -> Result<Vec<Processed>, HookError> {
        self.samples.iter().take(n).map(|s| Ok(self.score(model, s)?.0)).collect()
    }

    /// Predicts, post-processes and scores one held-out image.
    fn score(&self, model: &Detector, s: &Sample) -> Result<(Processed, ImageScore), HookError> {
        let batch = Batch::collate(vec![s.clone()], SIZE_DIVISOR);
        let dets = model.predict(&batch)?.remove(0);
        // Soft masks, binarised once by the pipeline at its `mask_threshold` (seed 0.45).
        let p = match &self.class_space {
            None => self.pipeline.run(&s.id, &cell_type_detections(dets))?,
            Some(space) => {
                let mut relabelled = dets.clone();
                relabelled.labels.iter_mut().for_each(|l| *l = space.postproc_as.label());
                let mut p = self.pipeline.run(&s.id, &relabelled)?;
                p.detections.labels = p.source_indices.iter().map(|&i| dets.labels[i]).collect();
                p
            }
        };
        let ious = IouMatrix::from_cropped(&s.instances.masks, &p.detections.masks)
            .map_err(|e| format!("{}: {e}", s.id))?;
        Ok((p, image_score(&ious)))
    }

    /// The mean of the per-image `scores` (in sample order) overall and per group: an image's
    /// group is its majority ground-truth label, named in the class space.
    fn report(&self, scores: &[f64]) -> EvalReport {
        let mut by_type: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (s, &score) in self.samples.iter().zip(scores) {
            let group = majority_label(&s.instances.labels).map(|l| {
                let name = match &self.class_space {
                    None => CellType::from_label(l).map(|t| t.name().to_string()),
                    Some(space) => space.names.get(l).cloned(),
                };
                name.unwrap_or_else(|| format!("label_{l}"))
            });
            if let Some(g) = group {
                by_type.entry(g).or_default().push(score);
            }
        }
        EvalReport {
            score: mean(scores).unwrap_or(0.0),
            per_type: by_type.iter().map(|(k, v)| (k.clone(), mean(v).unwrap_or(0.0))).collect(),
            extra: BTreeMap::new(),
        }
    }
}

/// The mean of `values` summed in order (as `cellseg_metrics::mean_score` sums image scores).
fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The detections whose label is a Sartorius cell type (0, 1, 2): the seed finetunes with 8-class
/// heads (SEED.md §2.4) and post-processes only the first three classes' results
/// (`quick_post_process_preds(.., num_classes=3)`), so a detection of a LIVECell-only class is
/// dropped, not an error. `Processed::source_indices` then index the kept detections.
fn cell_type_detections(dets: SoftDetections) -> SoftDetections {
    let keep: Vec<usize> = (0..dets.labels.len())
        .filter(|&i| CellType::from_label(dets.labels[i]).is_some())
        .collect();
    if keep.len() == dets.labels.len() {
        return dets;
    }
    SoftDetections {
        image_size: dets.image_size,
        boxes: keep.iter().map(|&i| dets.boxes[i]).collect(),
        scores: keep.iter().map(|&i| dets.scores[i]).collect(),
        labels: keep.iter().map(|&i| dets.labels[i]).collect(),
        masks: keep.iter().filter_map(|&i| dets.masks.get(i).cloned()).collect(),
    }
}

impl Validator<Detector> for DetectorValidator {
    fn validate(&mut self, model: &mut Detector) -> Result<EvalReport, HookError> {
        Ok(self.evaluate(model)?.report)
    }

    fn validate_sharded(
        &mut self,
        model: &mut Detector,
        group: &ProcessGroup,
    ) -> Result<EvalReport, HookError> {
        self.evaluate_sharded(model, group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_backbones::{FpnConfig, TinyConfig};

    #[test]
    fn detections_of_classes_beyond_the_cell_types_are_dropped_before_post_processing() {
        let size = cellseg_core::ImageSize::new(8, 8);
        let mask = |v: u8| {
            cellseg_postproc::SoftMask::from_full_frame(size, &vec![v; size.pixels()]).unwrap()
        };
        let b = cellseg_core::BoxXyxy::new(0.0, 0.0, 4.0, 4.0);
        let dets = SoftDetections {
            image_size: size,
            boxes: vec![b; 4],
            scores: vec![0.9, 0.8, 0.7, 0.6],
            labels: vec![0, 5, 2, 7],
            masks: vec![mask(10), mask(20), mask(30), mask(40)],
        };
        let kept = cell_type_detections(dets.clone());
        assert_eq!(kept.labels, vec![0, 2]);
        assert_eq!(kept.scores, vec![0.9, 0.7]);
        assert_eq!(kept.masks, vec![dets.masks[0].clone(), dets.masks[2].clone()]);
        let only_cells = SoftDetections { labels: vec![0, 1, 2, 0], ..dets };
        assert_eq!(cell_type_detections(only_cells.clone()).labels, only_cells.labels);
    }

    #[test]
    fn repeat_visits_each_sample_in_turn_without_copies() {
        let samples = cellseg_data::synthetic::samples(2, cellseg_core::ImageSize::new(32, 32), 0);
        let ids: Vec<String> = samples.iter().map(|s| s.id.clone()).collect();
        let data = SampleData::new(samples, AugmentConfig::default()).unwrap().with_repeat(3);
        assert_eq!(data.len(), 6);
        assert_eq!(data.samples().len(), 2);
        let want: Vec<String> = [0, 0, 0, 1, 1, 1].iter().map(|&i| ids[i].clone()).collect();
        assert_eq!(data.image_ids(&[0, 1, 2, 3, 4, 5]), want);
        assert_eq!(
            SampleData::new(Vec::new(), AugmentConfig::default()).unwrap().with_repeat(0).repeat,
            1
        );
    }

    #[test]
    fn livecell_class_space_names_the_eight_cell_lines() {
        let space = ClassSpace::livecell(CellType::Shsy5y);
        assert_eq!(space.names.len(), 8);
        assert_eq!(space.names[0], "skbr3");
        assert_eq!(space.names[7], "shsy5y");
    }

    #[test]
    fn livecell_labels_are_scored_per_cell_line() {
        let mut cfg = DetectorConfig { trunk: Trunk::Tiny, ..DetectorConfig::default() };
        cfg.tiny = TinyConfig { widths: [8, 8, 16, 16], ..TinyConfig::default() };
        cfg.neck = FpnConfig { out_channels: 8, num_outs: 5 };
        cfg.heads.num_classes = 8;
        cfg.heads.rpn.feat_channels = 8;
        cfg.heads.bbox_head.fc_channels = 16;
        cfg.heads.mask_head.num_convs = 1;
        cfg.heads.mask_head.conv_channels = 8;
        // Untrained: keep every detection so that predicted labels 0..=7 reach post-processing.
        cfg.heads.test.score_thr = 0.0;
        let model = Detector::from_config(Device::Cpu, &cfg).unwrap();
        let mut samples =
            cellseg_data::synthetic::samples(2, cellseg_core::ImageSize::new(64, 64), 0);
        for (s, class) in samples.iter_mut().zip([LivecellClass::Shsy5y, LivecellClass::Skov3]) {
            s.instances.labels.iter_mut().for_each(|l| *l = class.label());
        }
        let postproc = PostprocConfig { confidence_threshold: [0.0; 3], ..Default::default() };
        let v = DetectorValidator::new(samples, postproc)
            .unwrap()
            .with_class_space(ClassSpace::livecell(CellType::Shsy5y));
        let e = v.evaluate(&model).unwrap();
        let keys: Vec<&str> = e.report.per_type.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["shsy5y", "skov3"]);
        assert!(e.processed.iter().all(|p| p.detections.labels.iter().all(|&l| l < 8)));
    }
}
