//! The ensemble config: the seed's `ENSEMBLE_CONFIG` (SEED.md §4.3), per cell type where the seed
//! has per-type values, read from TOML (`configs/ensemble.toml` spells out every value and its
//! source).
//!
//! Per-type lists are indexed `[shsy5y, astro, cort]` ([`CellType::label`]). Defaults are the
//! seed's `ENSEMBLE_CONFIG_ENS` (the several-model "best sub"); [`EnsembleConfig::seed_single`] is
//! its `ENSEMBLE_CONFIG_SINGLE`, and [`EnsembleConfig::of_member`] reproduces one detector's own
//! test settings (an ensemble of one with the identity view then equals its `predict`).

use std::path::Path;

use cellseg_core::CellType;
use cellseg_heads::TwoStageDetector;
use cellseg_heads::heads::rpn::ProposalConfig;
use cellseg_heads::roi_heads::RcnnTestConfig;
use serde::{Deserialize, Serialize};

use crate::proposals::CellTypeHeuristic;
use crate::views::View;
use crate::{Error, Result};

/// Settings of the whole ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnsembleConfig {
    /// File format version (1).
    pub version: u32,
    /// Foreground classes read from the members' heads: the first `num_classes` softmax columns
    /// (seed 3: its heads have 8 LIVECell classes, 3 are Sartorius's). Absent: all of the members'
    /// classes.
    pub num_classes: Option<usize>,
    /// The views every member sees, starting with `identity` (proposals come from it). Seed
    /// `use_tta = True`: identity, horizontal, vertical, diagonal; `["identity"]` is no TTA.
    pub views: Vec<View>,
    /// Masks from every view (`true`) or from the identity view only. Seed: `True` (HEAD; the
    /// "best sub" `d694c7e` had `False`).
    pub use_tta_masks: bool,
    /// The seed's `DELTA`: the RoIs of flipped views move by this many pixels towards the origin
    /// on each flipped axis (then clamped to the image), and are not moved back. Seed 0.5; 0
    /// turns it off.
    pub delta: f64,
    /// The RPN cell-type heuristic.
    pub heuristic: CellTypeHeuristic,
    /// Proposals from the merged RPN outputs, per cell type.
    pub proposals: ProposalSettings,
    /// Merged boxes: NMS and score threshold per cell type.
    pub boxes: BoxSettings,
    /// Members used per cell type, and the classifier members (indices into the members, in the
    /// order they were given). Absent: every member everywhere.
    pub usage: Option<Usage>,
}

impl Default for EnsembleConfig {
    /// The seed's `ENSEMBLE_CONFIG_ENS` (SEED.md §4.3).
    fn default() -> Self {
        Self {
            version: 1,
            num_classes: None,
            views: View::ALL.to_vec(),
            use_tta_masks: true,
            delta: 0.5,
            heuristic: CellTypeHeuristic::default(),
            proposals: ProposalSettings::default(),
            boxes: BoxSettings::default(),
            usage: None,
        }
    }
}

/// `rpn_cfg[c]` of the seed's `EnsembleModel.get_configs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProposalSettings {
    /// Top-scoring anchors per level before NMS. ENS `[5000, 2000, 1000]`, SINGLE `[3000, 2000,
    /// 1000]`.
    pub nms_pre: [usize; 3],
    /// Per-level NMS IoU. ENS `[0.7, 0.75, 0.6]`, SINGLE `[0.75, 0.75, 0.6]`.
    pub nms_iou: [f64; 3],
    /// Keep proposals with objectness `> score_thr` after the NMS. ENS `[0.9, 0.9, 0.95]`,
    /// SINGLE `[0.95, 0.9, 0.95]`; a negative value: no threshold (mmdet's test_cfg has none).
    pub score_thr: [f64; 3],
    /// Proposals kept per image; 0 keeps all (the seed's `None`).
    pub max_per_img: [usize; 3],
    /// Keep proposals wider and taller than this (strict). Seed 0.
    pub min_bbox_size: f64,
}

