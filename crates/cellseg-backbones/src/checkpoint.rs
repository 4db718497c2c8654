//! Strict loading of safetensors and PyTorch `.pth` checkpoints into any tch [`nn::VarStore`], and
//! saving as safetensors.
//!
//! Variable names in cellseg are the PyTorch `state_dict` keys (torchvision / timm for trunks,
//! mmdet for detectors), so a file exported by `tools/export_weights.py` loads without renaming.
//! Loading is strict: every missing, unexpected and wrongly shaped key is reported, by name, in
//! one [`Error::CheckpointMismatch`]; only the patterns of a [`LoadPolicy`] relax that.
//!
//! # Key mapping from mmdet checkpoints ([`KeyMap::Mmdet`], [`mmdet_key`])
//! | mmdet 2.x checkpoint key | cellseg variable |
//! |---|---|
//! | `module.X` (DataParallel wrapper, the seed's LIVECell `.pt`) | `X`, then the rows below |
//! | `backbone.conv1.*`, `backbone.bn1.*`, `backbone.layer{1..4}.*` (ResNet / ResNeXt) | unchanged |
//! | `backbone.effnet.X` (the seed's timm EfficientNet wrapper) | `backbone.X` |
//! | `backbone.effnet.{conv_head,bn2,classifier}.*`, `backbone.fc.*` (classifier heads) | dropped |
//! | `neck.lateral_convs.{i}.conv.*`, `neck.fpn_convs.{i}.conv.*` (FPN) | unchanged |
//! | `rpn_head.*`, `roi_head.*` | unchanged (heads crate) |
//!
//! [`KeyMap::Trunk`] does the same for a bare torchvision / timm classifier `state_dict`: it drops
//! `fc.*`, `conv_head.*`, `bn2.*` (timm's head norm; ResNets have no top-level `bn2`) and
//! `classifier.*`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::error::{KeyProblems, ShapeMismatch};
use crate::{Error, Result};

/// How file keys are renamed before they are matched with variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMap {
    /// Keys are used as they are (files written by `tools/export_weights.py` or [`save`]).
    #[default]
    Identity,
    /// mmdet 2.x detector keys, see [`mmdet_key`].
    Mmdet,
    /// A torchvision / timm classifier: drop the classification head, see [`trunk_key`].
    Trunk,
}

impl KeyMap {
    /// Maps one file key; `None` drops it.
    pub fn apply(self, key: &str) -> Option<String> {
        match self {
            Self::Identity => Some(key.to_string()),
            Self::Mmdet => mmdet_key(key),
            Self::Trunk => trunk_key(key),
        }
    }
}

/// Maps an mmdet 2.x checkpoint key to the cellseg variable name (`None`: not part of the
/// model, e.g. an ImageNet classifier). See the module docs for the table.
pub fn mmdet_key(key: &str) -> Option<String> {
    let key = key.strip_prefix("module.").unwrap_or(key);
    if let Some(rest) = key.strip_prefix("backbone.") {
        let rest = match rest.strip_prefix("effnet.") {
            Some(inner) => {
                if is_timm_head(inner) {
                    return None;
                }
                inner
            }
            None => rest,
        };
        if rest.starts_with("fc.") {
            return None;
        }
        return Some(format!("backbone.{rest}"));
    }
    Some(key.to_string())
}

/// Maps a torchvision / timm classifier key to the trunk variable name (`None` for the head:
/// `fc.*`, `conv_head.*`, `bn2.*`, `classifier.*`).
pub fn trunk_key(key: &str) -> Option<String> {
    if key.starts_with("fc.") || is_timm_head(key) { None } else { Some(key.to_string()) }
}

fn is_timm_head(key: &str) -> bool {
    ["conv_head.", "bn2.", "classifier."].iter().any(|h| key.starts_with(h))
}

/// What a strict load may tolerate, and which part of the VarStore it fills.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadPolicy {
    /// Only variables under this dotted prefix take part (`"backbone"` loads a trunk file into a
    /// whole detector); file keys are relative to it. Default: the whole VarStore.
    pub prefix: Option<String>,
    /// Renaming of file keys. Default [`KeyMap::Identity`].
    pub key_map: KeyMap,
    /// Regexes (on the relative key) of variables that may be absent from the file; they keep
    /// their initial values. Example: the seed re-initialises the class-specific layers,
    /// `'^roi_head\.(bbox_head\.fc_(cls|reg)|mask_head\.conv_logits)\.'`.
    pub allow_missing: Vec<String>,
    /// Regexes (on the mapped key) of file tensors that may match no variable; they are ignored.
    pub allow_unexpected: Vec<String>,
}

impl LoadPolicy {
    /// A strict policy over the variables under `prefix`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self { prefix: Some(prefix.into()), ..Self::default() }
    }
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of variables copied from the file.
    pub loaded: usize,
    /// Variables absent from the file that the policy allowed (relative keys, sorted).
    pub missing: Vec<String>,
    /// File keys matching no variable that the policy allowed (sorted).
    pub unexpected: Vec<String>,
    /// File keys dropped by the key map (sorted).
    pub dropped: Vec<String>,
}

