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

/// Reads a submission (`id,predicted`, one row per mask; an image without masks has one row with
/// an empty `predicted`) and returns the masks of each truth image, in `truth` order. RLEs are read
/// with the truth's image size.
///
/// # Errors
/// [`Error::Io`], [`Error::Csv`], [`Error::MissingColumn`], [`Error::RowRle`] (a run past the truth's
/// image size is reported with its row), [`Error::MissingIds`] for ids on one side only.
pub fn load_submission_csv(path: &Path, truth: &[TruthImage]) -> Result<Vec<Vec<KaggleRle>>> {
    let recs = csv::read(path)?;
    let Some((header, rows)) = recs.split_first() else {
        return Err(Error::Csv { path: path.to_path_buf(), row: 1, message: "empty file".into() });
    };
    let n = header.fields.len();
    let (ci, cp) = (column(path, header, "id")?, column(path, header, "predicted")?);
    let index: HashMap<&str, usize> =
        truth.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
    let mut out: Vec<Vec<KaggleRle>> = vec![Vec::new(); truth.len()];
    let mut seen = vec![false; truth.len()];
    let mut unknown: Vec<String> = Vec::new();
    for rec in rows {
        let id = field(path, rec, ci, n)?;
        let Some(&k) = index.get(id) else {
            if !unknown.iter().any(|u| u == id) {
                unknown.push(id.to_string());
            }
            continue;
        };
        seen[k] = true;
        let s = field(path, rec, cp, n)?;
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
    /// Every image, in truth order.
    pub images: Vec<ImageReport>,
}

impl CompetitionReport {
    /// A short text table: overall, then one line per cell type.
    pub fn table(&self) -> String {
        let mut s = format!("{:<12} {:>7} {:>8}\n", "cell type", "images", "score");
        for (ct, v) in &self.per_cell_type {
            s.push_str(&format!("{ct:<12} {:>7} {:>8.5}\n", v.images, v.score));
        }
        s.push_str(&format!("{:<12} {:>7} {:>8.5}\n", "overall", self.images.len(), self.overall));
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
    Ok(CompetitionReport { overall, per_cell_type, images })
}

/// Loads both CSVs and scores them.
///
/// # Errors
/// As [`load_truth_csv`], [`load_submission_csv`] and [`evaluate_competition`].
pub fn competition_from_files(truth: &Path, pred: &Path) -> Result<CompetitionReport> {
    let t = load_truth_csv(truth)?;
    let p = load_submission_csv(pred, &t)?;
    evaluate_competition(&t, &p)
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
    fn ids_missing_on_either_side_are_errors() {
        let (_d, t, p) = files(TRUTH, "a,1 4\n");
        let e = competition_from_files(&t, &p).unwrap_err();
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
