//! Atomic checkpoints: weights and optimizer moments in safetensors, the rest in `state.json`.
//!
//! # Layout of a run folder
//! ```text
//! run_dir/
//!   latest.json                 {"checkpoint": "checkpoints/step-00000120", "step": 120}
//!   best.json                   {"checkpoint": "checkpoints/step-00000080", "step": 80, "score": 0.31}
//!   checkpoints/step-00000120/  model.safetensors  optimizer.safetensors  state.json
//! ```
//! A checkpoint folder is written as `checkpoints/.tmp-…`, every file and the folder are fsynced,
//! and only then is it renamed to `step-…`; the pointer files are replaced the same way (temporary
//! file, fsync, rename, fsync of the folder). A process killed at any point leaves the previous
//! checkpoint and pointers intact; leftover `.tmp-*` folders are removed by the next save.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::TrainConfig;
use crate::error::ShapeMismatch;
use crate::schedule::LrSchedule;
use crate::{Error, Result};

/// Version of the `state.json` format.
pub const STATE_FORMAT: u32 = 1;

/// File names inside a checkpoint folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimizer moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The JSON state.
pub const STATE_FILE: &str = "state.json";

/// The best validation result so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    /// Optimizer steps done when it was measured.
    pub step: u64,
    /// 1-based epoch after which it was measured.
    pub epoch: u32,
    /// The validation score (higher is better).
    pub score: f64,
}

/// Dynamic loss scaling for float16 autocast (torch `GradScaler` defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// Current scale.
    pub scale: f64,
    /// Consecutive finite steps since the last change.
    pub growth_tracker: u32,
}

impl Default for LossScale {
    fn default() -> Self {
        Self { scale: 65536.0, growth_tracker: 0 }
    }
}

impl LossScale {
    /// After a step: halve on overflow, double after 2000 clean steps.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.growth_tracker += 1;
            if self.growth_tracker >= 2000 {
                self.scale *= 2.0;
                self.growth_tracker = 0;
            }
        } else {
            self.scale *= 0.5;
            self.growth_tracker = 0;
        }
    }
}

/// Everything besides tensors that a resume needs (`state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Optimizer steps done.
    pub step: u64,
    /// 0-based epoch in progress (equal to `epochs` when the run is finished).
    pub epoch: u32,
    /// Micro-batches of `epoch` already consumed.
    pub batch_in_epoch: u64,
    /// The learning-rate schedule (position = `step`).
    pub schedule: LrSchedule,
    /// The data-order / seeding algorithm ([`crate::sampler::ALGORITHM`]); its state is
    /// `(config.seed, epoch, batch_in_epoch)`.
    pub rng_algorithm: String,
    /// Per-parameter optimizer step counts.
    pub optimizer_steps: BTreeMap<String, u64>,
    /// Float16 loss scale, when mixed precision is on.
    pub loss_scale: Option<LossScale>,
    /// Steps skipped so far for a non-finite loss or gradient.
    pub nonfinite_steps: u32,
    /// The skipped steps in a row just before this checkpoint.
    #[serde(default)]
    pub nonfinite_streak: Vec<crate::observer::SkippedBatch>,
    /// The best validation result so far.
    pub best: Option<BestRecord>,
    /// The run's configuration.
    pub config: TrainConfig,
    /// The number of data-parallel processes that trained it (each reads its own shard of every
    /// epoch, so a resume needs the same number); 1 in checkpoints written before it existed.
    #[serde(default = "one_process")]
    pub world_size: usize,
    /// SHA-256 (hex) of the checkpoint's tensor files by file name, written by
    /// [`CheckpointStore::save`] and checked by [`CheckpointStore::load_dir`]; empty in
    /// checkpoints written before it existed (those are read unchecked).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
}

fn one_process() -> usize {
    1
}

