//! Threshold tweaking on out-of-fold predictions: the seed's `tweak_thresholds` (SEED.md §4.7).
//!
//! For every image the competition metric is computed at every point of a [`TweakGrid`] (mask
//! threshold × mask-NMS threshold × minimum size × confidence threshold); the scores are averaged
//! over the images of each **predicted** cell type (the majority box label, as the seed does), the
//! best point of each type is kept, and the CV is the average of the three best scores weighted
//! by the number of images of each predicted type.
//!
//! [`TweakOrder::Incremental`] (default) follows the seed's tuner and shares all the work it can:
//! per image and mask threshold, the masks are binarised and sorted once, the pairwise mask IoUs
//! computed once, mask NMS run for every threshold in one pass over them, and for each (NMS, size)
//! pick the astro corruption (cached per mask), the overlap removal and the truth IoUs (cached
//! for masks that overlap removal leaves unchanged) are done once; the metric at all confidence
//! cuts then comes from the one score-sorted list ([`cellseg_metrics::competition::prefix_scores`]).
//! The confidence cut after NMS and overlap removal gives the same masks as a cut before them,
//! because greedy NMS and ordered overlap removal only look at more confident masks.
//!
//! The seed tuner's semantics are kept by default (`overlap_ious = "before_corruption"`,
//! `keep_first_when_all_small = true`): overlap removal only processes masks that overlapped
//! before the corruption, and an image whose masks are all `≤ min_size` keeps its most confident
//! one. [`TweakOrder::ProcessResults`] runs the whole [`Pipeline`] at every grid point instead
//! (`process_results`' order); with `overlap_ious = "after_corruption"` and
//! `keep_first_when_all_small = false` the incremental order gives the same scores.
//!
//! ```
//! use cellseg_core::{BitMask, BoxXyxy, CellType, ImageSize};
//! use cellseg_postproc::tweak::{TweakGrid, TweakImage, tweak};
//! use cellseg_postproc::{SoftDetections, SoftMask};
//!
//! let size = ImageSize::new(32, 32);
//! let square = |r: usize, c: usize| {
//!     let mut m = BitMask::zeros(size);
//!     (r..r + 8).for_each(|y| (c..c + 8).for_each(|x| m.set(y, x, true)));
//!     m.to_cropped()
//! };
//! // Two cells, predicted well with high scores, plus a false positive at 0.5.
//! let soft = |r, c| SoftMask::new(size, r, c, 8, 8, vec![250; 64]).unwrap();
//! let image = TweakImage {
//!     id: "img0".into(),
//!     detections: SoftDetections {
//!         image_size: size,
//!         boxes: vec![BoxXyxy::default(); 3],
//!         scores: vec![0.9, 0.8, 0.5],
//!         labels: vec![2, 2, 2],
//!         masks: vec![soft(0, 0), soft(16, 16), soft(0, 20)],
//!     },
//!     truth: vec![square(0, 0), square(16, 16)],
//!     truth_type: Some(CellType::Cort),
//! };
//! let result = tweak(&[image], &TweakGrid::default(), &|| {})?;
//! let best = &result.per_type[0];
//! assert_eq!((best.cell_type, best.score), (CellType::Cort, 1.0));
//! assert!(best.confidence_threshold > 0.5); // the false positive is cut
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod grid;
mod truth;

use cellseg_core::{CellType, CroppedMask, ImageSize};
use cellseg_metrics::competition::{self, IouMatrix};
use cellseg_rle::overlap::{Bounds, candidate_pairs};
use serde::Serialize;

pub use grid::{OverlapIous, TweakGrid, TweakOrder};
pub use truth::{OofWithTruth, images_with_truth};

use crate::config::PostprocConfig;
use crate::{Error, Pipeline, Result, SmallMaskRule, SoftDetections, corrupt, nms, overlap, vote};

/// One image to tweak on: its raw detections, its truth masks and its truth cell type.
#[derive(Debug, Clone, PartialEq)]
pub struct TweakImage {
    /// Image id.
    pub id: String,
    /// Detections before post-processing.
    pub detections: SoftDetections,
    /// Ground-truth masks of the image.
    pub truth: Vec<CroppedMask>,
    /// The truth's cell type: used only for an image without detections (no vote possible).
    pub truth_type: Option<CellType>,
}

/// The scores of one image at every grid point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageGrid {
    /// Image id.
    pub id: String,
    /// The predicted cell type (majority box label; the truth's type without detections).
    pub cell_type: CellType,
    /// Competition score at every grid point, flattened `[mask][nms][size][confidence]`.
    pub scores: Vec<f64>,
}

