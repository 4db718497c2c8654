//! File-level evaluation: the competition metric from a `train.csv`-style truth and an
//! `id,predicted` submission, and the COCO table from a ground-truth json and a result json.
//! The `evaluate` example of the root package is a thin wrapper around these functions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cellseg_core::ImageSize;
use cellseg_rle::KaggleRle;
use serde::Serialize;

use crate::coco_dataset::CocoDataset;
use crate::cocoeval::{self, CocoEvalParams, IouType};
use crate::competition::{self, ImageScore, IouMatrix};
use crate::csv::{self, Record};
use crate::{Error, Result};

/// The ground truth of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthImage {
    /// Image id.
    pub id: String,
    /// Image size (from the `height` / `width` columns).
    pub size: ImageSize,
    /// Cell type (from the `cell_type` column).
    pub cell_type: String,
    /// One mask per row.
    pub masks: Vec<KaggleRle>,
}

fn column(path: &Path, header: &Record, name: &'static str) -> Result<usize> {
    header.fields.iter().position(|f| f.trim() == name).ok_or_else(|| Error::MissingColumn {
        path: path.to_path_buf(),
        column: name,
        header: header.fields.clone(),
    })
}

fn field<'a>(path: &Path, rec: &'a Record, col: usize, n_cols: usize) -> Result<&'a str> {
    if rec.fields.len() != n_cols {
        return Err(Error::Csv {
            path: path.to_path_buf(),
            row: rec.row,
            message: format!("{} fields, the header has {n_cols}", rec.fields.len()),
        });
    }
    Ok(rec.fields[col].trim())
}

fn parse_dim(path: &Path, rec: &Record, s: &str, name: &str) -> Result<usize> {
    s.parse().map_err(|_| Error::Csv {
        path: path.to_path_buf(),
        row: rec.row,
        message: format!("{name} {s:?} is not a non-negative integer"),
    })
}

/// Reads a truth CSV in the Sartorius `train.csv` layout (`id, annotation, width, height,
/// cell_type, …`, one row per cell, row-major 1-based RLE). Images keep their first-row order.
///
/// # Errors
/// [`Error::Io`], [`Error::Csv`] (row number), [`Error::MissingColumn`], [`Error::RowRle`] (row and
/// run), [`Error::ImageSizeConflict`].
pub fn load_truth_csv(path: &Path) -> Result<Vec<TruthImage>> {
    let recs = csv::read(path)?;
    let Some((header, rows)) = recs.split_first() else {
        return Err(Error::Csv { path: path.to_path_buf(), row: 1, message: "empty file".into() });
    };
    let n = header.fields.len();
    let (ci, ca, cw, ch, ct) = (
        column(path, header, "id")?,
        column(path, header, "annotation")?,
        column(path, header, "width")?,
        column(path, header, "height")?,
        column(path, header, "cell_type")?,
    );
    let mut images: Vec<TruthImage> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for rec in rows {
        let id = field(path, rec, ci, n)?;
        let w = parse_dim(path, rec, field(path, rec, cw, n)?, "width")?;
        let h = parse_dim(path, rec, field(path, rec, ch, n)?, "height")?;
        let size = ImageSize::new(h, w);
        let k = *index.entry(id.to_string()).or_insert_with(|| {
            images.push(TruthImage {
                id: id.to_string(),
                size,
                cell_type: String::new(),
                masks: Vec::new(),
            });
            images.len() - 1
        });
        let img = &mut images[k];
        if img.size != size {
            return Err(Error::ImageSizeConflict {
                path: path.to_path_buf(),
                row: rec.row,
                id: id.into(),
                got: size,
                want: img.size,
            });
        }
        if img.cell_type.is_empty() {
            img.cell_type = field(path, rec, ct, n)?.to_string();
        }
        let rle =
            KaggleRle::parse(field(path, rec, ca, n)?, size).map_err(|source| Error::RowRle {
                path: path.to_path_buf(),
                row: rec.row,
                id: id.into(),
                source: Box::new(source),
            })?;
        img.masks.push(rle);
    }
    tracing::info!(path = %path.display(), images = images.len(), "truth CSV loaded");
    Ok(images)
}

