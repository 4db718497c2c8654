//! The Sartorius (and DSB2018) competition metric.
//!
//! Per image: for each IoU threshold t in 0.50, 0.55, …, 0.95, a truth and a prediction match when
//! IoU > t (strict); precision(t) = TP / (TP + FP + FN); the image score is the mean over t. The
//! data set score is the **mean of image scores** (never the pooled TP/FP/FN of several images:
//! that is the seed's `iou_map` trap, SEED.md §6). Per cell type: the mean over that type's images.
//!
//! Counting follows the seed's `precision_at`: TP = truths with exactly one matching prediction,
//! FN = truths with none, FP = predictions matching no truth + truths matched more than once. With
//! pixel-disjoint predictions (as the competition requires) a truth can never be matched twice at
//! t ≥ 0.5, so this is the plain one-to-one count. An image with neither truths nor predictions
//! scores 1 (the seed would give 0; the case does not occur in the data).
//!
//! IoUs are computed on run-length encodings or cropped masks, never on full-image bitmaps. Since
//! no pair with IoU ≤ 0.5 can match at any threshold, [`score_coco_strs`] only intersects the pairs
//! whose areas and box overlap leave room for an IoU above 0.5; its score equals [`image_score`] of
//! the full matrix.
//!
//! ```
//! use cellseg_core::ImageSize;
//! use cellseg_metrics::competition::{IouMatrix, image_score};
//! use cellseg_rle::KaggleRle;
//!
//! let size = ImageSize::new(10, 10);
//! let truth = [KaggleRle::parse("1 5 11 5", size)?, KaggleRle::parse("51 10", size)?];
//! let pred = [KaggleRle::parse("1 5 11 4", size)?];
//! let ious = IouMatrix::from_kaggle(&truth, &pred)?;
//! let s = image_score(&ious);
//! // IoU 0.9: matched at t < 0.9 (8 thresholds: 1/2 each), unmatched above.
//! assert!((s.score - 8.0 * 0.5 / 10.0).abs() < 1e-12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use cellseg_core::{CroppedMask, ImageSize};
use cellseg_rle::batch::CocoBatch;
use cellseg_rle::{CocoRle, KaggleRle};
use serde::Serialize;

use crate::{Error, Result};

/// Number of IoU thresholds.
pub const N_THRESHOLDS: usize = 10;

/// The thresholds 0.50, 0.55, …, 0.95, computed as `np.arange(0.5, 1.0, 0.05)` does
/// (`0.5 + i * 0.05`).
pub fn thresholds() -> [f64; N_THRESHOLDS] {
    std::array::from_fn(|i| 0.5 + i as f64 * 0.05)
}

/// IoUs of `n_truth` truths (rows) against `n_pred` predictions (columns), stored sparsely (an
/// image of 400 cells has 160,000 pairs but only a few hundred overlap).
#[derive(Debug, Clone, PartialEq)]
pub struct IouMatrix {
    n_truth: usize,
    n_pred: usize,
    /// `(truth, pred, iou)` of the non-zero entries, in row-major order.
    nonzero: Vec<(usize, usize, f64)>,
}

use cellseg_rle::overlap::{Bounds, candidate_pairs};

fn box_bounds(b: Option<cellseg_core::BoxXyxy>) -> Bounds {
    b.map(|b| (b.y1 as usize, b.x1 as usize, b.y2 as usize - 1, b.x2 as usize - 1))
}

impl IouMatrix {
    /// From a row-major `[n_truth][n_pred]` buffer.
    ///
    /// # Errors
    /// [`Error::MatrixSize`] when `data.len() != n_truth * n_pred`.
    pub fn new(n_truth: usize, n_pred: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != n_truth * n_pred {
            return Err(Error::MatrixSize { n_truth, n_pred, got: data.len() });
        }
        let nonzero = data
            .iter()
            .enumerate()
            .filter(|&(_, &v)| v != 0.0)
            .map(|(k, &v)| (k / n_pred, k % n_pred, v))
            .collect();
        Ok(Self { n_truth, n_pred, nonzero })
    }

