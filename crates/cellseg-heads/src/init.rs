//! Starting weights from checkpoints published for other data sets (SEED.md §2.1,
//! `load_pretrained_weights`): an mmdet 2.x COCO checkpoint fills the whole detector, a
//! torchvision / timm ImageNet classifier fills the backbone only (FPN and heads keep their
//! random initialisation).
//!
//! Files are safetensors or PyTorch `.pth` / `.pt` (`torch.save`, read without Python by
//! [`cellseg_backbones::pth`]). Keys are renamed by [`cellseg_backbones::checkpoint::mmdet_key`]
//! (a detector: `module.` and the seed's `backbone.effnet.` dropped, ImageNet classifier keys
//! skipped) or [`cellseg_backbones::checkpoint::trunk_key`] (a backbone: `fc.*`, `conv_head.*`,
//! `bn2.*`, `classifier.*` skipped, the rest under `backbone.`). As the seed does, every model
//! key containing one of [`InitConfig::reinit_patterns`] (default `fc_cls`, `fc_reg`,
//! `conv_logits`: the class-specific last layers, whose shapes follow the class count) keeps its
//! fresh initialisation and the file's tensors for it are skipped. Unlike the seed's
//! `strict=False`, everything else must match: a missing, unexpected or wrongly shaped key is an
//! error listing all of them, and nothing is copied then.
//!
//! # Example
//! ```no_run
//! use cellseg_heads::init::{InitConfig, load_init};
//! # fn model() -> tch::nn::VarStore { unimplemented!() }
//! let vs = model(); // a detector built under the VarStore's root (backbone., neck., rpn_head., roi_head.)
//! let report = load_init(&vs, "cascade_mask_rcnn_r50_fpn_mstrain_3x_coco.pth".as_ref(), &InitConfig::default())?;
//! println!("{report}");
//! # Ok::<(), cellseg_heads::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use cellseg_backbones::checkpoint::{mmdet_key, trunk_key};
use cellseg_backbones::{KeyProblems, ShapeMismatch};
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::{Error, Result};

/// The seed's re-initialised layers: model keys containing one of these keep their fresh values.
pub const SEED_REINIT_PATTERNS: [&str; 3] = ["fc_cls", "fc_reg", "conv_logits"];

/// What a starting checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitKind {
    /// [`InitKind::Detector`] when a key (after `module.`) starts with `backbone.`, else
    /// [`InitKind::Backbone`].
    #[default]
    Auto,
    /// A whole mmdet 2.x detector (`backbone.`, `neck.`, `rpn_head.`, `roi_head.`).
    Detector,
    /// A torchvision / timm classifier: its trunk fills `backbone.`.
    Backbone,
}

impl fmt::Display for InitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Detector => "whole detector",
            Self::Backbone => "backbone only",
        })
    }
}

/// The `[init]` table of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InitConfig {
    /// The checkpoint (`--init` on the command line). Default: none, random initialisation.
    pub file: Option<PathBuf>,
    /// What it holds. Default [`InitKind::Auto`].
    pub kind: InitKind,
    /// Model keys containing one of these keep their fresh initialisation (detector files
    /// only). Default: the seed's [`SEED_REINIT_PATTERNS`]; `[]` loads every tensor.
    pub reinit_patterns: Vec<String>,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            file: None,
            kind: InitKind::Auto,
            reinit_patterns: SEED_REINIT_PATTERNS.map(String::from).to_vec(),
        }
    }
}

impl InitConfig {
    /// Checks the patterns.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty pattern (it would match every key).
    pub fn validate(&self) -> Result<()> {
        if self.reinit_patterns.iter().any(String::is_empty) {
            return Err(Error::Config {
                key: "init.reinit_patterns".into(),
                reason: "holds an empty pattern, which would re-initialise every key".into(),
            });
        }
        Ok(())
    }
}

/// What [`load_init`] did (all lists sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The file read.
    pub file: PathBuf,
    /// What it was taken for ([`InitKind::Detector`] or [`InitKind::Backbone`]).
    pub kind: InitKind,
    /// Model keys copied from the file.
    pub loaded: Vec<String>,
    /// Model keys matching a re-init pattern: left at their fresh initialisation.
    pub reinitialised: Vec<String>,
    /// File keys not read: the re-initialised layers' and the classifier head's.
    pub skipped: Vec<String>,
    /// Model keys outside the part the file fills (a backbone file: FPN and heads): left fresh.
    pub fresh: Vec<String>,
}

