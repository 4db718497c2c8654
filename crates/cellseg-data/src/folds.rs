//! k-fold splits: scikit-learn's `GroupKFold` (the seed's `split="gkf"` on `plate_well`) and fold
//! ids read from a CSV.
//!
//! [`group_kfold`] reproduces `sklearn.model_selection.GroupKFold(n_splits).split(X, groups=g)` of
//! scikit-learn ≥ 1.6 exactly (tested against the `.venv` copy): groups are the sorted unique
//! values; they are taken by decreasing size (a *stable* ascending argsort, reversed, so among equal
//! sizes the later group in sorted order comes first) and each goes to the currently lightest fold
//! (first minimum). The seed ran an older scikit-learn whose unstable `argsort` could order tied
//! groups differently; to reproduce the seed's folds exactly, export them once and use
//! [`read_fold_csv`].

use std::collections::HashMap;
use std::path::Path;

use crate::csv::{CsvFile, parse_usize};
use crate::{Error, Result};

/// The fold (0..n_splits) of each sample, given each sample's group.
///
/// # Errors
/// [`Error::TooFewGroups`] when there are fewer distinct groups than folds.
pub fn group_kfold<S: AsRef<str>>(groups: &[S], n_splits: usize) -> Result<Vec<usize>> {
    let mut unique: Vec<&str> = groups.iter().map(|g| g.as_ref()).collect();
    unique.sort_unstable();
    unique.dedup();
    if n_splits == 0 || n_splits > unique.len() {
        return Err(Error::TooFewGroups { n_splits, n_groups: unique.len() });
    }
    let index: HashMap<&str, usize> = unique.iter().enumerate().map(|(i, g)| (*g, i)).collect();
    let group_idx: Vec<usize> = groups.iter().map(|g| index[g.as_ref()]).collect();
    let mut counts = vec![0usize; unique.len()];
    for &g in &group_idx {
        counts[g] += 1;
    }
    // np.argsort(counts, kind="stable")[::-1]
    let mut order: Vec<usize> = (0..unique.len()).collect();
    order.sort_by_key(|&g| counts[g]);
    order.reverse();
    let mut fold_weight = vec![0usize; n_splits];
    let mut group_fold = vec![0usize; unique.len()];
    for g in order {
        let lightest = (0..n_splits).min_by_key(|&f| (fold_weight[f], f)).expect("n_splits > 0");
        fold_weight[lightest] += counts[g];
        group_fold[g] = lightest;
    }
    Ok(group_idx.into_iter().map(|g| group_fold[g]).collect())
}

/// Reads fold ids from a CSV with (at least) columns `id` and `fold`, and returns the fold of each
/// of `ids`, in that order.
///
/// # Errors
/// [`Error::Csv`] for a malformed row, a duplicate id or an id of `ids` the file does not list;
/// [`Error::UnknownId`] for a row naming an id that is not in `ids`.
pub fn read_fold_csv<S: AsRef<str>>(path: &Path, ids: &[S]) -> Result<Vec<usize>> {
    let mut csv = CsvFile::read(path)?;
    if let Some((_, e)) = csv.bad.drain(..).next() {
        return Err(e);
    }
    let [id_col, fold_col] = csv.columns(["id", "fold"], path)?;
    let wanted: HashMap<&str, usize> =
        ids.iter().enumerate().map(|(i, s)| (s.as_ref(), i)).collect();
    let mut folds: Vec<Option<usize>> = vec![None; ids.len()];
    for (line, row) in &csv.rows {
        let id = row[id_col].trim();
        let fold = parse_usize(&row[fold_col], "fold", path, *line)?;
        let Some(&i) = wanted.get(id) else {
            return Err(Error::UnknownId { path: path.into(), line: *line, id: id.into() });
        };
        if folds[i].replace(fold).is_some() {
            return Err(Error::Csv {
                path: path.into(),
                line: *line,
                message: format!("image {id} is listed twice"),
            });
        }
    }
    folds
        .into_iter()
        .zip(ids)
        .map(|(f, id)| {
            f.ok_or_else(|| Error::Csv {
                path: path.into(),
                line: csv.rows.len() + 1,
                message: format!("no fold for image {}", id.as_ref()),
            })
        })
        .collect()
}

/// A k-fold split of a data set: every image with its group and its fold, in id order. An
/// experiment records it once as `folds.csv` (`id,group,fold`) and every fold's run checks
/// against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldSplit {
    /// Image ids.
    pub ids: Vec<String>,
    /// The group of each image (the GroupKFold group: `plate_well`, or the id).
    pub groups: Vec<String>,
    /// The fold of each image, `0..n_folds`.
    pub folds: Vec<usize>,
    /// The number of folds.
    pub n_folds: usize,
}