/// The best grid point of one predicted cell type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeBest {
    /// The predicted cell type.
    pub cell_type: CellType,
    /// Number of images predicted as this type.
    pub images: usize,
    /// Mean image score at the best point.
    pub score: f64,
    /// Best mask threshold.
    pub mask_threshold: f64,
    /// Best mask-NMS threshold.
    pub nms_threshold: f64,
    /// Best minimum size (areas `≤` it removed).
    pub min_size: usize,
    /// Best confidence threshold.
    pub confidence_threshold: f64,
    /// Index of the best point in the flattened grid.
    pub index: usize,
}

/// The result of [`tweak`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TweakResult {
    /// The grid.
    pub grid: TweakGrid,
    /// Every image, in input order.
    pub images: Vec<ImageGrid>,
    /// The best point of every predicted type that has images, in label order.
    pub per_type: Vec<TypeBest>,
    /// The best scores weighted by image counts (the seed's CV).
    pub cv: f64,
}

impl TweakResult {
    /// Mean score over the images predicted as `cell_type` at every grid point (`None` without
    /// such images). Images are summed in input order, then divided.
    pub fn mean_scores(&self, cell_type: CellType) -> Option<Vec<f64>> {
        mean_scores(&self.images, self.grid.len(), cell_type)
    }

    /// The grid values of flattened point `index`: `(mask, nms, min_size, confidence)`.
    pub fn point(&self, index: usize) -> (f64, f64, usize, f64) {
        point(&self.grid, index)
    }

    /// A text table: one line per predicted type with its best settings, then the CV.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<8} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8}\n",
            "type", "images", "mask", "nms", "conf", "min_size", "score"
        );
        for b in &self.per_type {
            s.push_str(&format!(
                "{:<8} {:>6} {:>6.2} {:>6.2} {:>6.2} {:>8} {:>8.5}\n",
                b.cell_type.name(),
                b.images,
                b.mask_threshold,
                b.nms_threshold,
                b.confidence_threshold,
                b.min_size,
                b.score
            ));
        }
        let n: usize = self.per_type.iter().map(|b| b.images).sum();
        s.push_str(&format!("{:<8} {:>6} {:>38.5}\n", "CV", n, self.cv));
        s
    }

    /// `base` with the best settings of each predicted type. The tuned rule removes every mask of
    /// area `≤ min_size`, which is [`SmallMaskRule::MinArea`] at `min_size + 1`; the corruption
    /// and overlap switches are the grid's. Types without images keep `base`'s values.
    pub fn postproc_config(&self, base: &PostprocConfig) -> PostprocConfig {
        let mut cfg = base.clone();
        cfg.small_masks = SmallMaskRule::MinArea;
        cfg.corrupt_astro = self.grid.corrupt_astro;
        cfg.remove_overlap = self.grid.remove_overlap;
        for b in &self.per_type {
            let i = b.cell_type.label();
            cfg.mask_threshold[i] = b.mask_threshold;
            cfg.mask_nms_threshold[i] = b.nms_threshold;
            cfg.confidence_threshold[i] = b.confidence_threshold;
            cfg.min_size[i] = b.min_size + 1;
        }
        // Without images a type keeps base's min size, read under the min-area rule.
        cfg
    }
}

fn point(grid: &TweakGrid, index: usize) -> (f64, f64, usize, f64) {
    let (nn, ns, nc) =
        (grid.nms_thresholds.len(), grid.min_sizes.len(), grid.confidence_thresholds.len());
    let c = index % nc;
    let s = (index / nc) % ns;
    let t = (index / (nc * ns)) % nn;
    let m = index / (nc * ns * nn);
    (
        grid.mask_thresholds[m],
        grid.nms_thresholds[t],
        grid.min_sizes[s],
        grid.confidence_thresholds[c],
    )
}

fn mean_scores(images: &[ImageGrid], len: usize, cell_type: CellType) -> Option<Vec<f64>> {
    let mut sum = vec![0.0; len];
    let mut n = 0usize;
    for im in images.iter().filter(|im| im.cell_type == cell_type) {
        for (s, v) in sum.iter_mut().zip(&im.scores) {
            *s += v;
        }
        n += 1;
    }
    (n > 0).then(|| sum.into_iter().map(|s| s / n as f64).collect())
}

