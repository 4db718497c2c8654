//! Experiments: the k models of one recipe trained on the k folds of one split, the unit the
//! seed's workflow works in (`SEED.md` §3: five folds per configuration; §4.1: the out-of-fold
//! prediction routes each image to the model that did not train on it).
//!
//! An experiment folder holds the split, written once, and one ordinary run folder per fold:
//!
//! ```text
//! runs/maskrcnn_r50/            the experiment
//!   folds.csv                   id,group,fold — the split every fold trained on
//!   fold0/ … fold4/             run folders (model.toml, checkpoints, heldout/, finished.json)
//! ```
//!
//! The training examples write it (`--fold K`, `--all-folds`), `cross_validate` predicts every
//! fold's held-out images with that fold's models, and `infer_ensemble --model <experiment>` takes
//! all its folds as members.
//!
//! ```
//! use cellseg::data::folds::FoldSplit;
//! use cellseg::experiment::Experiment;
//!
//! let dir = tempfile::tempdir()?;
//! let ids = ["a", "b", "c", "d"].map(String::from).to_vec();
//! let split = FoldSplit::new(ids.clone(), ids, vec![0, 1, 0, 1], 2)?;
//! let exp = Experiment::record(&dir.path().join("exp"), &split)?;
//! assert_eq!(exp.fold_dir(1), dir.path().join("exp/fold1"));
//! // Recording another split into the same folder is refused, naming the first differing id.
//! let other = FoldSplit::new(split.ids.clone(), split.groups.clone(), vec![1, 0, 0, 1], 2)?;
//! let err = Experiment::record(&dir.path().join("exp"), &other).unwrap_err();
//! assert!(err.to_string().contains("image a is in fold 0 there but in fold 1 here"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use cellseg_data::folds::FoldSplit;
use serde::{Deserialize, Serialize};

/// The split file of an experiment folder.
pub const FOLDS_FILE: &str = "folds.csv";
/// Written into a fold's run folder when its training and final validation are done.
pub const FINISHED_FILE: &str = "finished.json";

/// Errors of experiment folders, each naming the folder or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The folder has no `folds.csv`.
    #[error(
        "{dir} is not an experiment folder (no {FOLDS_FILE}; train one with \
         `train_maskrcnn --all-folds` or `--fold K`)"
    )]
    NotAnExperiment {
        /// The folder.
        dir: PathBuf,
    },
    /// The split cannot be read, written, or differs from the recorded one.
    #[error(transparent)]
    Split(Box<cellseg_data::Error>),
    /// A fold asked for that the split does not have.
    #[error("fold {fold} does not exist: {dir} has {n_folds} folds (0..{n_folds})")]
    NoSuchFold {
        /// The experiment folder.
        dir: PathBuf,
        /// The fold asked for.
        fold: usize,
        /// The split's folds.
        n_folds: usize,
    },
    /// A fold has no finished model.
    #[error(
        "experiment {dir}: fold {fold} is not trained ({path} has no {FINISHED_FILE}; run the \
         training example with --all-folds again to finish it)"
    )]
    MissingFold {
        /// The experiment folder.
        dir: PathBuf,
        /// The fold.
        fold: usize,
        /// Its run folder.
        path: PathBuf,
    },
    /// A file of the folder cannot be written or read.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl From<cellseg_data::Error> for Error {
    fn from(e: cellseg_data::Error) -> Self {
        Self::Split(Box::new(e))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What `finished.json` records about a fold's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finished {
    /// The fold held out (`data.fold` for a run outside an experiment; 0 for a pretraining run,
    /// the seed's first split).
    pub fold: usize,
    /// Optimizer steps trained.
    pub steps: u64,
    /// Held-out images validated.
    pub held_out: usize,
    /// The competition metric on them after training.
    pub metric: f64,
}

/// Where a fold's run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldState {
    /// Nothing trained yet.
    New,
    /// Checkpoints but no `finished.json`: the run was interrupted.
    Interrupted,
    /// Trained and validated.
    Finished,
}

/// An experiment folder and its split.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// The folder.
    pub dir: PathBuf,
    /// The split of `folds.csv`.
    pub split: FoldSplit,
}

impl Experiment {
    /// Whether `dir` is an experiment folder (it has a `folds.csv`).
    pub fn is_experiment(dir: &Path) -> bool {
        dir.join(FOLDS_FILE).is_file()
    }