    /// From its non-zero entries `(truth, pred, iou)`, which must be in row-major order (sorted by
    /// truth, then prediction, no pair twice), inside the matrix, with IoUs in `(0, 1]`. This is
    /// how a caller that computed IoUs itself (on its own masks) builds a matrix without a dense
    /// buffer.
    ///
    /// # Errors
    /// [`Error::IouEntry`] naming the first bad entry.
    pub fn from_nonzero(
        n_truth: usize,
        n_pred: usize,
        nonzero: Vec<(usize, usize, f64)>,
    ) -> Result<Self> {
        for (index, &(t, p, v)) in nonzero.iter().enumerate() {
            let reason = if t >= n_truth || p >= n_pred {
                "outside the matrix"
            } else if !(v > 0.0 && v <= 1.0) {
                "IoU not in (0, 1]"
            } else if index > 0 && (nonzero[index - 1].0, nonzero[index - 1].1) >= (t, p) {
                "not in row-major order (or a pair given twice)"
            } else {
                continue;
            };
            return Err(Error::IouEntry {
                index,
                truth: t,
                pred: p,
                iou: v,
                n_truth,
                n_pred,
                reason,
            });
        }
        Ok(Self::from_pairs(n_truth, n_pred, nonzero))
    }

    fn from_pairs(n_truth: usize, n_pred: usize, nonzero: Vec<(usize, usize, f64)>) -> Self {
        Self { n_truth, n_pred, nonzero }
    }

    /// Number of truths (rows).
    pub fn n_truth(&self) -> usize {
        self.n_truth
    }

    /// Number of predictions (columns).
    pub fn n_pred(&self) -> usize {
        self.n_pred
    }

    /// IoU of truth `t` and prediction `p` (0 outside the matrix).
    pub fn get(&self, t: usize, p: usize) -> f64 {
        self.nonzero
            .binary_search_by(|&(a, b, _)| (a, b).cmp(&(t, p)))
            .map_or(0.0, |k| self.nonzero[k].2)
    }

    /// The non-zero entries `(truth, pred, iou)`, row-major.
    pub fn nonzero(&self) -> &[(usize, usize, f64)] {
        &self.nonzero
    }

    /// The dense row-major `[n_truth][n_pred]` matrix.
    pub fn to_dense(&self) -> Vec<f64> {
        let mut data = vec![0.0; self.n_truth * self.n_pred];
        for &(t, p, v) in &self.nonzero {
            data[t * self.n_pred + p] = v;
        }
        data
    }

    /// IoUs of Kaggle (row-major) RLEs, computed on the runs; only pairs whose bounding boxes
    /// meet are compared.
    ///
    /// # Errors
    /// [`cellseg_rle::Error::SizeMismatch`] when masks of different image sizes meet.
    pub fn from_kaggle(truth: &[KaggleRle], pred: &[KaggleRle]) -> Result<Self> {
        let tb: Vec<Bounds> = truth.iter().map(|m| box_bounds(m.bbox())).collect();
        let pb: Vec<Bounds> = pred.iter().map(|m| box_bounds(m.bbox())).collect();
        let ta: Vec<u64> = truth.iter().map(KaggleRle::area).collect();
        let pa: Vec<u64> = pred.iter().map(KaggleRle::area).collect();
        let mut nonzero = Vec::new();
        for (t, p) in candidate_pairs(&tb, &pb) {
            let inter = truth[t].intersection(&pred[p])?;
            if inter > 0 {
                nonzero.push((t, p, inter as f64 / (ta[t] + pa[p] - inter) as f64));
            }
        }
        Ok(Self::from_pairs(truth.len(), pred.len(), nonzero))
    }