/// The truth images a prediction covers, under the rule every tool of the workspace shares
/// (`evaluate`, `tweak_thresholds`, `infer_ensemble --truth`, `cross_validate`): the truth may
/// hold more images than the prediction (a full `train.csv` against the out-of-fold predictions
/// of the images training kept); those are left out and listed, and every predicted image must
/// have its truth.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictedTruth {
    /// The truth of every predicted image, in the order of `predicted`.
    pub images: Vec<TruthImage>,
    /// Truth images without a prediction, in truth order (left out of the score).
    pub ignored: Vec<String>,
}

/// Picks the truth of each id of `predicted` (in that order) out of `truth`; truth images that
/// were not predicted go to [`PredictedTruth::ignored`].
///
/// # Errors
/// [`Error::MissingIds`] naming `pred_path` and every predicted id the truth lacks.
pub fn truth_of_predicted<S: AsRef<str>>(
    truth: Vec<TruthImage>,
    predicted: &[S],
    pred_path: &Path,
) -> Result<PredictedTruth> {
    let mut by_id: HashMap<String, TruthImage> =
        truth.iter().map(|t| (t.id.clone(), t.clone())).collect();
    let mut images = Vec::with_capacity(predicted.len());
    let mut unknown = Vec::new();
    for id in predicted {
        match by_id.remove(id.as_ref()) {
            Some(t) => images.push(t),
            None => unknown.push(id.as_ref().to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::MissingIds {
            path: pred_path.to_path_buf(),
            what: "not in the truth",
            ids: unknown,
        });
    }
    let ignored: Vec<String> =
        truth.into_iter().filter(|t| by_id.contains_key(&t.id)).map(|t| t.id).collect();
    if !ignored.is_empty() {
        tracing::info!(
            ignored = ignored.len(),
            scored = images.len(),
            "truth images without a prediction are left out"
        );
    }
    Ok(PredictedTruth { images, ignored })
}

/// The header and rows of a submission CSV with the positions of its `id` and `predicted`.
struct Submission {
    rows: Vec<Record>,
    n_cols: usize,
    id: usize,
    predicted: usize,
}

impl Submission {
    fn read(path: &Path) -> Result<Self> {
        let mut recs = csv::read(path)?;
        if recs.is_empty() {
            return Err(Error::Csv {
                path: path.to_path_buf(),
                row: 1,
                message: "empty file".into(),
            });
        }
        let header = recs.remove(0);
        let (id, predicted) = (column(path, &header, "id")?, column(path, &header, "predicted")?);
        Ok(Self { rows: recs, n_cols: header.fields.len(), id, predicted })
    }

    /// The distinct ids, in first-row order.
    fn ids(&self, path: &Path) -> Result<Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for rec in &self.rows {
            let id = field(path, rec, self.id, self.n_cols)?;
            if seen.insert(id) {
                out.push(id.to_string());
            }
        }
        Ok(out)
    }

    /// The masks of each truth image, in `truth` order.
    fn masks(&self, path: &Path, truth: &[TruthImage]) -> Result<Vec<Vec<KaggleRle>>> {
        let index: HashMap<&str, usize> =
            truth.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
        let mut out: Vec<Vec<KaggleRle>> = vec![Vec::new(); truth.len()];
        let mut seen = vec![false; truth.len()];
        let mut unknown: Vec<String> = Vec::new();
        for rec in &self.rows {
            let id = field(path, rec, self.id, self.n_cols)?;
            let Some(&k) = index.get(id) else {
                if !unknown.iter().any(|u| u == id) {
                    unknown.push(id.to_string());
                }
                continue;
            };
            seen[k] = true;
            let s = field(path, rec, self.predicted, self.n_cols)?;
            if s.is_empty() {
                continue;
            }
            let rle = KaggleRle::parse(s, truth[k].size).map_err(|source| Error::RowRle {
                path: path.to_path_buf(),
                row: rec.row,
                id: id.into(),
                source: Box::new(source),
            })?;
            if rle.area() > 0 {
                out[k].push(rle);
            }
        }
        if !unknown.is_empty() {
            return Err(Error::MissingIds {
                path: path.to_path_buf(),
                what: "not in the truth",
                ids: unknown,
            });
        }
        let missing: Vec<String> =
            truth.iter().zip(&seen).filter(|(_, s)| !**s).map(|(t, _)| t.id.clone()).collect();
        if !missing.is_empty() {
            return Err(Error::MissingIds {
                path: path.to_path_buf(),
                what: "missing from the prediction",
                ids: missing,
            });
        }
        Ok(out)
    }
}