    /// Opens the experiment in `dir`.
    ///
    /// # Errors
    /// [`Error::NotAnExperiment`]; [`Error::Split`] for an unreadable `folds.csv`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !Self::is_experiment(dir) {
            return Err(Error::NotAnExperiment { dir: dir.to_path_buf() });
        }
        Ok(Self { dir: dir.to_path_buf(), split: FoldSplit::read(&dir.join(FOLDS_FILE))? })
    }

    /// The experiment in `dir` with `split`: a new folder records it in `folds.csv`; an existing
    /// one must have recorded the same split.
    ///
    /// # Errors
    /// [`Error::Split`] naming `folds.csv` and the first differing image; [`Error::File`] for a
    /// run folder or an I/O error.
    pub fn record(dir: &Path, split: &FoldSplit) -> Result<Self> {
        let path = dir.join(FOLDS_FILE);
        if run_state(dir) != FoldState::New || dir.join("model.toml").is_file() {
            return Err(Error::File {
                path: dir.to_path_buf(),
                reason: "is a run folder (it holds a trained model); an experiment needs a \
                         folder of its own (set --run-dir)"
                    .into(),
            });
        }
        if path.is_file() {
            let recorded = FoldSplit::read(&path)?;
            recorded.check_same(split, &path)?;
            return Ok(Self { dir: dir.to_path_buf(), split: recorded });
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::File { path: dir.to_path_buf(), reason: e.to_string() })?;
        split.write(&path)?;
        tracing::info!(path = %path.display(), folds = split.n_folds, "split recorded");
        Ok(Self { dir: dir.to_path_buf(), split: split.clone() })
    }

    /// The folder name (how ensemble configs name the experiment).
    pub fn name(&self) -> String {
        folder_name(&self.dir)
    }

    /// The run folder of fold `k`: `<dir>/fold<k>`.
    pub fn fold_dir(&self, k: usize) -> PathBuf {
        self.dir.join(format!("fold{k}"))
    }

    /// Checks that `k` is a fold of the split.
    ///
    /// # Errors
    /// [`Error::NoSuchFold`].
    pub fn check_fold(&self, k: usize) -> Result<()> {
        if k >= self.split.n_folds {
            return Err(Error::NoSuchFold {
                dir: self.dir.clone(),
                fold: k,
                n_folds: self.split.n_folds,
            });
        }
        Ok(())
    }

    /// Where fold `k`'s run stands.
    pub fn fold_state(&self, k: usize) -> FoldState {
        run_state(&self.fold_dir(k))
    }

    /// The run folders of every fold, in fold order; each must be finished.
    ///
    /// # Errors
    /// [`Error::MissingFold`] naming the first unfinished fold.
    pub fn fold_runs(&self) -> Result<Vec<PathBuf>> {
        (0..self.split.n_folds)
            .map(|k| {
                let path = self.fold_dir(k);
                if run_state(&path) == FoldState::Finished {
                    Ok(path)
                } else {
                    Err(Error::MissingFold { dir: self.dir.clone(), fold: k, path })
                }
            })
            .collect()
    }
}

/// Where a run folder stands: `finished.json`, else a latest checkpoint, else nothing.
pub fn run_state(run_dir: &Path) -> FoldState {
    if run_dir.join(FINISHED_FILE).is_file() {
        FoldState::Finished
    } else if cellseg_train::checkpoint::CheckpointStore::new(run_dir).has_latest() {
        FoldState::Interrupted
    } else {
        FoldState::New
    }
}

/// Writes `finished.json` into `run_dir` (atomically), after its training and validation.
///
/// # Errors
/// [`Error::File`] naming the file.
pub fn mark_finished(run_dir: &Path, finished: &Finished) -> Result<()> {
    let path = run_dir.join(FINISHED_FILE);
    let text = serde_json::to_string_pretty(finished).expect("plain fields serialise");
    let tmp = run_dir.join(format!(".{FINISHED_FILE}.tmp{}", std::process::id()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::File { path, reason: e.to_string() })
}

/// The last component of `dir` (the whole path when it has none).
pub fn folder_name(dir: &Path) -> String {
    dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Checks that every experiment has the first one's split.
///
/// # Errors
/// [`Error::Split`] naming the other experiment's `folds.csv` and the first differing image.
pub fn check_same_split(experiments: &[Experiment]) -> Result<()> {
    if let Some((first, rest)) = experiments.split_first() {
        for e in rest {
            first.split.check_same(&e.split, &e.dir.join(FOLDS_FILE)).map_err(|err| {
                Error::File {
                    path: e.dir.join(FOLDS_FILE),
                    reason: format!(
                        "its split differs from that of {} ({err}); experiments to \
                         cross-validate together must share one split",
                        first.dir.join(FOLDS_FILE).display()
                    ),
                }
            })?;
        }
    }
    Ok(())
}