    /// IoUs of cropped masks (only overlapping rectangles are visited).
    ///
    /// # Errors
    /// [`cellseg_rle::Error::SizeMismatch`] when masks of different image sizes meet.
    pub fn from_cropped(truth: &[CroppedMask], pred: &[CroppedMask]) -> Result<Self> {
        let bounds = |m: &CroppedMask| -> Bounds {
            let (top, left, h, w) = m.rect();
            (h > 0 && w > 0).then(|| (top, left, top + h - 1, left + w - 1))
        };
        let tb: Vec<Bounds> = truth.iter().map(bounds).collect();
        let pb: Vec<Bounds> = pred.iter().map(bounds).collect();
        let ta: Vec<usize> = truth.iter().map(CroppedMask::area).collect();
        let pa: Vec<usize> = pred.iter().map(CroppedMask::area).collect();
        let mut nonzero = Vec::new();
        for (t, p) in candidate_pairs(&tb, &pb) {
            let (tm, pm) = (&truth[t], &pred[p]);
            if tm.image_size() != pm.image_size() {
                return Err(cellseg_rle::Error::SizeMismatch {
                    index: p,
                    got: pm.image_size(),
                    want: tm.image_size(),
                }
                .into());
            }
            let inter = tm.intersection(pm);
            if inter > 0 {
                nonzero.push((t, p, inter as f64 / (ta[t] + pa[p] - inter) as f64));
            }
        }
        Ok(Self::from_pairs(truth.len(), pred.len(), nonzero))
    }

    /// IoUs of COCO RLEs (pycocotools `iou` with `iscrowd = 0`); only pairs whose `toBbox` boxes
    /// meet are compared.
    ///
    /// # Errors
    /// [`cellseg_rle::Error::SizeMismatch`].
    pub fn from_coco(truth: &[CocoRle], pred: &[CocoRle]) -> Result<Self> {
        let Some(size) = truth.first().or(pred.first()).map(CocoRle::size) else {
            return Ok(Self::from_pairs(0, 0, Vec::new()));
        };
        let mut tb = CocoBatch::new(size)?;
        for m in truth {
            tb.push(m)?;
        }
        let mut pb = CocoBatch::new(size)?;
        for m in pred {
            pb.push(m)?;
        }
        Ok(Self::from_batches(&tb, &pb))
    }

    /// IoUs of masks given as compressed COCO `counts` strings of one image size, parsed straight
    /// into runs (no [`CocoRle`] is built); equal to [`IouMatrix::from_coco`] of the parsed masks.
    ///
    /// # Errors
    /// Those of [`CocoRle::from_counts_str`] for the first bad string.
    pub fn from_coco_strs<S: AsRef<str>>(truth: &[S], pred: &[S], size: ImageSize) -> Result<Self> {
        Self::from_coco_strs_above(truth, pred, size, 0.0)
    }

    /// As [`IouMatrix::from_coco_strs`], keeping only the IoUs above `floor` (the others read as
    /// 0). Pairs whose areas and boxes already bound the IoU to at most `floor` are never
    /// intersected, so with `floor` = 0.5 (no pair at or below it can match at any threshold) this
    /// is much less work and [`image_score`] gives exactly the same score.
    ///
    /// # Errors
    /// Those of [`CocoRle::from_counts_str`] for the first bad string.
    pub fn from_coco_strs_above<S: AsRef<str>>(
        truth: &[S],
        pred: &[S],
        size: ImageSize,
        floor: f64,
    ) -> Result<Self> {
        // One pair of batches per thread, reused from image to image (no reallocation once warm).
        CocoBatch::with_pair(size, |tb, pb| {
            for s in truth {
                tb.push_counts_str(s.as_ref())?;
            }
            for s in pred {
                pb.push_counts_str(s.as_ref())?;
            }
            Ok(Self::from_batches_above(tb, pb, floor))
        })
    }

    /// IoUs of the masks of two batches of one image size (truths in `truth`, predictions in
    /// `pred`); batches of different sizes give no overlap.
    pub fn from_batches(truth: &CocoBatch, pred: &CocoBatch) -> Self {
        Self::from_batches_above(truth, pred, 0.0)
    }

