//! COCO evaluation (bbox and segm) with the numbers of pycocotools' `COCOeval`.
//!
//! The steps are those of `COCOeval.evaluate / accumulate / summarize`: per image and category,
//! detections are sorted by score with a stable sort and cut to the largest `maxDets`; the IoU
//! matrix is pycocotools `iou` (crowd ground truths divide by the detection's area); ground truths
//! outside the area range or crowd are ignored and sorted last; each detection, in score order,
//! takes the best still-free ground truth with IoU ≥ t (crowds may be reused; a match to a
//! non-ignored ground truth is never replaced by an ignored one); unmatched detections outside the
//! area range are ignored. Accumulation concatenates the images, sorts by score (stable), builds
//! the precision/recall curve, takes the right-to-left maximum of precision and reads it at the
//! 101 recall thresholds (`searchsorted` left). Categories without a non-ignored ground truth stay
//! -1 and are left out of the means; a mean over nothing is -1.
//!
//! Quirks kept for parity: ground-truth annotation id 0 counts as "unmatched" (pycocotools stores
//! matches as ids and tests them for non-zero), `stats[0]` uses `maxDets = 100` whatever the list
//! (so it is -1 when 100 is not in the list), and thresholds are `np.linspace` values.

use std::collections::HashMap;

use cellseg_rle::coco::{bbox_iou_matrix, iou_matrix};
use serde::Serialize;

use crate::coco_dataset::{CocoAnnotation, CocoDataset, ImageId};
use crate::{Error, Result};

/// What to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IouType {
    /// Boxes.
    Bbox,
    /// Masks.
    Segm,
}

impl std::str::FromStr for IouType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bbox" => Ok(Self::Bbox),
            "segm" => Ok(Self::Segm),
            _ => Err(Error::Params {
                message: format!("iou type {s:?} is neither \"bbox\" nor \"segm\""),
            }),
        }
    }
}

/// `np.linspace(start, stop, num)` with numpy's arithmetic (`i * step + start`, last = `stop`).
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// The parameters of `COCOeval.Params` (detection).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CocoEvalParams {
    /// bbox or segm.
    pub iou_type: IouType,
    /// IoU thresholds, default `linspace(0.5, 0.95, 10)`.
    pub iou_thrs: Vec<f64>,
    /// Recall thresholds, default `linspace(0, 1, 101)`.
    pub rec_thrs: Vec<f64>,
    /// Detections per image, default `[1, 10, 100]`; sorted before use; at least 3 values.
    pub max_dets: Vec<usize>,
    /// Named area ranges `[lo, hi]`, default all / small / medium / large (32², 96²).
    pub area_rngs: Vec<(String, [f64; 2])>,
    /// Evaluate per category (default) or pool categories.
    pub use_cats: bool,
    /// Read `stats[0]` (AP) at `maxDets[2]`, like every other AP stat, instead of pycocotools'
    /// fixed `maxDets = 100` (`summarize` hard-codes it, so with `[100, 500, 2000]` pycocotools'
    /// AP is the AP at 100 detections, and -1 when 100 is not in the list). Default `false`: the
    /// pycocotools number.
    pub ap_at_max_dets: bool,
}

impl CocoEvalParams {
    /// pycocotools' defaults for `iou_type`.
    pub fn new(iou_type: IouType) -> Self {
        Self {
            iou_type,
            iou_thrs: linspace(0.5, 0.95, 10),
            rec_thrs: linspace(0.0, 1.0, 101),
            max_dets: vec![1, 10, 100],
            area_rngs: vec![
                ("all".into(), [0.0, 1e10]),
                ("small".into(), [0.0, 1024.0]),
                ("medium".into(), [1024.0, 9216.0]),
                ("large".into(), [9216.0, 1e10]),
            ],
            use_cats: true,
            ap_at_max_dets: false,
        }
    }

    /// The LIVECell setting: `maxDets = [100, 500, 2000]`.
    pub fn livecell(iou_type: IouType) -> Self {
        Self { max_dets: vec![100, 500, 2000], ..Self::new(iou_type) }
    }
}

/// Per-image, per-category result of `evaluateImg` for one area range.
#[derive(Debug, Clone)]
struct EvalImg {
    /// Scores of the (sorted, cut) detections.
    dt_scores: Vec<f64>,
    /// `[T][D]` matched ground-truth id, 0 = unmatched.
    dt_matches: Vec<Vec<i64>>,
    /// `[T][D]` ignore flags.
    dt_ignore: Vec<Vec<bool>>,
    /// `[G]` ignore flags.
    gt_ignore: Vec<bool>,
}