/// Reads a submission (`id,predicted`, one row per mask; an image without masks has one row with
/// an empty `predicted`) and returns the masks of each truth image, in `truth` order. RLEs are read
/// with the truth's image size. Both sides must hold the same ids here; [`competition_from_files`]
/// first narrows a larger truth with [`truth_of_predicted`].
///
/// # Errors
/// [`Error::Io`], [`Error::Csv`], [`Error::MissingColumn`], [`Error::RowRle`] (a run past the truth's
/// image size is reported with its row), [`Error::MissingIds`] for ids on one side only.
pub fn load_submission_csv(path: &Path, truth: &[TruthImage]) -> Result<Vec<Vec<KaggleRle>>> {
    Submission::read(path)?.masks(path, truth)
}

/// The score of one image in a [`CompetitionReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageReport {
    /// Image id.
    pub id: String,
    /// Cell type from the truth.
    pub cell_type: String,
    /// Number of truth masks.
    pub n_truth: usize,
    /// Number of predicted masks.
    pub n_pred: usize,
    /// The image's score and counts.
    #[serde(flatten)]
    pub score: ImageScore,
}

/// Score of one cell type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellTypeScore {
    /// Mean image score.
    pub score: f64,
    /// Number of images.
    pub images: usize,
}

/// The competition metric over a data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompetitionReport {
    /// Mean of image scores.
    pub overall: f64,
    /// Mean of image scores per cell type.
    pub per_cell_type: BTreeMap<String, CellTypeScore>,
    /// Every image, in the order scored.
    pub images: Vec<ImageReport>,
    /// Truth images without a prediction, left out of the score ([`truth_of_predicted`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_truth: Vec<String>,
}

impl CompetitionReport {
    /// A short text table: overall, then one line per cell type.
    pub fn table(&self) -> String {
        let mut s = format!("{:<12} {:>7} {:>8}\n", "cell type", "images", "score");
        for (ct, v) in &self.per_cell_type {
            s.push_str(&format!("{ct:<12} {:>7} {:>8.5}\n", v.images, v.score));
        }
        s.push_str(&format!("{:<12} {:>7} {:>8.5}\n", "overall", self.images.len(), self.overall));
        if !self.ignored_truth.is_empty() {
            s.push_str(&format!(
                "({} truth image(s) without a prediction left out: {})\n",
                self.ignored_truth.len(),
                listed(&self.ignored_truth)
            ));
        }
        s
    }
}