/// The competition metric of `images` post-processed by the whole [`Pipeline`] with `config`: the
/// mean image score, summed in input order. This is what `cross_validate --postproc` and
/// `evaluate` report for the same OOF, so `tweak_thresholds` prints it before and after tuning;
/// [`TweakResult::cv`] is the tuner's own estimate, with the seed tuner's semantics.
///
/// # Errors
/// An invalid `config`; per image (the first in input order), the pipeline's errors and truth
/// masks of another size.
pub fn pipeline_score(images: &[TweakImage], config: &PostprocConfig) -> Result<f64> {
    let pipeline = Pipeline::new(config.clone())?;
    let one = |im: &TweakImage| -> Result<competition::ImageScore> {
        let processed = pipeline.run(&im.id, &im.detections)?;
        crate::mask_nms::check_sizes("tweak truth", im.detections.image_size, &im.truth)?;
        let ious = IouMatrix::from_cropped(&im.truth, &processed.detections.masks)?;
        Ok(competition::image_score(&ious))
    };
    #[cfg(feature = "rayon")]
    let scores: Vec<Result<competition::ImageScore>> = {
        use rayon::prelude::*;
        images.par_iter().map(one).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let scores: Vec<Result<competition::ImageScore>> = images.iter().map(one).collect();
    let scores = scores.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(competition::mean_score(&scores).unwrap_or(0.0))
}

/// Scores every image at every grid point (images on rayon's threads with the `rayon` feature)
/// and picks the best point per predicted type. `on_image` is called once per finished image (a
/// progress bar).
///
/// # Errors
/// [`Error::Grid`] for an invalid grid; per image (the first in input order): the errors of
/// [`image_grid`].
pub fn tweak(
    images: &[TweakImage],
    grid: &TweakGrid,
    on_image: &(dyn Fn() + Sync),
) -> Result<TweakResult> {
    grid.validate(std::path::Path::new("<grid>"))?;
    let one = |im: &TweakImage| {
        let r = image_grid(im, grid);
        on_image();
        r
    };
    #[cfg(feature = "rayon")]
    let scored: Vec<Result<ImageGrid>> = {
        use rayon::prelude::*;
        images.par_iter().map(one).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let scored: Vec<Result<ImageGrid>> = images.iter().map(one).collect();
    let images = scored.into_iter().collect::<Result<Vec<_>>>()?;
    let mut per_type = Vec::new();
    for t in CellType::ALL {
        let Some(means) = mean_scores(&images, grid.len(), t) else { continue };
        // The first maximum in [mask][nms][size][conf] order, as np.argmax.
        let mut index = 0;
        for (k, &v) in means.iter().enumerate() {
            if v > means[index] {
                index = k;
            }
        }
        let (mask_threshold, nms_threshold, min_size, confidence_threshold) = point(grid, index);
        per_type.push(TypeBest {
            cell_type: t,
            images: images.iter().filter(|im| im.cell_type == t).count(),
            score: means[index],
            mask_threshold,
            nms_threshold,
            min_size,
            confidence_threshold,
            index,
        });
    }
    let n: usize = per_type.iter().map(|b| b.images).sum();
    let cv = if n == 0 {
        0.0
    } else {
        per_type.iter().map(|b| b.score * b.images as f64).sum::<f64>() / n as f64
    };
    tracing::info!(images = images.len(), points = grid.len(), cv, "tweaked");
    Ok(TweakResult { grid: grid.clone(), images, per_type, cv })
}

/// The scores of one image at every grid point, in the grid's order.
///
/// # Errors
/// [`Error::LengthMismatch`] / [`Error::MaskSize`] for inconsistent detections or truth masks of
/// another size, [`Error::NanScore`], [`Error::UnknownCellLabel`] when the winning label is not a
/// cell type, [`Error::Grid`] when the image has neither detections nor a truth cell type.
pub fn image_grid(image: &TweakImage, grid: &TweakGrid) -> Result<ImageGrid> {
    let d = &image.detections;
    d.validate()?;
    crate::mask_nms::check_sizes("tweak truth", d.image_size, &image.truth)?;
    let cell_type = match vote::cell_type_vote(&d.labels) {
        Some(Ok(t)) => t,
        Some(Err(label)) => {
            return Err(Error::UnknownCellLabel { image: image.id.clone(), label });
        }
        None => image.truth_type.ok_or_else(|| Error::Grid {
            path: "<input>".into(),
            key: format!("image {}", image.id),
            value: "no detections".into(),
            reason: "no box label to vote a cell type and no truth cell type".into(),
        })?,
    };
    let mut scores = vec![0.0; grid.len()];
    let per_mask = grid.len() / grid.mask_thresholds.len();
    for (mi, &m) in grid.mask_thresholds.iter().enumerate() {
        let out = &mut scores[mi * per_mask..(mi + 1) * per_mask];
        match grid.order {
            TweakOrder::Incremental => incremental(image, grid, cell_type, m, out)?,
            TweakOrder::ProcessResults => by_pipeline(image, grid, m, out)?,
        }
    }
    tracing::debug!(image = %image.id, cell_type = %cell_type, "image tweaked");
    Ok(ImageGrid { id: image.id.clone(), cell_type, scores })
}

fn rect_bounds(m: &CroppedMask) -> Bounds {
    let (top, left, h, w) = m.rect();
    (h > 0 && w > 0).then(|| (top, left, top + h - 1, left + w - 1))
}

/// The grid of one mask threshold, computed incrementally; `out` is `[nms][size][conf]`.
fn incremental(
    image: &TweakImage,
    grid: &TweakGrid,
    cell_type: CellType,
    mask_threshold: f64,
    out: &mut [f64],
) -> Result<()> {
    let d = &image.detections;
    let size = d.image_size;
    // 1. Binarise, sort by decreasing score (stable).
    let order = nms::order_by_score(&d.scores)?;
    let masks =
        order.iter().map(|&i| d.masks[i].binarize(mask_threshold)).collect::<Result<Vec<_>>>()?;
    let scores: Vec<f64> = order.iter().map(|&i| f64::from(d.scores[i])).collect();
    let n = masks.len();
    let areas: Vec<usize> = masks.iter().map(CroppedMask::area).collect();
    // 2. Pairwise IoUs (non-zero only), once.
    let bounds: Vec<Bounds> = masks.iter().map(rect_bounds).collect();
    let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for (i, j) in candidate_pairs(&bounds, &bounds) {
        if i < j {
            let inter = masks[i].intersection(&masks[j]);
            if inter > 0 {
                let iou = crate::mask_nms::iou_from(inter, areas[i], areas[j]);
                adj[i].push((j, iou));
                adj[j].push((i, iou));
            }
        }
    }
    // 3. Greedy mask NMS at every threshold in one pass (empty masks dropped, IoU > t removes).
    let nn = grid.nms_thresholds.len();
    let mut removed = vec![false; nn * n];
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); nn];
    for i in 0..n {
        if areas[i] == 0 {
            continue;
        }
        for (ti, &t) in grid.nms_thresholds.iter().enumerate() {
            if removed[ti * n + i] {
                continue;
            }
            kept[ti].push(i);
            for &(j, iou) in &adj[i] {
                if j > i && iou > t {
                    removed[ti * n + j] = true;
                }
            }
        }
    }
    // 4. The masks every pick may use, corrupted once (astro), and their truth intersections.
    let mut used = vec![false; n];
    kept.iter().flatten().for_each(|&i| used[i] = true);
    let corrupting = grid.corrupt_astro && cell_type == CellType::Astro;
    let base: Vec<Option<CroppedMask>> =
        (0..n).map(|i| (used[i] && corrupting).then(|| corrupt::corrupt(&masks[i]))).collect();
    let base_mask = |i: usize| base[i].as_ref().unwrap_or(&masks[i]);
    let base_area: Vec<usize> = (0..n)
        .map(|i| if corrupting && used[i] { base_mask(i).area() } else { areas[i] })
        .collect();
    let truth = &image.truth;
    let truth_area: Vec<usize> = truth.iter().map(CroppedMask::area).collect();
    let truth_bounds: Vec<Bounds> = truth.iter().map(rect_bounds).collect();
    let pred_bounds: Vec<Bounds> =
        (0..n).map(|i| if used[i] { rect_bounds(base_mask(i)) } else { None }).collect();
    let mut rows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    for (t, p) in candidate_pairs(&truth_bounds, &pred_bounds) {
        let inter = truth[t].intersection(base_mask(p));
        if inter > 0 {
            rows[p].push((t, inter));
        }
    }
    // 5. Every (NMS, size) pick: overlap removal, truth IoUs, metric at every confidence cut.
    let ns = grid.min_sizes.len();
    let nc = grid.confidence_thresholds.len();
    let mut in_pick = vec![false; n];
    let mut entries: Vec<(usize, usize, f64)> = Vec::new();
    for (ti, kept_t) in kept.iter().enumerate() {
        for (si, &min_size) in grid.min_sizes.iter().enumerate() {
            let all_small = !areas.iter().any(|&a| a > min_size);
            let picks: Vec<usize> = if all_small && grid.keep_first_when_all_small {
                kept_t.iter().copied().filter(|&i| i == 0).collect()
            } else {
                kept_t.iter().copied().filter(|&i| areas[i] > min_size).collect()
            };
            let finals = resolve_overlaps(size, grid, &picks, &adj, &mut in_pick, &base_mask);
            entries.clear();
            for (pos, &p) in picks.iter().enumerate() {
                match &finals[pos] {
                    None => {
                        for &(t, inter) in &rows[p] {
                            let iou = crate::mask_nms::iou_from(inter, truth_area[t], base_area[p]);
                            entries.push((t, pos, iou));
                        }
                    }
                    Some(f) => {
                        let area = f.area();
                        for &(t, _) in &rows[p] {
                            let inter = truth[t].intersection(f);
                            if inter > 0 {
                                let iou = crate::mask_nms::iou_from(inter, truth_area[t], area);
                                entries.push((t, pos, iou));
                            }
                        }
                    }
                }
            }
            entries.sort_unstable_by_key(|&(t, p, _)| (t, p));
            let ious = IouMatrix::from_nonzero(truth.len(), picks.len(), entries.clone())?;
            let cuts: Vec<usize> = grid
                .confidence_thresholds
                .iter()
                .map(|&c| picks.partition_point(|&p| scores[p] >= c))
                .collect();
            let point = &mut out[(ti * ns + si) * nc..(ti * ns + si + 1) * nc];
            for (o, s) in point.iter_mut().zip(competition::prefix_scores(&ious, &cuts)) {
                *o = s.score;
            }
        }
    }
    Ok(())
}