/// Everything `COCOeval` produces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CocoEvalResult {
    /// The parameters used (max_dets sorted).
    pub params: CocoEvalParams,
    /// Sorted unique category ids (`[-1]` without `use_cats`).
    pub cat_ids: Vec<i64>,
    /// `precision[t][r][k][a][m]`, flattened row-major (-1 where undefined).
    pub precision: Vec<f64>,
    /// `recall[t][k][a][m]`, flattened row-major (-1 where undefined).
    pub recall: Vec<f64>,
    /// The 12 numbers of `summarize()`.
    pub stats: [f64; 12],
}

impl CocoEvalResult {
    /// Names of the 12 stats: `AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`, `AR@<maxDets[0..3]>`,
    /// `ARs`, `ARm`, `ARl`.
    pub fn stat_names(&self) -> [String; 12] {
        let m = &self.params.max_dets;
        [
            "AP".into(),
            "AP50".into(),
            "AP75".into(),
            "APs".into(),
            "APm".into(),
            "APl".into(),
            format!("AR@{}", m[0]),
            format!("AR@{}", m[1]),
            format!("AR@{}", m[2]),
            "ARs".into(),
            "ARm".into(),
            "ARl".into(),
        ]
    }

    /// `(name, value)` pairs of the 12 stats.
    pub fn named_stats(&self) -> Vec<(String, f64)> {
        self.stat_names().into_iter().zip(self.stats).collect()
    }

    /// The table `COCOeval.summarize()` prints.
    pub fn summary_table(&self) -> String {
        let p = &self.params;
        let m = &p.max_dets;
        let lines: [(bool, Option<f64>, &str, usize); 12] = [
            (true, None, "all", if p.ap_at_max_dets { m[2] } else { 100 }),
            (true, Some(0.5), "all", m[2]),
            (true, Some(0.75), "all", m[2]),
            (true, None, "small", m[2]),
            (true, None, "medium", m[2]),
            (true, None, "large", m[2]),
            (false, None, "all", m[0]),
            (false, None, "all", m[1]),
            (false, None, "all", m[2]),
            (false, None, "small", m[2]),
            (false, None, "medium", m[2]),
            (false, None, "large", m[2]),
        ];
        let mut s = String::new();
        for ((ap, thr, area, md), v) in lines.iter().zip(self.stats) {
            let (title, ty) =
                if *ap { ("Average Precision", "(AP)") } else { ("Average Recall", "(AR)") };
            let iou = match thr {
                Some(t) => format!("{t:0.2}"),
                None => format!("{:0.2}:{:0.2}", p.iou_thrs[0], p.iou_thrs[p.iou_thrs.len() - 1]),
            };
            s.push_str(&format!(
                " {title:<18} {ty} @[ IoU={iou:<9} | area={area:>6} | maxDets={md:>3} ] = {v:0.3}\n"
            ));
        }
        s
    }
}

fn stable_desc_by_score(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    // argsort(-score, kind='mergesort'): stable, ties keep input order.
    idx.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal));
    idx
}