impl FoldSplit {
    /// A split of `ids` (their groups, their folds) into `n_folds`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the lengths differ, a fold is not below `n_folds`, a fold
    /// is empty, or an id repeats.
    pub fn new(
        ids: Vec<String>,
        groups: Vec<String>,
        folds: Vec<usize>,
        n_folds: usize,
    ) -> Result<Self> {
        let bad = |reason: &'static str, value: String| Error::InvalidConfig {
            key: "folds",
            value,
            reason,
        };
        if ids.len() != groups.len() || ids.len() != folds.len() {
            return Err(bad(
                "ids, groups and folds must have one entry per image",
                format!("{} / {} / {}", ids.len(), groups.len(), folds.len()),
            ));
        }
        if let Some(f) = folds.iter().find(|&&f| f >= n_folds) {
            return Err(bad(
                "a fold must be below the number of folds",
                format!("{f} with {n_folds} folds"),
            ));
        }
        if let Some(k) = (0..n_folds).find(|k| !folds.contains(k)) {
            return Err(bad(
                "every fold must hold at least one image",
                format!("fold {k} of {n_folds} is empty"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(id) = ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(bad("image ids must be unique", id.clone()));
        }
        Ok(Self { ids, groups, folds, n_folds })
    }

    /// The ids of fold `k` (its validation images), in id order.
    pub fn fold_ids(&self, k: usize) -> Vec<&str> {
        self.ids
            .iter()
            .zip(&self.folds)
            .filter(|(_, f)| **f == k)
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// The fold of image `id`.
    pub fn fold_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|i| i == id).map(|i| self.folds[i])
    }

    /// The split as `folds.csv` text: `id,group,fold`, one row per image.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("id,group,fold\n");
        for ((id, g), f) in self.ids.iter().zip(&self.groups).zip(&self.folds) {
            s.push_str(&format!("{id},{g},{f}\n"));
        }
        s
    }

    /// Writes [`FoldSplit::to_csv`] to `path`, atomically.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::raster::write_atomically(path, self.to_csv().as_bytes())
    }

    /// Reads a `folds.csv` (`id,group,fold`); the number of folds is the largest fold + 1.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Csv`] naming the line (a malformed row or fold, a repeated id, an
    /// empty fold, a missing column).
    pub fn read(path: &Path) -> Result<Self> {
        let mut csv = CsvFile::read(path)?;
        if let Some((_, e)) = csv.bad.drain(..).next() {
            return Err(e);
        }
        let [id_col, group_col, fold_col] = csv.columns(["id", "group", "fold"], path)?;
        let (mut ids, mut groups, mut folds) = (Vec::new(), Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::new();
        for (line, row) in &csv.rows {
            let id = row[id_col].trim();
            if !seen.insert(id.to_string()) {
                return Err(Error::Csv {
                    path: path.into(),
                    line: *line,
                    message: format!("image {id} is listed twice"),
                });
            }
            ids.push(id.to_string());
            groups.push(row[group_col].trim().to_string());
            folds.push(parse_usize(&row[fold_col], "fold", path, *line)?);
        }
        let n_folds = folds.iter().max().map_or(0, |m| m + 1);
        // Rows are unique and their folds below the largest + 1: what is left is an empty fold.
        Self::new(ids, groups, folds, n_folds).map_err(|e| Error::Csv {
            path: path.into(),
            line: 1,
            message: e.to_string(),
        })
    }

    /// Checks that `other` (a split computed now, or another experiment's) is this split,
    /// recorded in `path`.
    ///
    /// # Errors
    /// [`Error::SplitMismatch`] naming the number of folds, or the first image (in id order)
    /// that one split lacks or puts in another fold or group.
    pub fn check_same(&self, other: &FoldSplit, path: &Path) -> Result<()> {
        let fail = |message: String| Err(Error::SplitMismatch { path: path.into(), message });
        if self.n_folds != other.n_folds {
            return fail(format!(
                "records {} folds, this split has {}",
                self.n_folds, other.n_folds
            ));
        }
        let mine: HashMap<&str, usize> =
            self.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        let theirs: HashMap<&str, usize> =
            other.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        let mut all: Vec<&str> = mine.keys().chain(theirs.keys()).copied().collect();
        all.sort_unstable();
        all.dedup();
        for id in all {
            match (mine.get(id), theirs.get(id)) {
                (Some(&a), Some(&b)) => {
                    if self.folds[a] != other.folds[b] {
                        return fail(format!(
                            "image {id} is in fold {} there but in fold {} here (the first differing id)",
                            self.folds[a], other.folds[b]
                        ));
                    }
                    if self.groups[a] != other.groups[b] {
                        return fail(format!(
                            "image {id} is in group {} there but in group {} here (the first differing id)",
                            self.groups[a], other.groups[b]
                        ));
                    }
                }
                (Some(_), None) => {
                    return fail(format!(
                        "image {id} is recorded there but not in this split (the first differing id)"
                    ));
                }
                (None, _) => {
                    return fail(format!(
                        "image {id} is in this split but not recorded there (the first differing id)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `(train, validation)` sample indices of fold `fold`.
pub fn split_indices(folds: &[usize], fold: usize) -> (Vec<usize>, Vec<usize>) {
    (0..folds.len()).partition(|&i| folds[i] != fold)
}

#[cfg(test)]
mod tests;
