//! The Mask R-CNN adapter: [`Detector`] ([`TrainableModel`] over cellseg-data [`Batch`]es),
//! [`SampleData`] ([`TrainData`] over in-memory samples with the cellseg-data augmentations) and
//! [`DetectorValidator`] (predict → cellseg-postproc → competition metric, overall and per cell
//! type).
//!
//! # Example
//! ```no_run
//! use cellseg_backbones::{FpnConfig, TinyConfig};
//! use cellseg_core::ImageSize;
//! use cellseg_data::{synthetic, AugmentConfig};
//! use cellseg_heads::config::HeadsConfig;
//! use cellseg_postproc::PostprocConfig;
//! use cellseg_train::detector::{Detector, DetectorValidator, SampleData};
//! use cellseg_train::{Start, TrainConfig, Trainer};
//!
//! let size = ImageSize::new(128, 128);
//! let heads = HeadsConfig { num_classes: 3, ..HeadsConfig::default() };
//! let fpn = FpnConfig { out_channels: 32, num_outs: 5 };
//! let mut model = Detector::tiny(tch::Device::Cpu, &TinyConfig::default(), &fpn, &heads)?;
//! let mut data = SampleData::new(synthetic::samples(12, size, 0), AugmentConfig::default())?;
//! let mut val = DetectorValidator::new(synthetic::samples(3, size, 1), PostprocConfig::default())?;
//! let cfg = TrainConfig { epochs: 2, batch_size: 2, ..TrainConfig::default() };
//! Trainer::new(cfg)?.fit(&mut model, &mut data, Some(&mut val), &mut (), Start::Fresh)?;
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

use std::collections::BTreeMap;

use cellseg_backbones::{BackboneConfig, FpnConfig, TinyConfig, TinyConvNet};
use cellseg_core::{CellType, Detections, LivecellClass};
use cellseg_data::{Augment, AugmentConfig, Batch, Sample};
use cellseg_heads::MaskRcnn;
use cellseg_heads::config::HeadsConfig;
use cellseg_metrics::competition::{ImageScore, IouMatrix, image_score, mean_score};
use cellseg_postproc::vote::majority_label;
use cellseg_postproc::{Pipeline, PostprocConfig, Processed};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn};

use crate::error::HookError;
use crate::losses::Losses;
use crate::observer::EvalReport;
use crate::trainer::{TrainData, TrainableModel, Validator};

/// Images are padded to a multiple of this (the coarsest FPN level, stride 32).
pub const SIZE_DIVISOR: usize = 32;

/// The trunk a [`Detector`] is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trunk {
    /// [`TinyConvNet`] (`DetectorConfig::tiny`): CPU demos and tests.
    Tiny,
    /// A ResNet / ResNeXt / EfficientNet of cellseg-backbones (`DetectorConfig::backbone`).
    Backbone,
}

/// Everything that defines a [`Detector`]'s architecture (the `[model]` table of the example
/// configs). Defaults: the seed's Mask R-CNN (`configs/maskrcnn.toml`: ResNet-50, stride-1
/// stem, FPN 256, mmdet 2.17 heads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Which trunk to build (default [`Trunk::Backbone`]).
    pub trunk: Trunk,
    /// Widths of the tiny trunk (used when `trunk = "tiny"`).
    pub tiny: TinyConfig,
    /// The backbone (used when `trunk = "backbone"`).
    pub backbone: BackboneConfig,
    /// FPN.
    pub neck: FpnConfig,
    /// RPN and RoI heads.
    pub heads: HeadsConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            trunk: Trunk::Backbone,
            tiny: TinyConfig::default(),
            backbone: BackboneConfig::default(),
            neck: FpnConfig::default(),
            heads: HeadsConfig::default(),
        }
    }
}

/// A Mask R-CNN and the variables it lives in.
#[derive(Debug)]
pub struct Detector {
    vs: nn::VarStore,
    model: MaskRcnn,
}

impl Detector {
    /// Wraps a model built in `vs`.
    pub fn new(vs: nn::VarStore, model: MaskRcnn) -> Self {
        Self { vs, model }
    }

