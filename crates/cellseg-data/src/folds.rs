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

/// `(train, validation)` sample indices of fold `fold`.
pub fn split_indices(folds: &[usize], fold: usize) -> (Vec<usize>, Vec<usize>) {
    (0..folds.len()).partition(|&i| folds[i] != fold)
}

#[cfg(test)]
mod tests;