/// Runs `evaluate()`, `accumulate()` and `summarize()` on ground truth `gt` and detections `dt`
/// (as returned by [`CocoDataset::load_results`]).
///
/// # Errors
/// [`Error::Params`] for fewer than 3 `max_dets` or empty thresholds; [`Error::CocoField`] when a
/// mask is missing for segm evaluation; [`Error::Rle`] for masks of different sizes.
pub fn evaluate(
    gt: &CocoDataset,
    dt: &[CocoAnnotation],
    params: &CocoEvalParams,
) -> Result<CocoEvalResult> {
    let mut p = params.clone();
    p.max_dets.sort_unstable();
    if p.max_dets.len() < 3 {
        return Err(Error::Params {
            message: format!("maxDets needs at least 3 values, got {:?}", p.max_dets),
        });
    }
    if p.iou_thrs.is_empty() || p.rec_thrs.is_empty() || p.area_rngs.is_empty() {
        return Err(Error::Params { message: "empty iou_thrs, rec_thrs or area_rngs".into() });
    }
    let mut img_ids: Vec<ImageId> = gt.images.iter().map(|i| i.id.clone()).collect();
    img_ids.sort();
    img_ids.dedup();
    let cat_ids: Vec<i64> = if p.use_cats {
        let mut c = gt.categories.clone();
        c.sort_unstable();
        c.dedup();
        c
    } else {
        vec![-1]
    };
    let img_index: HashMap<&ImageId, usize> =
        img_ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let cat_index: HashMap<i64, usize> = cat_ids.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let key = |a: &CocoAnnotation| -> Option<(usize, usize)> {
        let i = *img_index.get(&a.image_id)?;
        let k = if p.use_cats { *cat_index.get(&a.category_id)? } else { 0 };
        Some((i, k))
    };
    // _prepare: group by (image, category) keeping file order within the group.
    let mut gts: HashMap<(usize, usize), Vec<&CocoAnnotation>> = HashMap::new();
    let mut dts: HashMap<(usize, usize), Vec<&CocoAnnotation>> = HashMap::new();
    for a in &gt.annotations {
        if let Some(k) = key(a) {
            gts.entry(k).or_default().push(a);
        }
    }
    for a in dt {
        if let Some(k) = key(a) {
            dts.entry(k).or_default().push(a);
        }
    }
    let (n_t, n_r, n_k, n_a, n_m, n_i) = (
        p.iou_thrs.len(),
        p.rec_thrs.len(),
        cat_ids.len(),
        p.area_rngs.len(),
        p.max_dets.len(),
        img_ids.len(),
    );
    let max_det = p.max_dets[n_m - 1];
    // evalImgs[k][a][i]
    let mut eval_imgs: Vec<Option<EvalImg>> = vec![None; n_k * n_a * n_i];
    let empty: Vec<&CocoAnnotation> = Vec::new();
    for k in 0..n_k {
        for i in 0..n_i {
            let g = gts.get(&(i, k)).unwrap_or(&empty);
            let d = dts.get(&(i, k)).unwrap_or(&empty);
            if g.is_empty() && d.is_empty() {
                continue;
            }
            // computeIoU: detections sorted by score and cut to the largest maxDets.
            let order = stable_desc_by_score(&d.iter().map(|a| a.score).collect::<Vec<_>>());
            let d: Vec<&CocoAnnotation> = order.iter().take(max_det).map(|&j| d[j]).collect();
            let crowd: Vec<bool> = g.iter().map(|a| a.iscrowd).collect();
            let ious: Vec<f64> = if g.is_empty() || d.is_empty() {
                Vec::new()
            } else {
                match p.iou_type {
                    IouType::Bbox => {
                        let db: Vec<[f64; 4]> = d.iter().map(|a| a.bbox).collect();
                        let gb: Vec<[f64; 4]> = g.iter().map(|a| a.bbox).collect();
                        bbox_iou_matrix(&db, &gb, &crowd)?
                    }
                    IouType::Segm => {
                        let mask = |a: &&CocoAnnotation| {
                            a.segmentation.clone().ok_or_else(|| Error::CocoField {
                                path: gt.path.clone(),
                                key: format!("annotation {} of image {}", a.id, a.image_id),
                                message: "no mask loaded for segm evaluation".into(),
                            })
                        };
                        let dm = d.iter().map(mask).collect::<Result<Vec<_>>>()?;
                        let gm = g.iter().map(mask).collect::<Result<Vec<_>>>()?;
                        iou_matrix(&dm, &gm, &crowd)?
                    }
                }
            };
            for (ai, (_, rng)) in p.area_rngs.iter().enumerate() {
                eval_imgs[(k * n_a + ai) * n_i + i] =
                    Some(evaluate_img(g, &d, &ious, *rng, &p.iou_thrs));
            }
        }
    }
    // accumulate
    let mut precision = vec![-1.0; n_t * n_r * n_k * n_a * n_m];
    let mut recall = vec![-1.0; n_t * n_k * n_a * n_m];
    let pidx = |t: usize, r: usize, k: usize, a: usize, m: usize| {
        (((t * n_r + r) * n_k + k) * n_a + a) * n_m + m
    };
    let ridx = |t: usize, k: usize, a: usize, m: usize| ((t * n_k + k) * n_a + a) * n_m + m;
    for k in 0..n_k {
        for a in 0..n_a {
            let es: Vec<&EvalImg> =
                (0..n_i).filter_map(|i| eval_imgs[(k * n_a + a) * n_i + i].as_ref()).collect();
            if es.is_empty() {
                continue;
            }
            let npig = es.iter().flat_map(|e| &e.gt_ignore).filter(|&&x| !x).count();
            if npig == 0 {
                continue;
            }
            for (m, &md) in p.max_dets.iter().enumerate() {
                let mut scores = Vec::new();
                let mut origin = Vec::new(); // (eval image, detection index)
                for (ei, e) in es.iter().enumerate() {
                    for (j, &s) in e.dt_scores.iter().take(md).enumerate() {
                        scores.push(s);
                        origin.push((ei, j));
                    }
                }
                let inds = stable_desc_by_score(&scores);
                let nd = inds.len();
                let mut pr = vec![0.0; nd];
                let mut rc = vec![0.0; nd];
                for t in 0..n_t {
                    let (mut tp, mut fp) = (0u64, 0u64);
                    for (n, &j) in inds.iter().enumerate() {
                        let (ei, dj) = origin[j];
                        let e = es[ei];
                        if !e.dt_ignore[t][dj] {
                            if e.dt_matches[t][dj] != 0 {
                                tp += 1;
                            } else {
                                fp += 1;
                            }
                        }
                        let (tpf, fpf) = (tp as f64, fp as f64);
                        rc[n] = tpf / npig as f64;
                        pr[n] = tpf / (fpf + tpf + f64::EPSILON);
                    }
                    recall[ridx(t, k, a, m)] = if nd > 0 { rc[nd - 1] } else { 0.0 };
                    for n in (1..nd).rev() {
                        if pr[n] > pr[n - 1] {
                            pr[n - 1] = pr[n];
                        }
                    }
                    let mut pi = 0usize;
                    for (r, &thr) in p.rec_thrs.iter().enumerate() {
                        while pi < nd && rc[pi] < thr {
                            pi += 1;
                        }
                        precision[pidx(t, r, k, a, m)] = if pi < nd { pr[pi] } else { 0.0 };
                    }
                }
            }
        }
    }
    let stats = summarize(&p, &precision, &recall, n_k);
    tracing::debug!(images = n_i, categories = n_k, ap = stats[0], "COCO evaluation done");
    Ok(CocoEvalResult { params: p, cat_ids, precision, recall, stats })
}