impl Default for ProposalSettings {
    fn default() -> Self {
        Self {
            nms_pre: [5000, 2000, 1000],
            nms_iou: [0.7, 0.75, 0.6],
            score_thr: [0.9, 0.9, 0.95],
            max_per_img: [0, 0, 0],
            min_bbox_size: 0.0,
        }
    }
}

impl ProposalSettings {
    /// The RPN's [`ProposalConfig`] of `cell_type`.
    pub fn for_type(&self, cell_type: CellType) -> ProposalConfig {
        let i = cell_type.label();
        ProposalConfig {
            nms_pre: self.nms_pre[i],
            max_per_img: keep_all_as_max(self.max_per_img[i]),
            nms_iou: self.nms_iou[i],
            min_bbox_size: self.min_bbox_size,
            score_thr: (self.score_thr[i] >= 0.0).then_some(self.score_thr[i]),
        }
    }
}

/// `0` (keep all) as the largest count the heads take (they compare counts as `i64`).
fn keep_all_as_max(n: usize) -> usize {
    if n == 0 { i64::MAX as usize } else { n }
}

/// How the merged boxes are suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxNms {
    /// The seed (`bbox_nms = True`, `single_class_boxes_nms`): each box's label and score are the
    /// best of its merged class probabilities, one NMS over all classes.
    ClassAgnostic,
    /// mmdet's `multiclass_nms`: every (box, class) pair above the threshold, NMS per class — what
    /// a single detector's own `predict` does.
    PerClass,
    /// The seed's `bbox_nms = False`: no NMS, sorted by score.
    None,
}

/// `rcnn_cfg[c]` of the seed's `EnsembleModel.get_configs`, and its `bbox_nms` switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoxSettings {
    /// Seed: `class_agnostic`.
    pub nms: BoxNms,
    /// NMS IoU (suppress when IoU `>` thr). ENS `[0.7, 0.9, 0.6]`, SINGLE `[0.75, 0.9, 0.6]`.
    pub nms_iou: [f64; 3],
    /// Keep detections with score `> score_thr`. ENS `[0.2, 0.25, 0.5]`, SINGLE `[0.2, 0.3, 0.5]`.
    pub score_thr: [f64; 3],
    /// Detections kept per image, best first; 0 keeps all (the seed has no cap).
    pub max_per_img: usize,
    /// Drop boxes not at least this wide and tall; negative disables it (the seed, mmdet).
    pub min_bbox_size: f64,
}

impl Default for BoxSettings {
    fn default() -> Self {
        Self {
            nms: BoxNms::ClassAgnostic,
            nms_iou: [0.7, 0.9, 0.6],
            score_thr: [0.2, 0.25, 0.5],
            max_per_img: 0,
            min_bbox_size: -1.0,
        }
    }
}

impl BoxSettings {
    /// The thresholds of `cell_type` as an [`RcnnTestConfig`].
    pub fn for_type(&self, cell_type: CellType) -> RcnnTestConfig {
        let i = cell_type.label();
        RcnnTestConfig {
            score_thr: self.score_thr[i],
            nms_iou: self.nms_iou[i],
            max_per_img: keep_all_as_max(self.max_per_img),
            min_bbox_size: self.min_bbox_size,
        }
    }
}

/// The seed's `usage` dict (SEED.md §4.4): which members run for each cell type, and which
/// classify the image first (the majority label of their detections picks the type). A list
/// left out means every member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Members that decide the cell type by a majority vote of their box labels.
    pub cls: Option<Vec<usize>>,
    /// Members used for SH-SY5Y images.
    pub shsy5y: Option<Vec<usize>>,
    /// Members used for astrocyte images.
    pub astro: Option<Vec<usize>>,
    /// Members used for cortical-neuron images.
    pub cort: Option<Vec<usize>>,
}