fn compile(patterns: &[String]) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(p)
                .map_err(|e| Error::BadPattern { pattern: p.clone(), message: e.to_string() })
        })
        .collect()
}

/// Reads every tensor of a checkpoint file (on the CPU): a safetensors file, or the state_dict
/// of a PyTorch `torch.save` file (`.pth` / `.pt`, zip or legacy format, see [`crate::pth`]),
/// told apart by their first bytes.
///
/// # Errors
/// [`Error::CheckpointRead`] naming the file; for a PyTorch file the errors of
/// [`crate::pth::read_state_dict`].
pub fn read(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let mut head = Vec::with_capacity(9);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = std::io::Read::read_to_end(&mut std::io::Read::take(f, 9), &mut head);
    }
    if crate::pth::is_pth(&head) {
        return Ok(crate::pth::read_state_dict(path)?.tensors);
    }
    Tensor::read_safetensors(path)
        .map_err(|source| Error::CheckpointRead { path: path.to_path_buf(), source })
}

/// Loads the safetensors file at `path` into `vs` strictly, under `policy`.
///
/// # Errors
/// [`Error::CheckpointRead`] if the file cannot be read; [`Error::CheckpointMismatch`] listing
/// every missing, unexpected and wrongly shaped key (nothing is copied then);
/// [`Error::BadPattern`] for an invalid policy regex.
pub fn load(vs: &nn::VarStore, path: impl AsRef<Path>, policy: &LoadPolicy) -> Result<LoadReport> {
    let path = path.as_ref();
    let tensors = read(path)?;
    load_tensors(vs, tensors, policy, path)
}

/// [`load`] from tensors already in memory; `source` names them in errors.
///
/// # Errors
/// As [`load`], without the read error.
pub fn load_tensors(
    vs: &nn::VarStore,
    tensors: Vec<(String, Tensor)>,
    policy: &LoadPolicy,
    source: &Path,
) -> Result<LoadReport> {
    let allow_missing = compile(&policy.allow_missing)?;
    let allow_unexpected = compile(&policy.allow_unexpected)?;
    let prefix = policy.prefix.as_deref().map(|p| format!("{}.", p.trim_end_matches('.')));
    let vars: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter_map(|(name, t)| match &prefix {
            Some(pre) => name.strip_prefix(pre.as_str()).map(|rel| (rel.to_string(), t)),
            None => Some((name, t)),
        })
        .collect();

    let mut report = LoadReport::default();
    let mut problems = KeyProblems::default();
    let mut file: HashMap<String, Tensor> = HashMap::with_capacity(tensors.len());
    for (key, t) in tensors {
        match policy.key_map.apply(&key) {
            Some(mapped) => {
                file.insert(mapped, t);
            }
            None => report.dropped.push(key),
        }
    }
    let mut pairs = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        match file.get(name) {
            None if allow_missing.iter().any(|r| r.is_match(name)) => {
                report.missing.push(name.clone())
            }
            None => problems.missing.push(name.clone()),
            Some(t) if t.size() != var.size() => problems.mismatched.push(ShapeMismatch {
                key: name.clone(),
                expected: var.size(),
                found: t.size(),
            }),
            Some(t) => pairs.push((var, t)),
        }
    }
    let mut extra: Vec<&String> = file.keys().filter(|k| !vars.contains_key(*k)).collect();
    extra.sort();
    for key in extra {
        if allow_unexpected.iter().any(|r| r.is_match(key)) {
            report.unexpected.push(key.clone());
        } else {
            problems.unexpected.push(key.clone());
        }
    }
    if !problems.is_empty() {
        return Err(Error::CheckpointMismatch { path: source.to_path_buf(), problems });
    }
    tch::no_grad(|| -> Result<()> {
        for (var, t) in &pairs {
            var.shallow_clone().f_copy_(t)?;
        }
        Ok(())
    })?;
    report.loaded = pairs.len();
    report.dropped.sort();
    tracing::info!(
        path = %source.display(),
        loaded = report.loaded,
        allowed_missing = report.missing.len(),
        allowed_unexpected = report.unexpected.len(),
        dropped = report.dropped.len(),
        "checkpoint loaded"
    );
    for key in &report.unexpected {
        tracing::warn!(key, "unexpected checkpoint key ignored by policy");
    }
    for key in &report.missing {
        tracing::warn!(key, "variable absent from checkpoint keeps its initial value");
    }
    Ok(report)
}