/// Scores predictions (aligned with `truth`, see [`load_submission_csv`]).
///
/// # Errors
/// [`Error::MatrixSize`] when `preds.len() != truth.len()`; RLE size mismatches.
pub fn evaluate_competition(
    truth: &[TruthImage],
    preds: &[Vec<KaggleRle>],
) -> Result<CompetitionReport> {
    if truth.len() != preds.len() {
        return Err(Error::MatrixSize {
            n_truth: truth.len(),
            n_pred: preds.len(),
            got: preds.len(),
        });
    }
    // Images are scored on rayon's threads (`rayon` feature), each on one; the report keeps the
    // truth's order.
    let score = |(t, p): (&TruthImage, &Vec<KaggleRle>)| -> Result<ImageReport> {
        let ious = IouMatrix::from_kaggle(&t.masks, p)?;
        Ok(ImageReport {
            id: t.id.clone(),
            cell_type: t.cell_type.clone(),
            n_truth: t.masks.len(),
            n_pred: p.len(),
            score: competition::image_score(&ious),
        })
    };
    #[cfg(feature = "rayon")]
    let images: Vec<Result<ImageReport>> = {
        use rayon::prelude::*;
        truth.par_iter().zip(preds).map(score).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let images: Vec<Result<ImageReport>> = truth.iter().zip(preds).map(score).collect();
    let images = images.into_iter().collect::<Result<Vec<_>>>()?;
    let overall = competition::mean_score(images.iter().map(|i| &i.score)).unwrap_or(0.0);
    let mut per: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for im in &images {
        let e = per.entry(im.cell_type.clone()).or_insert((0.0, 0));
        e.0 += im.score.score;
        e.1 += 1;
    }
    let per_cell_type = per
        .into_iter()
        .map(|(k, (s, n))| (k, CellTypeScore { score: s / n as f64, images: n }))
        .collect();
    Ok(CompetitionReport { overall, per_cell_type, images, ignored_truth: Vec::new() })
}

/// Loads both CSVs and scores the submission's images, in submission order; truth images it does
/// not hold are left out and listed in [`CompetitionReport::ignored_truth`]
/// ([`truth_of_predicted`]).
///
/// # Errors
/// As [`load_truth_csv`], [`load_submission_csv`] (a submission id without truth is an error) and
/// [`evaluate_competition`].
pub fn competition_from_files(truth: &Path, pred: &Path) -> Result<CompetitionReport> {
    let sub = Submission::read(pred)?;
    let t = truth_of_predicted(load_truth_csv(truth)?, &sub.ids(pred)?, pred)?;
    let p = sub.masks(pred, &t.images)?;
    let mut report = evaluate_competition(&t.images, &p)?;
    report.ignored_truth = t.ignored;
    Ok(report)
}

/// The first ten of `ids`, then how many more.
fn listed(ids: &[String]) -> String {
    let mut s = ids.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if ids.len() > 10 {
        s.push_str(&format!(", … ({} more)", ids.len() - 10));
    }
    s
}

/// A COCO evaluation of two files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CocoReport {
    /// Ground-truth file.
    pub truth: PathBuf,
    /// Result file.
    pub results: PathBuf,
    /// The evaluation (parameters, precision/recall arrays, stats).
    #[serde(skip)]
    pub eval: cocoeval::CocoEvalResult,
    /// Named stats: `AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`, `AR@<m>` for each maxDets, `ARs`,
    /// `ARm`, `ARl`.
    pub stats: BTreeMap<String, f64>,
    /// bbox or segm.
    pub iou_type: IouType,
    /// maxDets used.
    pub max_dets: Vec<usize>,
}