/// `evaluateImg` for one image, category and area range. `d` is sorted and cut; `ious` is
/// `[d][g]` with `g` in file order.
fn evaluate_img(
    g: &[&CocoAnnotation],
    d: &[&CocoAnnotation],
    ious: &[f64],
    rng: [f64; 2],
    thrs: &[f64],
) -> EvalImg {
    let ng = g.len();
    let ignore: Vec<bool> =
        g.iter().map(|a| a.iscrowd || a.area < rng[0] || a.area > rng[1]).collect();
    // Stable sort of ground truths: not ignored first.
    let gtind: Vec<usize> =
        (0..ng).filter(|&j| !ignore[j]).chain((0..ng).filter(|&j| ignore[j])).collect();
    let gt_ignore: Vec<bool> = gtind.iter().map(|&j| ignore[j]).collect();
    let crowd: Vec<bool> = gtind.iter().map(|&j| g[j].iscrowd).collect();
    let nd = d.len();
    let mut dt_matches = vec![vec![0i64; nd]; thrs.len()];
    let mut dt_ignore = vec![vec![false; nd]; thrs.len()];
    if !ious.is_empty() {
        for (t, &thr) in thrs.iter().enumerate() {
            let mut gtm = vec![0i64; ng];
            for (di, det) in d.iter().enumerate() {
                let mut iou = thr.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for gi in 0..ng {
                    if gtm[gi] > 0 && !crowd[gi] {
                        continue;
                    }
                    if let Some(mm) = m
                        && !gt_ignore[mm]
                        && gt_ignore[gi]
                    {
                        break;
                    }
                    let v = ious[di * ng + gtind[gi]];
                    if v < iou {
                        continue;
                    }
                    iou = v;
                    m = Some(gi);
                }
                if let Some(mm) = m {
                    dt_ignore[t][di] = gt_ignore[mm];
                    dt_matches[t][di] = g[gtind[mm]].id;
                    gtm[mm] = det.id;
                }
            }
        }
    }
    for (di, det) in d.iter().enumerate() {
        let out = det.area < rng[0] || det.area > rng[1];
        for t in 0..thrs.len() {
            if dt_matches[t][di] == 0 && out {
                dt_ignore[t][di] = true;
            }
        }
    }
    EvalImg { dt_scores: d.iter().map(|a| a.score).collect(), dt_matches, dt_ignore, gt_ignore }
}