impl Usage {
    /// The members of `cell_type`, or every one of `n`.
    pub fn for_type(&self, cell_type: CellType, n: usize) -> Vec<usize> {
        let l = match cell_type {
            CellType::Shsy5y => &self.shsy5y,
            CellType::Astro => &self.astro,
            CellType::Cort => &self.cort,
        };
        l.clone().unwrap_or_else(|| (0..n).collect())
    }

    /// The classifier members, or every one of `n`.
    pub fn classifiers(&self, n: usize) -> Vec<usize> {
        self.cls.clone().unwrap_or_else(|| (0..n).collect())
    }

    /// Whether every list is every member of `n` (then the seed skips the classifier pass).
    pub fn is_everyone(&self, n: usize) -> bool {
        let all: Vec<usize> = (0..n).collect();
        [&self.cls, &self.shsy5y, &self.astro, &self.cort]
            .iter()
            .all(|l| l.as_ref().is_none_or(|l| *l == all))
    }

    fn lists(&self) -> [(&'static str, &Option<Vec<usize>>); 4] {
        [("cls", &self.cls), ("shsy5y", &self.shsy5y), ("astro", &self.astro), ("cort", &self.cort)]
    }
}

impl EnsembleConfig {
    /// The seed's `ENSEMBLE_CONFIG_SINGLE` (one model; SEED.md §4.3).
    pub fn seed_single() -> Self {
        let mut c = Self::default();
        c.proposals.nms_pre = [3000, 2000, 1000];
        c.proposals.nms_iou = [0.75, 0.75, 0.6];
        c.proposals.score_thr = [0.95, 0.9, 0.95];
        c.boxes.nms_iou = [0.75, 0.9, 0.6];
        c.boxes.score_thr = [0.2, 0.3, 0.5];
        c
    }

    /// One detector's own test settings (`test_cfg.rpn` and `test_cfg.rcnn`, per-class NMS, all
    /// its classes, no DELTA) for every cell type, with the identity view only: an ensemble of
    /// `model` alone then predicts what `model.predict` does.
    pub fn of_member(model: &dyn TwoStageDetector) -> Self {
        let p = model.test_proposals();
        let r = model.rcnn_test();
        Self {
            version: 1,
            num_classes: None,
            views: vec![View::Identity],
            use_tta_masks: true,
            delta: 0.0,
            heuristic: CellTypeHeuristic::default(),
            proposals: ProposalSettings {
                nms_pre: [p.nms_pre; 3],
                nms_iou: [p.nms_iou; 3],
                score_thr: [p.score_thr.unwrap_or(-1.0); 3],
                max_per_img: [p.max_per_img; 3],
                min_bbox_size: p.min_bbox_size,
            },
            boxes: BoxSettings {
                nms: BoxNms::PerClass,
                nms_iou: [r.nms_iou; 3],
                score_thr: [r.score_thr; 3],
                max_per_img: r.max_per_img,
                min_bbox_size: r.min_bbox_size,
            },
            usage: None,
        }
    }

    /// Reads and validates a TOML file (every key optional, defaults as [`Default`]).
    ///
    /// # Errors
    /// [`Error::Core`] naming the file and key for unreadable or invalid TOML, or an unknown key;
    /// [`Error::Config`] for a value that [`Self::validate`] refuses.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let cfg: Self = cellseg_core::config::load_toml(path)?;
        cfg.validated(path)
    }

    /// `self` when [`Self::validate`] accepts it; its errors name `path`.
    fn validated(self, path: &Path) -> Result<Self> {
        self.validate().map_err(|e| match e {
            Error::Config { reason, .. } => {
                Error::Config { path: Some(path.to_path_buf()), reason }
            }
            e => e,
        })?;
        Ok(self)
    }