    /// As [`IouMatrix::from_batches`], keeping only the IoUs above `floor` (see
    /// [`IouMatrix::from_coco_strs_above`]).
    pub fn from_batches_above(truth: &CocoBatch, pred: &CocoBatch, floor: f64) -> Self {
        let mut nonzero = Vec::new();
        // The same integers and division as pycocotools' rleIou.
        truth.for_each_iou_above(pred, floor, |t, p, iou| nonzero.push((t, p, iou)));
        // Pairs come grouped by truth; order each row by prediction.
        nonzero.sort_unstable_by_key(|&(t, p, _)| (t, p));
        Self::from_pairs(truth.len(), pred.len(), nonzero)
    }
}

/// The score of one image whose masks are compressed COCO `counts` strings of one image size:
/// [`image_score`] of [`IouMatrix::from_coco_strs_above`] with the lowest threshold as floor,
/// equal to [`image_score`] of the full [`IouMatrix::from_coco_strs`].
///
/// # Errors
/// Those of [`CocoRle::from_counts_str`] for the first bad string.
pub fn score_coco_strs<S: AsRef<str>>(
    truth: &[S],
    pred: &[S],
    size: ImageSize,
) -> Result<ImageScore> {
    let ious = IouMatrix::from_coco_strs_above(truth, pred, size, thresholds()[0])?;
    Ok(image_score(&ious))
}

/// The score of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageScore {
    /// Mean of `precisions`.
    pub score: f64,
    /// TP / (TP + FP + FN) at each threshold.
    pub precisions: [f64; N_THRESHOLDS],
    /// True positives at each threshold.
    pub tp: [usize; N_THRESHOLDS],
    /// False positives at each threshold.
    pub fp: [usize; N_THRESHOLDS],
    /// False negatives at each threshold.
    pub fn_: [usize; N_THRESHOLDS],
}

/// Scores one image from its IoU matrix (see the module docs for the counting rules).
pub fn image_score(ious: &IouMatrix) -> ImageScore {
    let (nt, np) = (ious.n_truth, ious.n_pred);
    let mut out = ImageScore {
        score: 0.0,
        precisions: [0.0; N_THRESHOLDS],
        tp: [0; N_THRESHOLDS],
        fp: [0; N_THRESHOLDS],
        fn_: [0; N_THRESHOLDS],
    };
    // Only pairs above the lowest threshold can ever match: collect them once.
    let lowest = thresholds()[0];
    let pairs: Vec<(usize, usize, f64)> =
        ious.nonzero.iter().copied().filter(|&(_, _, v)| v > lowest).collect();
    // Per threshold, only the truths and predictions of those pairs are visited: a stamp says
    // whether one was already hit at this threshold (no clearing between thresholds).
    let mut truth_stamp = vec![0u8; nt];
    let mut truth_hits = vec![0u32; nt];
    let mut pred_stamp = vec![0u8; np];
    for (k, &t) in thresholds().iter().enumerate() {
        let stamp = k as u8 + 1;
        // Truths hit at least once, hit more than once, predictions hit.
        let (mut hit, mut multi, mut preds_hit) = (0usize, 0usize, 0usize);
        for &(ti, pi, v) in &pairs {
            if v > t {
                if truth_stamp[ti] != stamp {
                    truth_stamp[ti] = stamp;
                    truth_hits[ti] = 0;
                    hit += 1;
                }
                truth_hits[ti] += 1;
                multi += (truth_hits[ti] == 2) as usize;
                if pred_stamp[pi] != stamp {
                    pred_stamp[pi] = stamp;
                    preds_hit += 1;
                }
            }
        }
        // TP: truths with exactly one match; FN: with none; FP: predictions with none plus
        // truths with several.
        let tp = hit - multi;
        let fn_ = nt - hit;
        let fp = (np - preds_hit) + multi;
        out.tp[k] = tp;
        out.fp[k] = fp;
        out.fn_[k] = fn_;
        out.precisions[k] =
            if tp + fp + fn_ == 0 { 1.0 } else { tp as f64 / (tp + fp + fn_) as f64 };
    }
    out.score = out.precisions.iter().sum::<f64>() / N_THRESHOLDS as f64;
    out
}