/// Writes the variables of `vs` (those under `prefix`, keys relative to it, or all) to a
/// safetensors file, atomically: a temporary file in the same folder, then a rename.
///
/// # Errors
/// [`Error::CheckpointWrite`] naming the file.
pub fn save(vs: &nn::VarStore, path: impl AsRef<Path>, prefix: Option<&str>) -> Result<()> {
    let path = path.as_ref();
    let pre = prefix.map(|p| format!("{}.", p.trim_end_matches('.')));
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter_map(|(name, t)| match &pre {
            Some(pre) => name.strip_prefix(pre.as_str()).map(|rel| (rel.to_string(), t)),
            None => Some((name, t)),
        })
        .map(|(name, t)| (name, t.detach().to(tch::Device::Cpu).contiguous()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = temp_path(path);
    let write_err = |message: String| Error::CheckpointWrite { path: path.to_path_buf(), message };
    Tensor::write_safetensors(&named, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_err(e.to_string())
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_err(e.to_string())
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn store() -> nn::VarStore {
        let vs = nn::VarStore::new(Device::Cpu);
        let b = vs.root() / "backbone";
        let _ = (&b / "conv1").zeros("weight", &[2, 3]);
        let _ = (&b / "bn1").zeros("bias", &[2]);
        let _ = (vs.root() / "neck" / "lateral_convs" / 0 / "conv").zeros("weight", &[4]);
        vs
    }

    fn t(shape: &[i64], v: f64) -> Tensor {
        Tensor::full(shape, v, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn missing_extra_and_wrong_shape_are_reported_together() {
        let vs = store();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let file = vec![
            ("backbone.conv1.weight".to_string(), t(&[3, 2], 1.0)),
            ("neck.lateral_convs.0.conv.weight".to_string(), t(&[4], 1.0)),
            ("neck.extra.weight".to_string(), t(&[1], 1.0)),
        ];
        Tensor::write_safetensors(&file, &path).unwrap();
        let err = load(&vs, &path, &LoadPolicy::default()).unwrap_err();
        let msg = err.to_string();
        for needle in [
            "backbone.bn1.bias",
            "neck.extra.weight",
            "backbone.conv1.weight",
            "[2, 3]",
            "[3, 2]",
            "bad.safetensors",
        ] {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
        let Error::CheckpointMismatch { problems, .. } = err else { panic!("{err:?}") };
        assert_eq!(problems.missing, ["backbone.bn1.bias"]);
        assert_eq!(problems.unexpected, ["neck.extra.weight"]);
        assert_eq!(problems.mismatched.len(), 1);
        // Nothing was copied.
        let lat = &vs.variables()["neck.lateral_convs.0.conv.weight"];
        assert_eq!(lat.sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn prefix_and_policy_select_and_relax() {
        let vs = store();
        let file = vec![
            ("conv1.weight".to_string(), t(&[2, 3], 2.0)),
            ("fc.weight".to_string(), t(&[10, 2], 2.0)),
            ("layer9.x".to_string(), t(&[1], 2.0)),
        ];
        let policy = LoadPolicy {
            prefix: Some("backbone".into()),
            key_map: KeyMap::Trunk,
            allow_missing: vec![r"^bn1\.".into()],
            allow_unexpected: vec![r"^layer9\.".into()],
        };
        let report = load_tensors(&vs, file, &policy, Path::new("mem")).unwrap();
        assert_eq!(report.loaded, 1);
        assert_eq!(report.missing, ["bn1.bias"]);
        assert_eq!(report.unexpected, ["layer9.x"]);
        assert_eq!(report.dropped, ["fc.weight"]);
        let w = &vs.variables()["backbone.conv1.weight"];
        assert_eq!(w.sum(Kind::Float).double_value(&[]), 12.0);
    }

    #[test]
    fn save_then_load_round_trips() {
        let vs = store();
        tch::no_grad(|| {
            vs.variables()["backbone.conv1.weight"].shallow_clone().copy_(&t(&[2, 3], 7.0))
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save(&vs, &path, None).unwrap();
        let other = store();
        let report = load(&other, &path, &LoadPolicy::default()).unwrap();
        assert_eq!(report.loaded, 3);
        let w = &other.variables()["backbone.conv1.weight"];
        assert_eq!(w.sum(Kind::Float).double_value(&[]), 42.0);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn mmdet_keys_map_to_ours() {
        assert_eq!(
            mmdet_key("backbone.layer1.0.conv1.weight").unwrap(),
            "backbone.layer1.0.conv1.weight"
        );
        assert_eq!(
            mmdet_key("module.backbone.effnet.blocks.0.0.conv_dw.weight").unwrap(),
            "backbone.blocks.0.0.conv_dw.weight"
        );
        assert_eq!(mmdet_key("backbone.effnet.conv_head.weight"), None);
        assert_eq!(mmdet_key("backbone.effnet.bn2.running_var"), None);
        assert_eq!(mmdet_key("neck.fpn_convs.4.conv.bias").unwrap(), "neck.fpn_convs.4.conv.bias");
        assert_eq!(
            mmdet_key("roi_head.bbox_head.fc_cls.weight").unwrap(),
            "roi_head.bbox_head.fc_cls.weight"
        );
        assert_eq!(trunk_key("layer1.0.bn2.weight").unwrap(), "layer1.0.bn2.weight");
        assert_eq!(trunk_key("bn2.weight"), None);
    }

    #[test]
    fn bad_pattern_is_named() {
        let vs = store();
        let policy = LoadPolicy { allow_missing: vec!["(".into()], ..Default::default() };
        let err = load_tensors(&vs, vec![], &policy, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("\"(\""), "{err}");
    }
}