/// Overlap removal of one pick: `None` for a mask left unchanged, else its new mask.
fn resolve_overlaps<'a>(
    size: ImageSize,
    grid: &TweakGrid,
    picks: &[usize],
    adj: &[Vec<(usize, f64)>],
    in_pick: &mut [bool],
    base_mask: &dyn Fn(usize) -> &'a CroppedMask,
) -> Vec<Option<CroppedMask>> {
    let mut finals: Vec<Option<CroppedMask>> = vec![None; picks.len()];
    if !grid.remove_overlap || picks.len() < 2 {
        return finals;
    }
    let positions: Vec<usize> = match grid.overlap_ious {
        // The seed's `to_process`: masks with a non-zero (pre-corruption) IoU with another pick.
        OverlapIous::BeforeCorruption => {
            picks.iter().for_each(|&p| in_pick[p] = true);
            let pos = (0..picks.len())
                .filter(|&k| adj[picks[k]].iter().any(|&(q, _)| in_pick[q]))
                .collect();
            picks.iter().for_each(|&p| in_pick[p] = false);
            pos
        }
        OverlapIous::AfterCorruption => (0..picks.len()).collect(),
    };
    if positions.len() < 2 {
        return finals;
    }
    let refs: Vec<&CroppedMask> = positions.iter().map(|&k| base_mask(picks[k])).collect();
    let resolved = overlap::resolve_refs(size, &refs);
    for ((&k, r), orig) in positions.iter().zip(resolved).zip(&refs) {
        if r.area() != orig.area() {
            finals[k] = Some(r);
        }
    }
    finals
}