    /// A Mask R-CNN on a [`TinyConvNet`] trunk (randomly initialised), for CPU runs.
    ///
    /// # Errors
    /// The backbone's or the heads' config error.
    pub fn tiny(
        device: Device,
        tiny: &TinyConfig,
        neck: &FpnConfig,
        heads: &HeadsConfig,
    ) -> Result<Self, HookError> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let trunk = TinyConvNet::new(&(&root / "backbone"), tiny)?;
        let model = MaskRcnn::with_backbone(&root, Box::new(trunk), neck, heads)?;
        Ok(Self { vs, model })
    }

    /// The Mask R-CNN that `cfg` describes, randomly initialised on `device`.
    ///
    /// # Errors
    /// The backbone's or the heads' config error.
    pub fn from_config(device: Device, cfg: &DetectorConfig) -> Result<Self, HookError> {
        match cfg.trunk {
            Trunk::Tiny => Self::tiny(device, &cfg.tiny, &cfg.neck, &cfg.heads),
            Trunk::Backbone => {
                cfg.backbone.validate()?;
                let vs = nn::VarStore::new(device);
                let root = vs.root();
                let trunk = cfg.backbone.build(&(&root / "backbone"))?;
                let model = MaskRcnn::with_backbone(&root, Box::new(trunk), &cfg.neck, &cfg.heads)?;
                Ok(Self { vs, model })
            }
        }
    }

    /// The model.
    pub fn model(&self) -> &MaskRcnn {
        &self.model
    }

    /// Binary detections of every image of `batch` (inference mode, no gradients).
    ///
    /// # Errors
    /// The heads' error.
    pub fn predict(&self, batch: &Batch) -> Result<Vec<Detections>, HookError> {
        let images = batch_tensor(batch, self.vs.device());
        let dets = tch::no_grad(|| self.model.predict(&images, &batch.image_sizes))?;
        Ok(dets)
    }
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

    /// The heads' five losses under mmdet's names: `loss_rpn_cls`, `loss_rpn_bbox`, `loss_cls`,
    /// `loss_bbox`, `loss_mask`.
    fn losses(&mut self, batch: &Batch) -> Result<Losses, HookError> {
        let images = batch_tensor(batch, self.vs.device());
        let l = self.model.losses(&images, &batch.instances)?;
        let mut out = Losses::new();
        out.push("loss_rpn_cls", l.rpn_cls);
        out.push("loss_rpn_bbox", l.rpn_reg);
        out.push("loss_cls", l.box_cls);
        out.push("loss_bbox", l.box_reg);
        out.push("loss_mask", l.mask);
        Ok(out)
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
        let mut by_type: BTreeMap<String, Vec<ImageScore>> = BTreeMap::new();
        for s in &self.samples {
            let batch = Batch::collate(vec![s.clone()], SIZE_DIVISOR);
            let dets = model.predict(&batch)?.remove(0);
            let p = match &self.class_space {
                None => self.pipeline.run_binary(&s.id, &dets)?,
                Some(space) => {
                    let mut relabelled = dets.clone();
                    relabelled.labels.iter_mut().for_each(|l| *l = space.postproc_as.label());
                    let mut p = self.pipeline.run_binary(&s.id, &relabelled)?;
                    p.detections.labels =
                        p.source_indices.iter().map(|&i| dets.labels[i]).collect();
                    p
                }
            };
            let ious = IouMatrix::from_cropped(&s.instances.masks, &p.detections.masks)
                .map_err(|e| format!("{}: {e}", s.id))?;
            let score = image_score(&ious);
            // The image's group: its majority ground-truth label, named in the class space.
            let group = majority_label(&s.instances.labels).map(|l| {
                let name = match &self.class_space {
                    None => CellType::from_label(l).map(|t| t.name().to_string()),
                    Some(space) => space.names.get(l).cloned(),
                };
                name.unwrap_or_else(|| format!("label_{l}"))
            });
            if let Some(g) = group {
                by_type.entry(g).or_default().push(score.clone());
            }
            scores.push(score);
            processed.push(p);
        }
        let report = EvalReport {
            score: mean_score(&scores).unwrap_or(0.0),
            per_type: by_type
                .iter()
                .map(|(k, v)| (k.clone(), mean_score(v).unwrap_or(0.0)))
                .collect(),
            extra: BTreeMap::new(),
        };
        Ok(Evaluation { processed, scores, report })
    }
}

impl Validator<Detector> for DetectorValidator {
    fn validate(&mut self, model: &mut Detector) -> Result<EvalReport, HookError> {
        Ok(self.evaluate(model)?.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        cfg.tiny = TinyConfig { widths: [8, 8, 16, 16] };
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