/// The scores of the first `prefix_lens[k]` predictions (columns) of one image, for every `k`: the
/// same values as [`image_score`] of the matrix cut to those columns (the seed's
/// `evaluate_at_confidences`, which cuts the score-sorted list at each confidence threshold with
/// `iou[:, :last]`), computed from one pass over the entries instead of one matrix per cut.
/// Lengths above [`IouMatrix::n_pred`] count as `n_pred`.
pub fn prefix_scores(ious: &IouMatrix, prefix_lens: &[usize]) -> Vec<ImageScore> {
    let (nt, np) = (ious.n_truth, ious.n_pred);
    let lens: Vec<usize> = prefix_lens.iter().map(|&l| l.min(np)).collect();
    let mut out: Vec<ImageScore> = lens
        .iter()
        .map(|_| ImageScore {
            score: 0.0,
            precisions: [0.0; N_THRESHOLDS],
            tp: [0; N_THRESHOLDS],
            fp: [0; N_THRESHOLDS],
            fn_: [0; N_THRESHOLDS],
        })
        .collect();
    let lowest = thresholds()[0];
    let pairs: Vec<(usize, usize, f64)> =
        ious.nonzero.iter().copied().filter(|&(_, _, v)| v > lowest).collect();
    // Per threshold: for each truth its first and second matching prediction (entries are
    // row-major, so a truth's predictions come in increasing order), and the predictions hit.
    // Within a prefix of length L a truth is hit when its first match is < L, hit several times
    // when its second is, and a prediction p is hit when p < L.
    let (mut first, mut second, mut hit_preds) = (Vec::new(), Vec::new(), Vec::new());
    let mut pred_stamp = vec![0u8; np];
    let count_below = |sorted: &[usize], l: usize| sorted.partition_point(|&x| x < l);
    for (k, &t) in thresholds().iter().enumerate() {
        first.clear();
        second.clear();
        hit_preds.clear();
        let stamp = k as u8 + 1;
        let mut current: Option<usize> = None;
        let mut seen = 0usize;
        for &(ti, pi, v) in &pairs {
            if v <= t {
                continue;
            }
            if current != Some(ti) {
                current = Some(ti);
                seen = 0;
            }
            match seen {
                0 => first.push(pi),
                1 => second.push(pi),
                _ => {}
            }
            seen += 1;
            if pred_stamp[pi] != stamp {
                pred_stamp[pi] = stamp;
                hit_preds.push(pi);
            }
        }
        first.sort_unstable();
        second.sort_unstable();
        hit_preds.sort_unstable();
        for (s, &l) in out.iter_mut().zip(&lens) {
            let hit = count_below(&first, l);
            let multi = count_below(&second, l);
            let preds_hit = count_below(&hit_preds, l);
            let (tp, fn_, fp) = (hit - multi, nt - hit, (l - preds_hit) + multi);
            s.tp[k] = tp;
            s.fp[k] = fp;
            s.fn_[k] = fn_;
            s.precisions[k] =
                if tp + fp + fn_ == 0 { 1.0 } else { tp as f64 / (tp + fp + fn_) as f64 };
        }
    }
    for s in &mut out {
        s.score = s.precisions.iter().sum::<f64>() / N_THRESHOLDS as f64;
    }
    out
}