/// The grid of one mask threshold by running the whole pipeline at every point.
fn by_pipeline(
    image: &TweakImage,
    grid: &TweakGrid,
    mask_threshold: f64,
    out: &mut [f64],
) -> Result<()> {
    let (ns, nc) = (grid.min_sizes.len(), grid.confidence_thresholds.len());
    for (ti, &t) in grid.nms_thresholds.iter().enumerate() {
        for (si, &s) in grid.min_sizes.iter().enumerate() {
            for (ci, &c) in grid.confidence_thresholds.iter().enumerate() {
                let cfg = PostprocConfig {
                    mask_threshold: [mask_threshold; 3],
                    confidence_threshold: [c; 3],
                    mask_nms_threshold: [t; 3],
                    box_nms_threshold: [0.0; 3],
                    min_size: [s + 1; 3],
                    small_masks: SmallMaskRule::MinArea,
                    corrupt_astro: grid.corrupt_astro,
                    fill_holes: false,
                    remove_overlap: grid.remove_overlap,
                    keep_empty: true,
                    ..PostprocConfig::default()
                };
                let processed = Pipeline::new(cfg)?.run(&image.id, &image.detections)?;
                let ious = IouMatrix::from_cropped(&image.truth, &processed.detections.masks)?;
                out[(ti * ns + si) * nc + ci] = competition::image_score(&ious).score;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