/// A checkpoint read back from disk.
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// Its folder.
    pub dir: PathBuf,
    /// The JSON state.
    pub state: TrainState,
    /// Optimizer moments.
    pub optimizer: Vec<(String, Tensor)>,
    /// Newer checkpoints that [`CheckpointStore::load_resumable`] could not read and passed over.
    pub skipped: Vec<SkippedCheckpoint>,
}

/// A checkpoint (or `latest.json`) that a resume passed over because it could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedCheckpoint {
    /// The checkpoint folder, or `latest.json` itself.
    pub path: PathBuf,
    /// Why: the error, naming the broken file.
    pub reason: String,
}

/// The content of `latest.json` / `best.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pointer {
    /// Checkpoint folder relative to the run folder.
    checkpoint: String,
    step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    score: Option<f64>,
}

/// Reads and writes the checkpoints of one run folder.
#[derive(Debug)]
pub struct CheckpointStore {
    run_dir: PathBuf,
    /// Test hook: fail after writing this many files of a checkpoint (simulates a crash or a full
    /// disk in the middle of a save).
    #[cfg(test)]
    pub(crate) fail_after_files: Option<usize>,
}

fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(Error::io("syncing folder", dir))
}

fn fsync_file(path: &Path) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("syncing", path))
}

/// Writes `bytes` to `path` atomically: a temporary file next to it, fsync, rename, fsync folder.
///
/// # Errors
/// [`Error::Io`] naming the file (a full disk shows as `No space left on device`); `path` is then
/// unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(Error::io("creating", &tmp))?;
        f.write_all(bytes).map_err(Error::io("writing", &tmp))?;
        f.sync_all().map_err(Error::io("syncing", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(Error::io("renaming into place", path))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes named tensors to a safetensors file (moved to the CPU, made contiguous) and fsyncs it.
fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&cpu, path)
        .map_err(|source| Error::Safetensors { path: path.to_path_buf(), source })?;
    fsync_file(path)
}

/// SHA-256 of the file at `path`, as lower-case hex.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(Error::io("reading", path))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads a safetensors file.
///
/// # Errors
/// [`Error::Safetensors`] naming the file.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path)
        .map_err(|source| Error::Safetensors { path: path.to_path_buf(), source })
}

