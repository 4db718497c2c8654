//! Loading a pretrained checkpoint into a fresh model the seed's way, with a report.
//!
//! The seed (SEED.md §2.1 step 5, `load_pretrained_weights`) deletes every checkpoint key whose
//! name contains `fc_cls`, `fc_reg` or `conv_logits` (the class-specific last layers of the box
//! and mask heads), so those layers keep their fresh initialisation, then loads the rest with
//! `strict=False`, which silently ignores any other mismatch. cellseg does the same dropping, but
//! reports what happened ([`PretrainedReport`]: loaded, re-initialised, dropped, missing,
//! unexpected, wrongly shaped keys) and, unless [`PretrainedConfig::allow_partial`] is set,
//! refuses a checkpoint whose other keys do not match the model ([`Error::CheckpointMismatch`]
//! listing them), so weights of another architecture never load by halves unnoticed.
//!
//! [`load_pretrained`] accepts a `model.safetensors` file, a checkpoint folder of a
//! [`crate::CheckpointStore`] (`…/checkpoints/step-…/`) or a whole run folder (its `latest.json`
//! = the final checkpoint, or `best.json`, see [`RunCheckpoint`]).
//!
//! # Example
//! ```no_run
//! use cellseg_train::detector::{Detector, DetectorConfig, Trunk};
//! use cellseg_train::pretrained::{PretrainedConfig, load_pretrained};
//! use cellseg_train::TrainableModel;
//!
//! let mut cfg = DetectorConfig { trunk: Trunk::Tiny, ..DetectorConfig::default() };
//! cfg.heads.num_classes = 3;
//! let model = Detector::from_config(tch::Device::Cpu, &cfg)?;
//! // A LIVECell pretraining run (8 classes): its class heads are dropped and stay fresh.
//! let report = load_pretrained(
//!     model.var_store(),
//!     "runs/pretrain_livecell".as_ref(),
//!     &PretrainedConfig::default(),
//! )?;
//! println!("{report}");
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::checkpoint::{CheckpointStore, MODEL_FILE, read_tensors};
use crate::error::ShapeMismatch;
use crate::{Error, Result};

/// The seed's re-initialised layers: every key containing one of these is dropped (SEED.md §2.1).
pub const SEED_REINIT_PATTERNS: [&str; 3] = ["fc_cls", "fc_reg", "conv_logits"];

/// Which checkpoint of a run folder [`load_pretrained`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunCheckpoint {
    /// `latest.json`: the final checkpoint of a finished run (the seed finetuned from the final
    /// `{name}_{encoder}_0.pt` of its LIVECell run, SEED.md §2.1 / §3.6).
    #[default]
    Latest,
    /// `best.json`: the best validation score (falls back to `latest.json`, with a warning, when
    /// the run never validated).
    Best,
}

/// How [`load_pretrained`] maps a checkpoint onto a model (the `[pretrained]` table of a config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainedConfig {
    /// Keys containing one of these substrings are not loaded: the model keeps its fresh
    /// initialisation there. Default: the seed's `fc_cls`, `fc_reg`, `conv_logits`
    /// ([`SEED_REINIT_PATTERNS`]).
    pub reinit_patterns: Vec<String>,
    /// Prefixes removed from checkpoint keys before matching. Default `["module."]`: the seed's
    /// LIVECell checkpoints were saved from its `MMDataParallel` wrapper (SEED.md §2.1).
    pub strip_prefixes: Vec<String>,
    /// Load what matches and keep the rest fresh, even when keys outside `reinit_patterns` are
    /// missing, unexpected or wrongly shaped (the seed's `strict=False`). Default `false`: such a
    /// checkpoint is an error listing the keys.
    pub allow_partial: bool,
    /// Which checkpoint of a run folder to read.
    pub run_checkpoint: RunCheckpoint,
}

impl Default for PretrainedConfig {
    fn default() -> Self {
        Self {
            reinit_patterns: SEED_REINIT_PATTERNS.map(String::from).to_vec(),
            strip_prefixes: vec!["module.".into()],
            allow_partial: false,
            run_checkpoint: RunCheckpoint::Latest,
        }
    }
}