/// Scores many images, spread over rayon's threads with the `rayon` feature (on by default; each
/// image is scored on one thread, so the result is the same as scoring them one after the
/// other): `score(&images[k])` in image order.
/// Use it with any of the per-image scorers, e.g. `|(t, p, size)| score_coco_strs(t, p, *size)`.
///
/// # Errors
/// The error of the first image (in image order) whose `score` fails.
pub fn score_all<I, F>(images: &[I], score: F) -> Result<Vec<ImageScore>>
where
    I: Sync,
    F: Fn(&I) -> Result<ImageScore> + Sync,
{
    #[cfg(feature = "rayon")]
    let scores: Vec<Result<ImageScore>> = {
        use rayon::prelude::*;
        images.par_iter().map(&score).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let scores: Vec<Result<ImageScore>> = images.iter().map(&score).collect();
    scores.into_iter().collect()
}

/// Mean of image scores (0 images give `None`).
pub fn mean_score<'a>(scores: impl IntoIterator<Item = &'a ImageScore>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for s in scores {
        sum += s.score;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::{BitMask, ImageSize};
    use proptest::prelude::*;

    fn arb_masks(n: usize, size: ImageSize) -> impl Strategy<Value = Vec<KaggleRle>> {
        proptest::collection::vec((0..size.height, 0..size.width, 1..6usize, 1..6usize), 0..n)
            .prop_map(move |rects| {
                rects
                    .into_iter()
                    .map(|(r, c, h, w)| {
                        let mut m = BitMask::zeros(size);
                        for y in r..(r + h).min(size.height) {
                            for x in c..(c + w).min(size.width) {
                                m.set(y, x, true);
                            }
                        }
                        KaggleRle::from_mask(&m)
                    })
                    .collect()
            })
    }

    /// The seed's `precision_at`, literally: dense hit counts per threshold.
    fn reference_score(nt: usize, np: usize, dense: &[f64]) -> (f64, Vec<[usize; 3]>) {
        let mut counts = Vec::new();
        let mut sum = 0.0;
        for t in thresholds() {
            let hits: Vec<usize> =
                (0..nt).map(|i| (0..np).filter(|&j| dense[i * np + j] > t).count()).collect();
            let pred_hit: Vec<bool> =
                (0..np).map(|j| (0..nt).any(|i| dense[i * np + j] > t)).collect();
            let tp = hits.iter().filter(|&&h| h == 1).count();
            let fn_ = hits.iter().filter(|&&h| h == 0).count();
            let fp =
                pred_hit.iter().filter(|&&h| !h).count() + hits.iter().filter(|&&h| h > 1).count();
            counts.push([tp, fp, fn_]);
            sum += if tp + fp + fn_ == 0 { 1.0 } else { tp as f64 / (tp + fp + fn_) as f64 };
        }
        (sum / N_THRESHOLDS as f64, counts)
    }

    #[test]
    fn thresholds_match_numpy_arange() {
        let t = thresholds();
        assert_eq!(t[0], 0.5);
        assert_eq!(t[9], 0.5 + 9.0 * 0.05);
    }

    #[test]
    fn from_nonzero_rejects_bad_entries() {
        assert!(IouMatrix::from_nonzero(2, 2, vec![(0, 1, 0.5), (1, 0, 0.2)]).is_ok());
        let e = IouMatrix::from_nonzero(2, 2, vec![(1, 0, 0.5), (0, 1, 0.2)]).unwrap_err();
        assert!(e.to_string().contains("entry 1") && e.to_string().contains("row-major"), "{e}");
        assert!(IouMatrix::from_nonzero(2, 2, vec![(0, 2, 0.5)]).is_err());
        assert!(IouMatrix::from_nonzero(2, 2, vec![(0, 0, 0.0)]).is_err());
        assert!(IouMatrix::from_nonzero(2, 2, vec![(0, 0, f64::NAN)]).is_err());
    }

    #[test]
    fn strict_threshold() {
        let m = IouMatrix::new(1, 1, vec![0.5]).unwrap();
        assert_eq!(image_score(&m).score, 0.0);
        let m = IouMatrix::new(1, 1, vec![0.55]).unwrap();
        assert_eq!(image_score(&m).tp[0], 1);
        assert_eq!(image_score(&m).tp[1], 0);
    }

    #[test]
    fn empty_predictions_score_zero() {
        let m = IouMatrix::new(3, 0, vec![]).unwrap();
        let s = image_score(&m);
        assert_eq!(s.score, 0.0);
        assert_eq!(s.fn_[0], 3);
    }

    #[test]
    fn score_all_keeps_image_order_and_reports_the_first_error() {
        let size = ImageSize::new(8, 8);
        let square = |r: usize, c: usize| {
            let mut m = BitMask::zeros(size);
            for (y, x) in (r..r + 3).flat_map(|y| (c..c + 3).map(move |x| (y, x))) {
                m.set(y, x, true);
            }
            CocoRle::from_mask(&m).to_counts_string()
        };
        // Image k predicts the truth square moved k % 6 columns: its score falls with k % 6.
        let images: Vec<(Vec<String>, Vec<String>)> =
            (0..40).map(|k| (vec![square(2, 0)], vec![square(2, k % 6)])).collect();
        let score = |(t, p): &(Vec<String>, Vec<String>)| score_coco_strs(t, p, size);
        let all = score_all(&images, score).unwrap();
        let one_by_one: Vec<_> = images.iter().map(|im| score(im).unwrap()).collect();
        assert_eq!(all, one_by_one);
        assert_eq!(all[0].score, 1.0);
        assert_eq!(all[3].score, 0.0);
        // Two bad images: the error is the first one's, whichever thread fails first.
        let mut bad = images.clone();
        bad[7].1[0] = "not a counts string".into();
        bad[30].0[0] = "0P".into();
        let want = score(&bad[7]).unwrap_err().to_string();
        for _ in 0..5 {
            assert_eq!(score_all(&bad, score).unwrap_err().to_string(), want);
        }
    }

    proptest! {
        #[test]
        fn identical_inputs_score_one(ms in arb_masks(8, ImageSize::new(20, 24))) {
            // Identical but possibly overlapping masks: a truth can match its twin and a
            // duplicate, so score 1 is only promised for distinct masks.
            let mut uniq: Vec<KaggleRle> = Vec::new();
            for m in ms {
                if m.area() > 0 && uniq.iter().all(|u| u.iou(&m).unwrap() <= 0.5) {
                    uniq.push(m);
                }
            }
            let s = image_score(&IouMatrix::from_kaggle(&uniq, &uniq).unwrap());
            prop_assert_eq!(s.score, 1.0);
        }

        #[test]
        fn disjoint_inputs_score_zero(a in arb_masks(6, ImageSize::new(20, 12)), b in arb_masks(6, ImageSize::new(20, 12))) {
            // Shift b into the right half of a 20x24 image; a stays in the left half.
            let size = ImageSize::new(20, 24);
            let widen = |m: &KaggleRle, dx: usize| {
                let src = m.to_mask();
                let mut out = BitMask::zeros(size);
                for y in 0..20 { for x in 0..12 { if src.get(y, x) { out.set(y, x + dx, true); } } }
                KaggleRle::from_mask(&out)
            };
            let ta: Vec<_> = a.iter().map(|m| widen(m, 0)).filter(|m| m.area() > 0).collect();
            let pb: Vec<_> = b.iter().map(|m| widen(m, 12)).filter(|m| m.area() > 0).collect();
            prop_assume!(!ta.is_empty() || !pb.is_empty());
            let s = image_score(&IouMatrix::from_kaggle(&ta, &pb).unwrap());
            prop_assert_eq!(s.score, 0.0);
        }

        #[test]
        fn counts_equal_the_seed_counting(nt in 0usize..6, np in 0usize..6, cells in proptest::collection::vec(0usize..12, 36)) {
            // IoUs on the thresholds and between them, truths matched several times included.
            let dense: Vec<f64> =
                (0..nt * np).map(|k| if cells[k] < 4 { 0.0 } else { 0.45 + cells[k] as f64 * 0.05 }).collect();
            let s = image_score(&IouMatrix::new(nt, np, dense.clone()).unwrap());
            let (want, counts) = reference_score(nt, np, &dense);
            prop_assert_eq!(s.score, want);
            for (k, c) in counts.iter().enumerate() {
                prop_assert_eq!([s.tp[k], s.fp[k], s.fn_[k]], *c);
            }
        }

        #[test]
        fn prefix_scores_equal_scores_of_cut_matrices(nt in 0usize..6, np in 0usize..8, cells in proptest::collection::vec(0usize..12, 48), cuts in proptest::collection::vec(0usize..10, 0..6)) {
            let dense: Vec<f64> =
                (0..nt * np).map(|k| if cells[k] < 4 { 0.0 } else { 0.45 + cells[k] as f64 * 0.05 }).collect();
            let full = IouMatrix::new(nt, np, dense.clone()).unwrap();
            let rebuilt = IouMatrix::from_nonzero(nt, np, full.nonzero().to_vec()).unwrap();
            prop_assert_eq!(&rebuilt, &full);
            let got = prefix_scores(&full, &cuts);
            for (&l, s) in cuts.iter().zip(&got) {
                let l = l.min(np);
                let cut: Vec<f64> = (0..nt).flat_map(|i| dense[i * np..i * np + l].to_vec()).collect();
                prop_assert_eq!(s, &image_score(&IouMatrix::new(nt, l, cut).unwrap()));
            }
        }

        #[test]
        fn pruned_string_path_gives_the_full_score(a in arb_masks(10, ImageSize::new(9, 11)), b in arb_masks(10, ImageSize::new(9, 11)), floor in 0.0f64..0.9) {
            // Small images: many pairs overlap, many above 0.5, some just at it.
            let size = ImageSize::new(9, 11);
            let strs = |v: &[KaggleRle]| -> Vec<String> {
                v.iter().map(|m| CocoRle::from_kaggle(m).to_counts_string()).collect()
            };
            let (sa, sb) = (strs(&a), strs(&b));
            let full = IouMatrix::from_coco_strs(&sa, &sb, size).unwrap();
            prop_assert_eq!(score_coco_strs(&sa, &sb, size).unwrap(), image_score(&full));
            let above = IouMatrix::from_coco_strs_above(&sa, &sb, size, floor).unwrap();
            let want: Vec<_> = full.nonzero().iter().copied().filter(|e| e.2 > floor).collect();
            prop_assert_eq!(above.nonzero(), &want[..]);
        }

        #[test]
        fn score_in_unit_interval_and_order_invariant(a in arb_masks(6, ImageSize::new(16, 16)), b in arb_masks(6, ImageSize::new(16, 16))) {
            let s = image_score(&IouMatrix::from_kaggle(&a, &b).unwrap()).score;
            prop_assert!((0.0..=1.0).contains(&s));
            let rev: Vec<_> = b.iter().rev().cloned().collect();
            let s2 = image_score(&IouMatrix::from_kaggle(&a, &rev).unwrap()).score;
            prop_assert_eq!(s, s2);
            let m = IouMatrix::from_kaggle(&a, &b).unwrap();
            let crop_a: Vec<_> = a.iter().map(KaggleRle::to_cropped).collect();
            let crop_b: Vec<_> = b.iter().map(KaggleRle::to_cropped).collect();
            let mc = IouMatrix::from_cropped(&crop_a, &crop_b).unwrap();
            let coco_a: Vec<_> = a.iter().map(CocoRle::from_kaggle).collect();
            let coco_b: Vec<_> = b.iter().map(CocoRle::from_kaggle).collect();
            let mo = IouMatrix::from_coco(&coco_a, &coco_b).unwrap();
            let dense = cellseg_rle::coco::iou_matrix(&coco_a, &coco_b, &vec![false; b.len()]).unwrap();
            // The string path parses straight into runs and must give the very same matrix.
            let size = ImageSize::new(16, 16);
            let sa: Vec<_> = coco_a.iter().map(CocoRle::to_counts_string).collect();
            let sb: Vec<_> = coco_b.iter().map(CocoRle::to_counts_string).collect();
            let ms = IouMatrix::from_coco_strs(&sa, &sb, size).unwrap();
            prop_assert_eq!(&ms, &mo);
            prop_assert_eq!(ms.to_dense(), dense.clone());
            for (((x, y), z), w) in m.to_dense().iter().zip(&mc.to_dense()).zip(&mo.to_dense()).zip(&dense) {
                prop_assert!((x - y).abs() < 1e-12 && (x - z).abs() < 1e-12 && (x - w).abs() < 1e-12);
            }
        }
    }
}