    /// [`Self::load`] with members that have names: a `[usage]` list (and `cls`) may name members
    /// instead of giving indices. `names` maps each name to the members it stands for (an
    /// experiment's name to all its folds); a name expands to those indices, in order.
    ///
    /// # Errors
    /// As [`Self::load`]; [`Error::Config`] naming the file, the list and an unknown name, with
    /// every known name.
    pub fn load_named(path: impl AsRef<Path>, names: &[(String, Vec<usize>)]) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| {
            Error::Core(cellseg_core::Error::ConfigIo { path: path.to_path_buf(), source })
        })?;
        let mut table: toml::Table = cellseg_core::config::parse_toml(&text, path)?;
        let mut named = false;
        if let Some(toml::Value::Table(usage)) = table.get_mut("usage") {
            for (key, list) in usage.iter_mut() {
                let toml::Value::Array(items) = list else { continue };
                let mut out = Vec::with_capacity(items.len());
                for item in items.iter() {
                    let toml::Value::String(name) = item else {
                        out.push(item.clone());
                        continue;
                    };
                    named = true;
                    let Some((_, members)) = names.iter().find(|(n, _)| n == name) else {
                        let known: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(Error::Config {
                            path: Some(path.to_path_buf()),
                            reason: format!(
                                "usage.{key} names `{name}`, which is no member; the members are \
                                 named {}",
                                known.join(", ")
                            ),
                        });
                    };
                    out.extend(members.iter().map(|&i| toml::Value::Integer(i as i64)));
                }
                *items = out;
            }
        }
        if !named {
            return Self::load(path);
        }
        let rewritten = toml::to_string(&table).expect("a table");
        let cfg: Self = cellseg_core::config::parse_toml(&rewritten, path)?;
        cfg.validated(path)
    }

    /// The config as TOML (every value has a TOML form; `num_classes` and `usage` are left out
    /// when absent).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("numbers, strings, lists and tables serialise")
    }

    /// Checks the values that do not depend on the members.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key: another version, views that do not start with
    /// `identity` or repeat one, a negative or non-finite DELTA, an IoU or a score threshold
    /// outside `[0, 1]`, `num_classes = 0`, an empty usage list.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Config { path: None, reason });
        if self.version != 1 {
            return bad(format!("version = {}: this version reads version 1", self.version));
        }
        if self.views.first() != Some(&View::Identity) {
            return bad(format!(
                "views = {:?}: the first view must be \"identity\" (the proposals come from it)",
                self.views
            ));
        }
        for (i, v) in self.views.iter().enumerate() {
            if self.views[..i].contains(v) {
                return bad(format!("views: {v:?} is listed twice"));
            }
        }
        if !(self.delta.is_finite() && self.delta >= 0.0) {
            return bad(format!("delta = {}: must be finite and >= 0", self.delta));
        }
        if self.num_classes == Some(0) {
            return bad("num_classes = 0: read at least one class".into());
        }
        let unit = |key: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                bad(format!("{key} = {v}: must be in [0, 1]"))
            }
        };
        for i in 0..3 {
            unit("proposals.nms_iou", self.proposals.nms_iou[i])?;
            let t = self.proposals.score_thr[i];
            if t.is_nan() || t >= 0.0 {
                unit("proposals.score_thr", t)?;
            }
            unit("boxes.nms_iou", self.boxes.nms_iou[i])?;
            unit("boxes.score_thr", self.boxes.score_thr[i])?;
        }
        self.heuristic.validate()?;
        if let Some(u) = &self.usage {
            for (key, l) in u.lists() {
                if l.as_ref().is_some_and(Vec::is_empty) {
                    return bad(format!(
                        "usage.{key} = []: list at least one member, or leave it out"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the usage lists against `n` members.
    ///
    /// # Errors
    /// [`Error::Config`] naming the list and the index out of range.
    pub fn check_members(&self, n: usize) -> Result<()> {
        let Some(u) = &self.usage else { return Ok(()) };
        for (key, l) in u.lists() {
            if let Some(&i) = l.iter().flatten().find(|&&i| i >= n) {
                return Err(Error::Config {
                    path: None,
                    reason: format!(
                        "usage.{key} names member {i}, but there are {n} members (indices 0..{n})"
                    ),
                });
            }
        }
        Ok(())
    }
}