impl PretrainedConfig {
    /// Whether `key` belongs to a re-initialised layer.
    pub fn is_reinit(&self, key: &str) -> bool {
        self.reinit_patterns.iter().any(|p| key.contains(p.as_str()))
    }

    /// Checks the patterns.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty pattern (it would match every key).
    pub fn validate(&self) -> Result<()> {
        if self.reinit_patterns.iter().any(String::is_empty) {
            return Err(Error::InvalidConfig {
                key: "pretrained.reinit_patterns".into(),
                message: "holds an empty pattern, which would re-initialise every key".into(),
            });
        }
        Ok(())
    }
}

/// What [`load_pretrained`] did, key by key (all lists sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PretrainedReport {
    /// The safetensors file read.
    pub file: PathBuf,
    /// Model keys copied from the checkpoint.
    pub loaded: Vec<String>,
    /// Model keys matching a re-init pattern: left at their fresh initialisation.
    pub reinitialised: Vec<String>,
    /// Checkpoint keys matching a re-init pattern: not read.
    pub dropped: Vec<String>,
    /// Model keys (outside the patterns) the checkpoint lacks: left fresh.
    pub missing: Vec<String>,
    /// Checkpoint keys (outside the patterns) the model lacks: ignored.
    pub unexpected: Vec<String>,
    /// Keys (outside the patterns) whose shapes differ: left fresh.
    pub wrong_shape: Vec<ShapeMismatch>,
}

impl PretrainedReport {
    /// Whether every key outside the re-init patterns matched.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

/// At most 20 names, then a count of the rest.
fn short_list(names: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … ({} more)", names.len() - SHOWN));
    }
    s
}

impl fmt::Display for PretrainedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: loaded {} tensors, re-initialised {} [{}], dropped {} from the file",
            self.file.display(),
            self.loaded.len(),
            self.reinitialised.len(),
            short_list(&self.reinitialised),
            self.dropped.len()
        )?;
        if !self.is_exact() {
            write!(
                f,
                "; left fresh: {} missing [{}], {} wrongly shaped [{}]; ignored {} unexpected [{}]",
                self.missing.len(),
                short_list(&self.missing),
                self.wrong_shape.len(),
                short_list(&self.wrong_shape.iter().map(ToString::to_string).collect::<Vec<_>>()),
                self.unexpected.len(),
                short_list(&self.unexpected)
            )?;
        }
        Ok(())
    }
}

/// The safetensors file `path` names: the file itself, `<folder>/model.safetensors` for a
/// checkpoint folder, or the checkpoint `latest.json` / `best.json` points at for a run folder.
///
/// # Errors
/// [`Error::Io`] naming `path` when it does not exist; [`Error::CheckpointState`] for a folder
/// that is neither a checkpoint nor a run folder, or an unreadable pointer file.
pub fn resolve_checkpoint_file(path: &Path, which: RunCheckpoint) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).map_err(Error::io("reading pretrained checkpoint", path))?;
    if !meta.is_dir() {
        return Ok(path.to_path_buf());
    }
    let direct = path.join(MODEL_FILE);
    if direct.is_file() {
        return Ok(direct);
    }
    let store = CheckpointStore::new(path);
    let best = match which {
        RunCheckpoint::Best => store.best_dir()?,
        RunCheckpoint::Latest => None,
    };
    if which == RunCheckpoint::Best && best.is_none() && store.has_latest() {
        tracing::warn!(run = %path.display(), "no best.json (the run never validated): using latest.json");
    }
    let dir = match best {
        Some(d) => d,
        None => store.latest_dir()?.ok_or_else(|| Error::CheckpointState {
            path: path.to_path_buf(),
            message: format!(
                "is a folder holding neither {MODEL_FILE} (a checkpoint folder) nor latest.json \
                 (a run folder)"
            ),
        })?,
    };
    Ok(dir.join(MODEL_FILE))
}