/// The variables of `vs` sorted by name, as saved in `model.safetensors`.
pub fn named_variables(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Copies the weights of `path` into `vs`, strictly: every variable must be present with its
/// shape, and the file may hold nothing else.
///
/// # Errors
/// [`Error::CheckpointMismatch`] listing missing, unexpected and wrongly shaped keys (nothing is
/// copied then); [`Error::Safetensors`] for unreadable files.
pub fn load_weights(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    let found = read_tensors(path)?;
    let vars = vs.variables();
    let mut found_map: BTreeMap<String, Tensor> = found.into_iter().collect();
    let mut missing = Vec::new();
    let mut wrong_shape = Vec::new();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in &names {
        match found_map.get(*name) {
            None => missing.push((*name).clone()),
            Some(t) if t.size() != vars[*name].size() => wrong_shape.push(ShapeMismatch {
                key: (*name).clone(),
                expected: vars[*name].size(),
                found: t.size(),
            }),
            Some(_) => {}
        }
    }
    let unexpected: Vec<String> =
        found_map.keys().filter(|k| !vars.contains_key(*k)).cloned().collect();
    if !(missing.is_empty() && unexpected.is_empty() && wrong_shape.is_empty()) {
        return Err(Error::CheckpointMismatch {
            path: path.to_path_buf(),
            missing,
            unexpected,
            wrong_shape,
        });
    }
    let _guard = tch::no_grad_guard();
    for (name, var) in vars {
        let src = found_map.remove(&name).expect("checked above");
        let mut var = var;
        var.f_copy_(&src)?;
    }
    Ok(())
}

impl CheckpointStore {
    /// The store of `run_dir` (nothing is created yet).
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            #[cfg(test)]
            fail_after_files: None,
        }
    }

    /// The run folder.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn checkpoints_dir(&self) -> PathBuf {
        self.run_dir.join("checkpoints")
    }

    fn latest_path(&self) -> PathBuf {
        self.run_dir.join("latest.json")
    }

    fn best_path(&self) -> PathBuf {
        self.run_dir.join("best.json")
    }

    /// Whether the run folder holds a checkpoint to resume.
    pub fn has_latest(&self) -> bool {
        self.latest_path().is_file()
    }

    fn read_pointer(&self, path: &Path) -> Result<Option<Pointer>> {
        if !path.exists() {
            return Ok(None);
        }
        let text = fs::read_to_string(path).map_err(Error::io("reading", path))?;
        let pointer: Pointer = serde_json::from_str(&text).map_err(|e| Error::CheckpointState {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // Only a folder of this run's `checkpoints/`: never a path out of the run folder.
        let rel = Path::new(&pointer.checkpoint);
        let mut parts = rel.components();
        let inside = parts.next() == Some(std::path::Component::Normal("checkpoints".as_ref()))
            && matches!(parts.next(), Some(std::path::Component::Normal(_)))
            && parts.next().is_none();
        if !inside {
            return Err(Error::CheckpointState {
                path: path.to_path_buf(),
                message: format!(
                    "`checkpoint` = {:?} is not a folder `checkpoints/<name>` of the run",
                    pointer.checkpoint
                ),
            });
        }
        Ok(Some(pointer))
    }

    /// The folder of the latest checkpoint, if any.
    ///
    /// # Errors
    /// When `latest.json` is unreadable.
    pub fn latest_dir(&self) -> Result<Option<PathBuf>> {
        Ok(self.read_pointer(&self.latest_path())?.map(|p| self.run_dir.join(p.checkpoint)))
    }

    /// The folder of the best checkpoint (by validation score), if any.
    ///
    /// # Errors
    /// When `best.json` is unreadable.
    pub fn best_dir(&self) -> Result<Option<PathBuf>> {
        Ok(self.read_pointer(&self.best_path())?.map(|p| self.run_dir.join(p.checkpoint)))
    }

    /// Creates the run folder.
    ///
    /// # Errors
    /// [`Error::Io`] naming the folder (read-only file system, a path through a file, …).
    pub fn create_run_dir(&self) -> Result<()> {
        fs::create_dir_all(self.checkpoints_dir())
            .map_err(Error::io("creating folder", self.checkpoints_dir()))
    }

    /// Writes a checkpoint atomically and points `latest.json` at it (and `best.json` when
    /// `best_score` is given). Older checkpoints beyond `keep_last` are then removed, except the
    /// best one. Returns the checkpoint folder.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Safetensors`] naming the file; the previous checkpoint and both
    /// pointers are then untouched.
    pub fn save(
        &self,
        weights: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        state: &TrainState,
        best_score: Option<f64>,
        keep_last: usize,
    ) -> Result<PathBuf> {
        self.create_run_dir()?;
        let ckpts = self.checkpoints_dir();
        let tmp = ckpts.join(format!(".tmp-step-{:08}-{}", state.step, std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(Error::io("removing", &tmp))?;
        }
        let written = self.write_folder(&tmp, weights, optimizer, state);
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // A unique final name: re-saving the same step (after a resume) never touches the folder
        // the current pointer names.
        let mut name = format!("step-{:08}", state.step);
        let mut n = 1;
        while ckpts.join(&name).exists() {
            name = format!("step-{:08}.{n}", state.step);
            n += 1;
        }
        let dir = ckpts.join(&name);
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(Error::io("renaming into place", &dir)(e));
        }
        fsync_dir(&ckpts)?;
        let rel = format!("checkpoints/{name}");
        let pointer = Pointer { checkpoint: rel.clone(), step: state.step, score: None };
        write_atomic(&self.latest_path(), &serde_json::to_vec_pretty(&pointer).expect("json"))?;
        if let Some(score) = best_score {
            let pointer = Pointer { checkpoint: rel, step: state.step, score: Some(score) };
            write_atomic(&self.best_path(), &serde_json::to_vec_pretty(&pointer).expect("json"))?;
        }
        self.prune(keep_last)?;
        tracing::info!(dir = %dir.display(), step = state.step, best = best_score.is_some(), "checkpoint saved");
        Ok(dir)
    }

    fn write_folder(
        &self,
        tmp: &Path,
        weights: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        state: &TrainState,
    ) -> Result<()> {
        fs::create_dir(tmp).map_err(Error::io("creating folder", tmp))?;
        #[cfg(test)]
        let fail = |written: usize| -> Result<()> {
            match self.fail_after_files {
                Some(n) if written >= n => Err(Error::Io {
                    action: "writing (injected failure)",
                    path: tmp.to_path_buf(),
                    source: std::io::Error::from_raw_os_error(28), // ENOSPC
                }),
                _ => Ok(()),
            }
        };
        #[cfg(not(test))]
        let fail = |_written: usize| -> Result<()> { Ok(()) };
        fail(0)?;
        write_tensors(&tmp.join(MODEL_FILE), weights)?;
        fail(1)?;
        write_tensors(&tmp.join(OPTIMIZER_FILE), optimizer)?;
        fail(2)?;
        let mut state = state.clone();
        state.checksums = [MODEL_FILE, OPTIMIZER_FILE]
            .into_iter()
            .map(|f| Ok((f.to_string(), file_sha256(&tmp.join(f))?)))
            .collect::<Result<_>>()?;
        let json = serde_json::to_vec_pretty(&state).expect("state is serialisable");
        let path = tmp.join(STATE_FILE);
        let mut f = fs::File::create(&path).map_err(Error::io("creating", &path))?;
        f.write_all(&json).map_err(Error::io("writing", &path))?;
        f.sync_all().map_err(Error::io("syncing", &path))?;
        fsync_dir(tmp)
    }

    /// Removes stray temporary folders and all but the newest `keep_last` checkpoints (never the
    /// ones `latest.json` and `best.json` name).
    fn prune(&self, keep_last: usize) -> Result<()> {
        let ckpts = self.checkpoints_dir();
        let keep: Vec<PathBuf> = match (self.latest_dir(), self.best_dir()) {
            (Ok(latest), Ok(best)) => [latest, best].into_iter().flatten().collect(),
            (Err(e), _) | (_, Err(e)) => {
                // Which folders the pointers protect is unknown: remove nothing.
                tracing::warn!(error = %e, "unreadable pointer file; no old checkpoint removed");
                return Ok(());
            }
        };
        let mut regular: Vec<(String, PathBuf)> = Vec::new();
        let entries = fs::read_dir(&ckpts).map_err(Error::io("listing", &ckpts))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(".tmp-") {
                let _ = fs::remove_dir_all(&path);
            } else if name.starts_with("step-") && !keep.contains(&path) {
                regular.push((name, path));
            }
        }
        // Names sort by step (zero-padded), re-saves after them.
        regular.sort();
        // `keep_last` counts the latest checkpoint; the best one comes on top.
        let allowed = keep_last.saturating_sub(1);
        let remove = regular.len().saturating_sub(allowed);
        for (_, path) in regular.into_iter().take(remove) {
            fs::remove_dir_all(&path).map_err(Error::io("removing old checkpoint", &path))?;
        }
        Ok(())
    }

    /// Reads the checkpoint `latest.json` names.
    ///
    /// # Errors
    /// [`Error::NoCheckpoint`] when there is none; [`Error::CheckpointState`] / [`Error::Io`] /
    /// [`Error::Safetensors`] naming the broken file.
    pub fn load_latest(&self) -> Result<LoadedCheckpoint> {
        let dir =
            self.latest_dir()?.ok_or_else(|| Error::NoCheckpoint { path: self.run_dir.clone() })?;
        Self::load_dir(&dir)
    }

    /// Reads the checkpoint in folder `dir` (the weights are loaded separately, into a model, by
    /// [`load_weights`] on `dir/model.safetensors`).
    ///
    /// # Errors
    /// As [`CheckpointStore::load_latest`].
    pub fn load_dir(dir: &Path) -> Result<LoadedCheckpoint> {
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
        let state: TrainState = serde_json::from_str(&text)
            .map_err(|e| Error::CheckpointState { path: path.clone(), message: e.to_string() })?;
        if state.format != STATE_FORMAT {
            return Err(Error::CheckpointState {
                path,
                message: format!("format {} but this build reads {STATE_FORMAT}", state.format),
            });
        }
        for (file, expected) in &state.checksums {
            // Only the checkpoint's own tensor files: a state.json must not make us read others.
            if file != MODEL_FILE && file != OPTIMIZER_FILE {
                return Err(Error::CheckpointState {
                    path,
                    message: format!(
                        "checksums names {file:?}, not a file of the checkpoint ({MODEL_FILE}, \
                         {OPTIMIZER_FILE})"
                    ),
                });
            }
            let file_path = dir.join(file);
            let found = file_sha256(&file_path)?;
            if &found != expected {
                return Err(Error::Checksum {
                    path: file_path,
                    state: path,
                    expected: expected.clone(),
                    found,
                });
            }
        }
        let optimizer = read_tensors(&dir.join(OPTIMIZER_FILE))?;
        Ok(LoadedCheckpoint { dir: dir.to_path_buf(), state, optimizer, skipped: Vec::new() })
    }

    /// The checkpoint folders a resume may use, best first: the one `latest.json` names, then
    /// every other `step-*` folder, newest first. An unreadable `latest.json` goes to `skipped`.
    fn resume_candidates(&self, skipped: &mut Vec<SkippedCheckpoint>) -> Result<Vec<PathBuf>> {
        let mut candidates = Vec::new();
        match self.latest_dir() {
            Ok(dir) => candidates.extend(dir),
            Err(e) => {
                tracing::warn!(path = %self.latest_path().display(), error = %e, "unreadable latest.json; looking for the newest checkpoint folder");
                skipped.push(SkippedCheckpoint { path: self.latest_path(), reason: e.to_string() });
            }
        }
        let ckpts = self.checkpoints_dir();
        let mut names: Vec<String> = match fs::read_dir(&ckpts) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("step-"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("listing", &ckpts)(e)),
        };
        // Zero-padded steps sort by name; a re-save of a step (`step-….1`) sorts after the first.
        names.sort_unstable_by(|a, b| b.cmp(a));
        for name in names {
            let dir = ckpts.join(name);
            if !candidates.contains(&dir) {
                candidates.push(dir);
            }
        }
        Ok(candidates)
    }

    /// Reads the newest readable checkpoint and copies its weights into `vs`: the one
    /// `latest.json` names or, when that one (or `latest.json` itself) is corrupt or
    /// half-written, the previous ones in turn, each passed over with a warning naming it (and
    /// listed in [`LoadedCheckpoint::skipped`]). Nothing is copied from a checkpoint that fails.
    ///
    /// # Errors
    /// [`Error::NoCheckpoint`] without `latest.json`; [`Error::CheckpointMismatch`] when the
    /// weights belong to another architecture (no fallback: the older ones would too);
    /// [`Error::NoReadableCheckpoint`] listing every folder tried and why, when none is readable.
    pub fn load_resumable(&self, vs: &tch::nn::VarStore) -> Result<LoadedCheckpoint> {
        if !self.has_latest() {
            return Err(Error::NoCheckpoint { path: self.run_dir.clone() });
        }
        let mut skipped = Vec::new();
        for dir in self.resume_candidates(&mut skipped)? {
            let loaded = Self::load_dir(&dir).and_then(|ckpt| {
                load_weights(vs, &dir.join(MODEL_FILE))?;
                Ok(ckpt)
            });
            match loaded {
                Ok(mut ckpt) => {
                    ckpt.skipped = skipped;
                    return Ok(ckpt);
                }
                Err(e @ Error::CheckpointMismatch { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "unreadable checkpoint passed over; trying the previous one");
                    skipped.push(SkippedCheckpoint { path: dir, reason: e.to_string() });
                }
            }
        }
        Err(Error::NoReadableCheckpoint {
            path: self.run_dir.clone(),
            tried: skipped.iter().map(|s| format!("{}: {}", s.path.display(), s.reason)).collect(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ScheduleConfig;
    use tch::{Device, Kind, nn};

    /// A minimal state at `step` (also used by the other modules' tests).
    pub(crate) fn state(step: u64) -> TrainState {
        TrainState {
            checksums: BTreeMap::new(),
            world_size: 1,
            format: STATE_FORMAT,
            step,
            epoch: 0,
            batch_in_epoch: step,
            schedule: LrSchedule::new(&ScheduleConfig::default(), 1e-3, 100),
            rng_algorithm: crate::sampler::ALGORITHM.into(),
            optimizer_steps: BTreeMap::new(),
            loss_scale: None,
            nonfinite_steps: 0,
            nonfinite_streak: Vec::new(),
            best: None,
            config: TrainConfig::default(),
        }
    }

    fn weights(v: f32) -> Vec<(String, Tensor)> {
        vec![("a.weight".into(), Tensor::full([2, 3], f64::from(v), (Kind::Float, Device::Cpu)))]
    }

    #[test]
    fn save_then_load_round_trips_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        for step in 1..=4 {
            store
                .save(&weights(step as f32), &[], &state(step), (step == 2).then_some(0.5), 2)
                .unwrap();
        }
        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded.state.step, 4);
        let names: Vec<String> = fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // latest (4), best (2) and one more recent regular one (3).
        assert_eq!(names, vec!["step-00000002", "step-00000003", "step-00000004"]);
        assert!(store.best_dir().unwrap().unwrap().ends_with("step-00000002"));
    }

    #[test]
    fn failed_save_leaves_previous_checkpoint_intact() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::new(dir.path());
        store.save(&weights(1.0), &[], &state(1), None, 3).unwrap();
        let before = fs::read(dir.path().join("latest.json")).unwrap();
        for fail_after in 0..3 {
            store.fail_after_files = Some(fail_after);
            let err = store.save(&weights(2.0), &[], &state(2), Some(1.0), 3).unwrap_err();
            assert!(err.to_string().contains("No space left"), "{err}");
            assert_eq!(fs::read(dir.path().join("latest.json")).unwrap(), before);
            assert!(!dir.path().join("best.json").exists());
        }
        let entries: Vec<_> = fs::read_dir(dir.path().join("checkpoints")).unwrap().collect();
        assert_eq!(entries.len(), 1, "no half-written folder is left behind");
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = vs.root().sub("a").zeros("weight", &[2, 3]);
        load_weights(&vs, &store.latest_dir().unwrap().unwrap().join(MODEL_FILE)).unwrap();
        assert_eq!(vs.variables()["a.weight"].double_value(&[0, 0]), 1.0);
    }

    #[test]
    fn run_dir_under_a_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not_a_dir");
        fs::write(&file, b"x").unwrap();
        let store = CheckpointStore::new(file.join("run"));
        let err = store.save(&weights(1.0), &[], &state(1), None, 1).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Io { .. }) && msg.contains("not_a_dir/run"), "{msg}");
    }

    #[test]
    fn weights_of_another_architecture_list_the_mismatched_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let saved = vec![
            ("backbone.w".to_string(), Tensor::zeros([4, 3], (Kind::Float, Device::Cpu))),
            ("head.extra".to_string(), Tensor::zeros([1], (Kind::Float, Device::Cpu))),
        ];
        write_tensors(&path, &saved).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = root.sub("backbone").zeros("w", &[4, 4]);
        let _ = root.sub("neck").zeros("b", &[2]);
        let err = load_weights(&vs, &path).unwrap_err();
        match &err {
            Error::CheckpointMismatch { missing, unexpected, wrong_shape, .. } => {
                assert_eq!(missing, &vec!["neck.b".to_string()]);
                assert_eq!(unexpected, &vec!["head.extra".to_string()]);
                assert_eq!(wrong_shape[0].key, "backbone.w");
            }
            other => panic!("{other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("neck.b") && msg.contains("head.extra") && msg.contains("[4, 4]"),
            "{msg}"
        );
    }

    /// A store with checkpoints of steps 1, 2, 3 (weights 1.0, 2.0, 3.0) and a model to load into.
    fn three_checkpoints() -> (tempfile::TempDir, CheckpointStore, nn::VarStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        for step in 1..=3 {
            store
                .save(&weights(step as f32), &weights(10.0 * step as f32), &state(step), None, 5)
                .unwrap();
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = vs.root().sub("a").zeros("weight", &[2, 3]);
        (dir, store, vs)
    }

    fn step_dir(store: &CheckpointStore, step: u64) -> PathBuf {
        store.checkpoints_dir().join(format!("step-{step:08}"))
    }

    #[test]
    fn resume_reads_the_latest_checkpoint_when_it_is_sound() {
        let (_dir, store, vs) = three_checkpoints();
        let ckpt = store.load_resumable(&vs).unwrap();
        assert_eq!((ckpt.state.step, ckpt.skipped.len()), (3, 0));
        assert_eq!(vs.variables()["a.weight"].double_value(&[0, 0]), 3.0);
    }

    #[test]
    fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_one_naming_it() {
        type Damage = fn(&Path);
        let damages: [(&str, Damage); 4] = [
            ("model.safetensors cut in half", |d| {
                let p = d.join(MODEL_FILE);
                let bytes = fs::read(&p).unwrap();
                fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            }),
            ("model.safetensors missing", |d| fs::remove_file(d.join(MODEL_FILE)).unwrap()),
            ("state.json cut", |d| {
                let p = d.join(STATE_FILE);
                let text = fs::read_to_string(&p).unwrap();
                fs::write(&p, &text[..text.len() / 3]).unwrap();
            }),
            ("optimizer.safetensors garbage", |d| {
                fs::write(d.join(OPTIMIZER_FILE), b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk").unwrap()
            }),
        ];
        for (what, damage) in damages {
            let (_dir, store, vs) = three_checkpoints();
            damage(&step_dir(&store, 3));
            let ckpt = store.load_resumable(&vs).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(ckpt.state.step, 2, "{what}");
            assert_eq!(vs.variables()["a.weight"].double_value(&[0, 0]), 2.0, "{what}");
            assert_eq!(ckpt.skipped.len(), 1, "{what}");
            assert_eq!(ckpt.skipped[0].path, step_dir(&store, 3), "{what}");
            assert!(ckpt.skipped[0].reason.contains("step-00000003"), "{what}: {:?}", ckpt.skipped);
        }
    }

    /// One byte flipped inside a tensor's data (the file still parses, shapes and all): the
    /// recorded SHA-256 catches it, the resume falls back to the previous checkpoint and names
    /// the damaged file.
    #[test]
    fn a_flipped_byte_in_the_tensor_data_falls_back_naming_the_file() {
        for file in [MODEL_FILE, OPTIMIZER_FILE] {
            let (_dir, store, vs) = three_checkpoints();
            let damaged = step_dir(&store, 3).join(file);
            let mut bytes = fs::read(&damaged).unwrap();
            let last = bytes.len() - 1; // the data come after the header
            bytes[last] ^= 0x01;
            fs::write(&damaged, &bytes).unwrap();
            assert!(read_tensors(&damaged).is_ok(), "{file}: still a valid safetensors file");
            let ckpt = store.load_resumable(&vs).unwrap();
            assert_eq!(ckpt.state.step, 2, "{file}");
            assert_eq!(vs.variables()["a.weight"].double_value(&[0, 0]), 2.0, "{file}");
            assert_eq!(ckpt.skipped.len(), 1, "{file}");
            let reason = &ckpt.skipped[0].reason;
            assert!(
                reason.contains(&damaged.display().to_string()) && reason.contains("SHA-256"),
                "{file}: {reason}"
            );
        }
    }

    /// Found by the state.json fuzzer: a `checksums` key that is not one of the checkpoint's
    /// files (here a path out of the folder) is a state error naming state.json, and no other
    /// file is read.
    #[test]
    fn a_checksum_of_another_file_is_a_state_error() {
        let (_dir, store, _vs) = three_checkpoints();
        let dir = step_dir(&store, 3);
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("\"model.safetensors\":", "\"../../latest.json\":")).unwrap();
        let e = CheckpointStore::load_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("../../latest.json"), "{e}");
    }

    #[test]
    fn state_json_records_the_checksum_of_each_tensor_file() {
        let (_dir, store, _vs) = three_checkpoints();
        let dir = step_dir(&store, 3);
        let state = CheckpointStore::load_dir(&dir).unwrap().state;
        for file in [MODEL_FILE, OPTIMIZER_FILE] {
            assert_eq!(state.checksums[file], file_sha256(&dir.join(file)).unwrap());
            assert_eq!(state.checksums[file].len(), 64);
        }
    }

    #[test]
    fn a_garbage_latest_json_falls_back_to_the_newest_folder() {
        let (dir, store, vs) = three_checkpoints();
        fs::write(dir.path().join("latest.json"), b"{\"checkpoint\": ").unwrap();
        let ckpt = store.load_resumable(&vs).unwrap();
        assert_eq!(ckpt.state.step, 3);
        assert_eq!(ckpt.skipped[0].path, dir.path().join("latest.json"));
        // The next save rewrites the pointer and prunes again.
        store.save(&weights(4.0), &[], &state(4), None, 2).unwrap();
        assert!(store.latest_dir().unwrap().unwrap().ends_with("step-00000004"));
    }

    #[test]
    fn a_pointer_out_of_the_run_folder_is_refused() {
        let (dir, store, vs) = three_checkpoints();
        for bad in
            ["../other/checkpoints/step-00000003", "/etc", "checkpoints/../../x", "checkpoints"]
        {
            let json = format!("{{\"checkpoint\": {bad:?}, \"step\": 3}}");
            fs::write(dir.path().join("latest.json"), json).unwrap();
            let err = store.latest_dir().unwrap_err();
            assert!(
                err.to_string().contains("is not a folder `checkpoints/<name>`"),
                "{bad}: {err}"
            );
            // The resume passes over it and reads the newest folder.
            assert_eq!(store.load_resumable(&vs).unwrap().state.step, 3, "{bad}");
        }
    }

    #[test]
    fn when_no_checkpoint_is_readable_the_error_lists_each_one() {
        let (_dir, store, vs) = three_checkpoints();
        for step in 1..=3 {
            fs::write(step_dir(&store, step).join(MODEL_FILE), b"").unwrap();
        }
        let err = store.load_resumable(&vs).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, Error::NoReadableCheckpoint { tried, .. } if tried.len() == 3),
            "{msg}"
        );
        for step in 1..=3 {
            assert!(msg.contains(&format!("step-{step:08}")), "{msg}");
        }
        assert_eq!(vs.variables()["a.weight"].double_value(&[0, 0]), 0.0, "nothing copied");
    }

    #[test]
    fn weights_of_another_architecture_do_not_fall_back() {
        let (_dir, store, _) = three_checkpoints();
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = vs.root().sub("b").zeros("weight", &[2, 3]);
        let err = store.load_resumable(&vs).unwrap_err();
        assert!(matches!(err, Error::CheckpointMismatch { .. }), "{err}");
    }
}