fn summarize(p: &CocoEvalParams, precision: &[f64], recall: &[f64], n_k: usize) -> [f64; 12] {
    let (n_t, n_r, n_a, n_m) =
        (p.iou_thrs.len(), p.rec_thrs.len(), p.area_rngs.len(), p.max_dets.len());
    let one = |ap: bool, iou_thr: Option<f64>, area: &str, max_dets: usize| -> f64 {
        let ts: Vec<usize> = match iou_thr {
            Some(x) => (0..n_t).filter(|&t| p.iou_thrs[t] == x).collect(),
            None => (0..n_t).collect(),
        };
        let aind: Vec<usize> = (0..n_a).filter(|&a| p.area_rngs[a].0 == area).collect();
        let mind: Vec<usize> = (0..n_m).filter(|&m| p.max_dets[m] == max_dets).collect();
        let (mut sum, mut n) = (0.0, 0usize);
        for &t in &ts {
            for k in 0..n_k {
                for &a in &aind {
                    for &m in &mind {
                        if ap {
                            for r in 0..n_r {
                                let v = precision[(((t * n_r + r) * n_k + k) * n_a + a) * n_m + m];
                                if v > -1.0 {
                                    sum += v;
                                    n += 1;
                                }
                            }
                        } else {
                            let v = recall[((t * n_k + k) * n_a + a) * n_m + m];
                            if v > -1.0 {
                                sum += v;
                                n += 1;
                            }
                        }
                    }
                }
            }
        }
        if n == 0 { -1.0 } else { sum / n as f64 }
    };
    let m = &p.max_dets;
    [
        one(true, None, "all", if p.ap_at_max_dets { m[2] } else { 100 }),
        one(true, Some(0.5), "all", m[2]),
        one(true, Some(0.75), "all", m[2]),
        one(true, None, "small", m[2]),
        one(true, None, "medium", m[2]),
        one(true, None, "large", m[2]),
        one(false, None, "all", m[0]),
        one(false, None, "all", m[1]),
        one(false, None, "all", m[2]),
        one(false, None, "small", m[2]),
        one(false, None, "medium", m[2]),
        one(false, None, "large", m[2]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy_values() {
        let t = linspace(0.5, 0.95, 10);
        assert_eq!(t[0], 0.5);
        assert_eq!(t[9], 0.95);
        assert_eq!(t[5], 0.75);
        let r = linspace(0.0, 1.0, 101);
        assert_eq!(r[100], 1.0);
        assert_eq!(r[1], 0.01);
    }
}

#[cfg(test)]
mod eval_tests {
    use super::*;
    use std::path::Path;

    fn gt() -> CocoDataset {
        let v = serde_json::json!({
            "images": [{"id": 1, "height": 10, "width": 10}, {"id": 2, "height": 10, "width": 10}],
            "categories": [{"id": 1}, {"id": 2}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0,
                 "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
                {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 3, 3], "area": 9, "iscrowd": 0,
                 "segmentation": [[5, 5, 8, 5, 8, 8, 5, 8]]}
            ]
        });
        CocoDataset::from_value(Path::new("gt.json"), &v, true).unwrap()
    }

    #[test]
    fn perfect_detections_give_ap_one_and_empty_category_stays_minus_one() {
        let gt = gt();
        let res = serde_json::json!([
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9},
            {"image_id": 2, "category_id": 1, "bbox": [5, 5, 3, 3], "score": 0.8}
        ]);
        let dt = gt.results_from_value(Path::new("res.json"), &res, false).unwrap();
        let r = evaluate(&gt, &dt, &CocoEvalParams::new(IouType::Bbox)).unwrap();
        assert_eq!(r.stats[0], 1.0);
        assert_eq!(r.stats[5], -1.0, "no large objects");
        // Category 2 has no ground truth: its precision entries stay -1.
        assert!(r.precision.iter().any(|&v| v == -1.0));
        assert!(r.summary_table().contains("maxDets=100"));
    }

    #[test]
    fn ap_reads_max_dets_100_unless_asked_otherwise() {
        let p = CocoEvalParams { max_dets: vec![1, 10, 50], ..CocoEvalParams::new(IouType::Segm) };
        // No 100 in the list: pycocotools' AP is -1; the other reading takes maxDets[2] = 50.
        let (precision, recall) = (vec![0.5; 10 * 101 * 4 * 3], vec![0.5; 10 * 4 * 3]);
        assert_eq!(summarize(&p, &precision, &recall, 1)[0], -1.0);
        let q = CocoEvalParams { ap_at_max_dets: true, ..p };
        assert_eq!(summarize(&q, &precision, &recall, 1)[0], 0.5);
    }

    #[test]
    fn too_few_max_dets_is_an_error() {
        let gt = gt();
        let p = CocoEvalParams { max_dets: vec![10, 100], ..CocoEvalParams::new(IouType::Segm) };
        assert!(matches!(evaluate(&gt, &[], &p), Err(Error::Params { .. })));
    }

    #[test]
    fn results_for_unknown_images_are_errors() {
        let gt = gt();
        let res = serde_json::json!([{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]);
        let e = gt.results_from_value(Path::new("res.json"), &res, false).unwrap_err();
        assert!(e.to_string().contains("[0].image_id"), "{e}");
    }
}