fn short(names: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut s = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … ({} more)", names.len() - SHOWN));
    }
    s
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): loaded {} tensors; re-initialised {} [{}]; skipped {} from the file [{}]",
            self.file.display(),
            self.kind,
            self.loaded.len(),
            self.reinitialised.len(),
            short(&self.reinitialised),
            self.skipped.len(),
            short(&self.skipped)
        )?;
        if !self.fresh.is_empty() {
            let parts: BTreeSet<&str> =
                self.fresh.iter().map(|k| k.split('.').next().unwrap_or(k)).collect();
            let parts: Vec<&str> = parts.into_iter().collect();
            write!(
                f,
                "; {} tensors of {} keep their random initialisation",
                self.fresh.len(),
                parts.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Loads the starting checkpoint `file` into the detector variables of `vs` as `cfg` says.
///
/// # Errors
/// The read errors of [`cellseg_backbones::checkpoint::read`] (naming the file; a `.pth`
/// that is truncated or holds no state_dict); [`cellseg_backbones::Error::CheckpointMismatch`]
/// listing every missing, unexpected and wrongly shaped key outside the re-init patterns
/// (nothing is copied then); [`Error::Config`] for an empty pattern.
pub fn load_init(vs: &nn::VarStore, file: &Path, cfg: &InitConfig) -> Result<InitReport> {
    cfg.validate()?;
    let tensors = cellseg_backbones::checkpoint::read(file)?;
    let kind = match cfg.kind {
        InitKind::Auto => {
            let detector = tensors
                .iter()
                .any(|(k, _)| k.strip_prefix("module.").unwrap_or(k).starts_with("backbone."));
            if detector { InitKind::Detector } else { InitKind::Backbone }
        }
        k => k,
    };
    let mut report = InitReport {
        file: file.to_path_buf(),
        kind,
        loaded: Vec::new(),
        reinitialised: Vec::new(),
        skipped: Vec::new(),
        fresh: Vec::new(),
    };
    let is_reinit = |k: &str| {
        kind == InitKind::Detector && cfg.reinit_patterns.iter().any(|p| k.contains(p.as_str()))
    };
    let mut found: BTreeMap<String, Tensor> = BTreeMap::new();
    for (key, t) in tensors {
        let mapped = match kind {
            InitKind::Backbone => trunk_key(&key).map(|k| format!("backbone.{k}")),
            _ => mmdet_key(&key),
        };
        match mapped {
            Some(m) if !is_reinit(&m) => {
                found.insert(m, t);
            }
            _ => report.skipped.push(key),
        }
    }
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut problems = KeyProblems::default();
    for name in names {
        if is_reinit(name) {
            report.reinitialised.push(name.clone());
        } else if kind == InitKind::Backbone && !name.starts_with("backbone.") {
            report.fresh.push(name.clone());
        } else {
            match found.get(name) {
                None => problems.missing.push(name.clone()),
                Some(t) if t.size() != vars[name].size() => {
                    problems.mismatched.push(ShapeMismatch {
                        key: name.clone(),
                        expected: vars[name].size(),
                        found: t.size(),
                    })
                }
                Some(_) => report.loaded.push(name.clone()),
            }
        }
    }
    problems.unexpected = found.keys().filter(|k| !vars.contains_key(*k)).cloned().collect();
    if !problems.is_empty() {
        return Err(cellseg_backbones::Error::CheckpointMismatch {
            path: file.to_path_buf(),
            problems,
        }
        .into());
    }
    tch::no_grad(|| -> Result<()> {
        for name in &report.loaded {
            vars[name].shallow_clone().f_copy_(&found[name])?;
        }
        Ok(())
    })?;
    report.skipped.sort();
    tracing::info!(
        file = %file.display(),
        kind = %kind,
        loaded = report.loaded.len(),
        reinitialised = report.reinitialised.len(),
        skipped = report.skipped.len(),
        fresh = report.fresh.len(),
        "starting weights loaded"
    );
    Ok(report)
}