/// Checks the first bytes of `path`: an 8-byte little-endian header length then a JSON object.
fn check_safetensors_header(path: &Path) -> Result<()> {
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(path).map_err(Error::io("opening", path))?;
    let len = f.metadata().map_err(Error::io("reading", path))?.len();
    let n = f.read(&mut head).map_err(Error::io("reading", path))?;
    let header_len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let ok = n == 9 && head[8] == b'{' && header_len.checked_add(8).is_some_and(|end| end <= len);
    if ok {
        return Ok(());
    }
    let what = if n < 9 {
        "too short to be a safetensors file"
    } else {
        "not a safetensors file (no 8-byte header length followed by a JSON header)"
    };
    Err(Error::Safetensors {
        path: path.to_path_buf(),
        source: tch::TchError::FileFormat(format!("{what} ({len} bytes)")),
    })
}

/// Loads the pretrained checkpoint at `path` (see [`resolve_checkpoint_file`]) into `vs`: keys
/// matching `cfg.reinit_patterns` are dropped and keep their fresh values, every other model key
/// is copied from the checkpoint.
///
/// # Errors
/// [`Error::CheckpointMismatch`] (nothing is copied then) when keys outside the patterns are
/// missing, unexpected or wrongly shaped and `cfg.allow_partial` is off; [`Error::Safetensors`]
/// naming the file when it is not a readable safetensors file; the errors of
/// [`resolve_checkpoint_file`]; [`Error::InvalidConfig`] for an empty pattern.
pub fn load_pretrained(
    vs: &nn::VarStore,
    path: &Path,
    cfg: &PretrainedConfig,
) -> Result<PretrainedReport> {
    cfg.validate()?;
    let file = resolve_checkpoint_file(path, cfg.run_checkpoint)?;
    let mut head = Vec::with_capacity(9);
    if let Ok(f) = std::fs::File::open(&file) {
        let _ = f.take(9).read_to_end(&mut head);
    }
    let tensors = if cellseg_backbones::pth::is_pth(&head) {
        // The seed's own LIVECell checkpoints are `torch.save`d state_dicts (`module.` keys).
        cellseg_backbones::pth::read_state_dict(&file)?.tensors
    } else {
        check_safetensors_header(&file)?;
        read_tensors(&file)?
    };
    let mut found: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in tensors {
        let key = cfg
            .strip_prefixes
            .iter()
            .find_map(|p| name.strip_prefix(p.as_str()))
            .unwrap_or(&name)
            .to_string();
        found.entry(key).or_insert(t);
    }
    let vars = vs.variables();
    let mut report = PretrainedReport { file: file.clone(), ..PretrainedReport::default() };
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        if cfg.is_reinit(name) {
            report.reinitialised.push(name.clone());
            continue;
        }
        match found.get(name) {
            None => report.missing.push(name.clone()),
            Some(t) if t.size() != vars[name].size() => report.wrong_shape.push(ShapeMismatch {
                key: name.clone(),
                expected: vars[name].size(),
                found: t.size(),
            }),
            Some(_) => report.loaded.push(name.clone()),
        }
    }
    for key in found.keys() {
        if cfg.is_reinit(key) {
            report.dropped.push(key.clone());
        } else if !vars.contains_key(key) {
            report.unexpected.push(key.clone());
        }
    }
    if !report.is_exact() && !cfg.allow_partial {
        return Err(Error::CheckpointMismatch {
            path: file,
            missing: report.missing,
            unexpected: report.unexpected,
            wrong_shape: report.wrong_shape,
        });
    }
    {
        let _guard = tch::no_grad_guard();
        for name in &report.loaded {
            let mut var = vars[name].shallow_clone();
            var.f_copy_(&found[name])?;
        }
    }
    if report.is_exact() {
        tracing::info!(
            file = %report.file.display(),
            loaded = report.loaded.len(),
            reinitialised = report.reinitialised.len(),
            dropped = report.dropped.len(),
            "pretrained weights loaded"
        );
    } else {
        tracing::warn!(report = %report, "pretrained weights loaded partially (allow_partial)");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::tests::state;
    use crate::checkpoint::{STATE_FILE, named_variables};
    use crate::detector::{Detector, DetectorConfig, Trunk};
    use crate::trainer::TrainableModel;
    use cellseg_backbones::{FpnConfig, TinyConfig};
    use tch::Device;

    fn tiny(num_classes: i64, widths: [i64; 4]) -> Detector {
        let mut cfg = DetectorConfig {
            trunk: Trunk::Tiny,
            tiny: TinyConfig { widths, ..TinyConfig::default() },
            neck: FpnConfig { out_channels: 8, num_outs: 5 },
            ..DetectorConfig::default()
        };
        cfg.heads.num_classes = num_classes;
        cfg.heads.rpn.feat_channels = 8;
        cfg.heads.bbox_head.fc_channels = 16;
        cfg.heads.mask_head.num_convs = 1;
        cfg.heads.mask_head.conv_channels = 8;
        Detector::from_config(Device::Cpu, &cfg).unwrap()
    }

    /// A run folder with one checkpoint of `model`, written by the checkpoint code.
    fn save_run(model: &Detector, dir: &Path) -> PathBuf {
        let store = CheckpointStore::new(dir);
        store.save(&named_variables(model.var_store()), &[], &state(5), Some(0.5), 2).unwrap()
    }

    fn values(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
        vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
    }

    #[test]
    fn class_heads_stay_fresh_and_everything_else_loads() {
        let dir = tempfile::tempdir().unwrap();
        let src = tiny(8, [8, 8, 16, 16]);
        let ckpt_dir = save_run(&src, dir.path());
        let saved = values(src.var_store());
        let dst = tiny(3, [8, 8, 16, 16]);
        let fresh = values(dst.var_store());

        // The run folder resolves to the checkpoint the Trainer's store wrote.
        let report =
            load_pretrained(dst.var_store(), dir.path(), &PretrainedConfig::default()).unwrap();
        assert_eq!(report.file, ckpt_dir.join(MODEL_FILE));
        assert!(report.is_exact(), "{report}");
        for end in [
            "fc_cls.weight",
            "fc_cls.bias",
            "fc_reg.weight",
            "fc_reg.bias",
            "conv_logits.weight",
            "conv_logits.bias",
        ] {
            assert!(report.reinitialised.iter().any(|k| k.ends_with(end)), "{report}");
        }
        assert_eq!(report.reinitialised.len(), 6);
        assert_eq!(report.dropped.len(), 6);
        assert_eq!(report.loaded.len() + 6, fresh.len());

        let now = values(dst.var_store());
        for (k, v) in &now {
            if report.reinitialised.contains(k) {
                // Fresh values, and shapes that differ from the file's.
                assert!(v.equal(&fresh[k]), "{k} changed");
                assert_ne!(v.size(), saved[k].size(), "{k}");
            } else {
                assert!(v.equal(&saved[k]), "{k} not loaded");
            }
        }
        // At least one loaded tensor really changed (the two models were drawn independently).
        assert!(report.loaded.iter().any(|k| !fresh[k].equal(&saved[k])));

        // The checkpoint folder and the file itself give the same.
        let dst2 = tiny(3, [8, 8, 16, 16]);
        let r2 =
            load_pretrained(dst2.var_store(), &ckpt_dir, &PretrainedConfig::default()).unwrap();
        assert_eq!(r2.loaded, report.loaded);
        let dst3 = tiny(3, [8, 8, 16, 16]);
        let cfg = PretrainedConfig { run_checkpoint: RunCheckpoint::Best, ..Default::default() };
        let r3 = load_pretrained(dst3.var_store(), &ckpt_dir.join(MODEL_FILE), &cfg).unwrap();
        assert_eq!(r3.loaded, report.loaded);
        assert!(ckpt_dir.join(STATE_FILE).is_file());
    }

    #[test]
    fn another_architecture_is_an_error_listing_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let src = tiny(8, [8, 8, 16, 16]);
        save_run(&src, dir.path());
        let dst = tiny(3, [8, 12, 16, 16]);
        let fresh = values(dst.var_store());
        let err =
            load_pretrained(dst.var_store(), dir.path(), &PretrainedConfig::default()).unwrap_err();
        let Error::CheckpointMismatch { wrong_shape, path, .. } = &err else { panic!("{err}") };
        assert!(path.ends_with(MODEL_FILE));
        assert!(!wrong_shape.is_empty());
        // The trunk's stage-1 width changed: its convs and the FPN lateral reading it.
        assert!(
            wrong_shape
                .iter()
                .all(|w| w.key.starts_with("backbone.") || w.key.starts_with("neck.")),
            "{wrong_shape:?}"
        );
        assert!(wrong_shape.iter().any(|w| w.key == "backbone.stage1.conv.conv.weight"));
        let msg = err.to_string();
        assert!(msg.contains(&wrong_shape[0].key) && msg.contains("[12"), "{msg}");
        // Nothing was copied.
        for (k, v) in values(dst.var_store()) {
            assert!(v.equal(&fresh[&k]), "{k}");
        }
        // allow_partial loads the rest and reports the mismatches.
        let cfg = PretrainedConfig { allow_partial: true, ..Default::default() };
        let report = load_pretrained(dst.var_store(), dir.path(), &cfg).unwrap();
        assert_eq!(report.wrong_shape, *wrong_shape);
        assert!(!report.loaded.is_empty());
        assert!(report.to_string().contains("wrongly shaped"));
    }

    #[test]
    fn missing_and_unexpected_keys_are_listed_and_prefixes_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.safetensors");
        let t = |s: &[i64]| Tensor::ones(s, (tch::Kind::Float, Device::Cpu));
        let saved = vec![
            ("module.a.w", t(&[2, 2])),
            ("module.head.fc_cls.weight", t(&[9, 2])),
            ("module.extra", t(&[1])),
        ];
        Tensor::write_safetensors(&saved, &file).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = vs.root().sub("a").zeros("w", &[2, 2]);
        let _ = vs.root().sub("b").zeros("w", &[3]);
        let _ = vs.root().sub("head").sub("fc_cls").zeros("weight", &[4, 2]);
        let err = load_pretrained(&vs, &file, &PretrainedConfig::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("missing keys [b.w]") && msg.contains("unexpected keys [extra]"),
            "{msg}"
        );
        let cfg = PretrainedConfig { allow_partial: true, ..Default::default() };
        let r = load_pretrained(&vs, &file, &cfg).unwrap();
        assert_eq!(r.loaded, vec!["a.w"]);
        assert_eq!(r.reinitialised, vec!["head.fc_cls.weight"]);
        assert_eq!(r.dropped, vec!["head.fc_cls.weight"]);
        assert_eq!(vs.variables()["a.w"].double_value(&[0, 0]), 1.0);
        assert_eq!(vs.variables()["head.fc_cls.weight"].double_value(&[0, 0]), 0.0);
    }

    #[test]
    fn a_file_that_is_not_safetensors_is_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let vs = tiny(3, [8, 8, 16, 16]);
        for (name, bytes) in [
            ("model.pt", b"PK\x03\x04 a torch zip".to_vec()),
            ("model.pkl", vec![0x80, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            ("notes.txt", b"hello, this is text and not tensors".to_vec()),
            ("empty.safetensors", vec![]),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err =
                load_pretrained(vs.var_store(), &path, &PretrainedConfig::default()).unwrap_err();
            let msg = err.to_string();
            // The first two are read as PyTorch files (and are not), the others as safetensors.
            assert!(matches!(err, Error::Safetensors { .. } | Error::Weights(_)), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        let missing = dir.path().join("nope");
        let err =
            load_pretrained(vs.var_store(), &missing, &PretrainedConfig::default()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err =
            load_pretrained(vs.var_store(), dir.path(), &PretrainedConfig::default()).unwrap_err();
        assert!(matches!(err, Error::CheckpointState { .. }), "{err}");
        let cfg = PretrainedConfig { reinit_patterns: vec![String::new()], ..Default::default() };
        let err = load_pretrained(vs.var_store(), dir.path(), &cfg).unwrap_err();
        assert!(err.to_string().contains("pretrained.reinit_patterns"), "{err}");
    }
}