/// Runs COCO evaluation on a ground-truth json and a result json.
///
/// # Errors
/// As [`CocoDataset::load`], [`CocoDataset::load_results`] and [`cocoeval::evaluate`].
pub fn coco_from_files(
    truth: &Path,
    results: &Path,
    params: &CocoEvalParams,
) -> Result<CocoReport> {
    let segm = params.iou_type == IouType::Segm;
    let gt = CocoDataset::load(truth, segm)?;
    let dt = gt.load_results(results, segm)?;
    let eval = cocoeval::evaluate(&gt, &dt, params)?;
    Ok(CocoReport {
        truth: truth.to_path_buf(),
        results: results.to_path_buf(),
        stats: eval.named_stats().into_iter().collect(),
        iou_type: params.iou_type,
        max_dets: eval.params.max_dets.clone(),
        eval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "id,annotation,width,height,cell_type,plate_time,sample_date,sample_id,elapsed_timedelta\n";

    fn files(truth: &str, pred: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (t, p) = (dir.path().join("train.csv"), dir.path().join("sub.csv"));
        std::fs::write(&t, format!("{HEADER}{truth}")).unwrap();
        std::fs::write(&p, format!("id,predicted\n{pred}")).unwrap();
        (dir, t, p)
    }

    const TRUTH: &str =
        "a,1 4 11 4,10,10,astro,,,,\"0 days, 1\"\na,51 3,10,10,astro,,,,\nb,5 5,10,10,cort,,,,\n";

    #[test]
    fn scores_per_image_and_cell_type() {
        let (_d, t, p) = files(TRUTH, "a,1 4 11 4\na,51 3\nb,\n");
        let r = competition_from_files(&t, &p).unwrap();
        assert_eq!(r.images.len(), 2);
        assert_eq!(r.images[0].score.score, 1.0);
        assert_eq!(r.images[1].score.score, 0.0);
        assert_eq!(r.overall, 0.5);
        assert_eq!(r.per_cell_type["astro"].score, 1.0);
        assert_eq!(r.per_cell_type["cort"].images, 1);
        assert!(r.table().contains("overall"));
    }

    #[test]
    fn a_larger_truth_is_narrowed_and_a_prediction_without_truth_is_an_error() {
        // `b` has no prediction: left out and listed, `a` scored alone.
        let (_d, t, p) = files(TRUTH, "a,1 4 11 4\na,51 3\n");
        let r = competition_from_files(&t, &p).unwrap();
        assert_eq!((r.images.len(), r.overall), (1, 1.0));
        assert_eq!(r.ignored_truth, ["b"]);
        assert!(
            r.table().contains("1 truth image(s) without a prediction left out: b"),
            "{}",
            r.table()
        );
        // Images are scored in submission order.
        let (_d, t, p) = files(TRUTH, "b,\na,1 4 11 4\na,51 3\n");
        let r = competition_from_files(&t, &p).unwrap();
        assert_eq!(r.images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert!(r.ignored_truth.is_empty());
        // The strict loader keeps both sides equal.
        let truth = load_truth_csv(&t).unwrap();
        let (_d2, _t2, p2) = files(TRUTH, "a,1 4\n");
        let e = load_submission_csv(&p2, &truth).unwrap_err();
        assert!(matches!(&e, Error::MissingIds { ids, .. } if ids == &["b".to_string()]), "{e}");
        let (_d, t, p) = files(TRUTH, "a,1 4\nb,\nzz,3 1\n");
        let e = competition_from_files(&t, &p).unwrap_err();
        assert!(e.to_string().contains("not in the truth: zz"), "{e}");
    }

    #[test]
    fn malformed_rows_name_the_row() {
        let (_d, t, p) = files(TRUTH, "a,1 4\nb,5 x\n");
        let e = competition_from_files(&t, &p).unwrap_err();
        assert!(matches!(e, Error::RowRle { row: 3, .. }), "{e}");
        let (_d, t, p) = files("a,1 4,10,10\n", "a,\n");
        let e = competition_from_files(&t, &p).unwrap_err();
        assert!(matches!(e, Error::Csv { row: 2, .. }), "{e}");
        let (_d, t, p) = files("a,1 4,ten,10,astro,,,,\n", "a,\n");
        assert!(matches!(competition_from_files(&t, &p).unwrap_err(), Error::Csv { row: 2, .. }));
    }

    #[test]
    fn wrong_image_sizes_are_errors() {
        // A prediction running past the truth's 10x10 image.
        let (_d, t, p) = files(TRUTH, "a,98 5\nb,\n");
        let e = competition_from_files(&t, &p).unwrap_err();
        assert!(
            matches!(&e, Error::RowRle { row: 2, source, .. } if matches!(**source, cellseg_rle::Error::RunOutOfBounds { .. })),
            "{e}"
        );
        // Rows of one image disagreeing on its size.
        let (_d, t, p) = files("a,1 4,10,10,astro,,,,\na,1 4,12,10,astro,,,,\n", "a,\n");
        let e = competition_from_files(&t, &p).unwrap_err();
        assert!(matches!(e, Error::ImageSizeConflict { row: 3, .. }), "{e}");
    }
}
