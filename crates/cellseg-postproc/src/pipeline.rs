//! The seed's whole per-image post-processing, configured per cell type.
//!
//! Order (SEED.md §9 item 9, `post_process.py::process_results`): cell-type vote over all box labels
//! → sort by decreasing score → keep `score ≥ confidence` → binarise (`byte > thr · 255`) → optional
//! box NMS → mask NMS (empty masks dropped) → small-mask rule → astro re-corruption → optional hole
//! filling → overlap removal (higher confidence wins) → optional removal of emptied masks.
//!
//! Binarising only the confident masks gives the same result as the seed's binarise-then-cut,
//! because binarisation is per mask.

use cellseg_core::{BoxXyxy, CellType, CroppedMask, Detections, ImageSize};

use crate::config::{PostprocConfig, TypeParams};
use crate::{Error, Result, SoftMask, corrupt, filter, mask_nms, nms, overlap, vote};

/// The raw predictions of one image: parallel boxes, scores, labels and soft masks.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftDetections {
    /// The image size every box and mask refers to.
    pub image_size: ImageSize,
    /// One box per detection.
    pub boxes: Vec<BoxXyxy>,
    /// Confidence, normally in `[0, 1]`.
    pub scores: Vec<f32>,
    /// Predicted label (a [`CellType`] label for Sartorius).
    pub labels: Vec<usize>,
    /// Soft mask per detection.
    pub masks: Vec<SoftMask>,
}

impl SoftDetections {
    /// Checks that the arrays are parallel and every mask belongs to `image_size`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] or [`Error::MaskSize`].
    pub fn validate(&self) -> Result<()> {
        let n = self.boxes.len();
        for (name, len) in [
            ("scores", self.scores.len()),
            ("labels", self.labels.len()),
            ("masks", self.masks.len()),
        ] {
            if len != n {
                return Err(Error::LengthMismatch {
                    what: "SoftDetections",
                    left_name: "boxes",
                    left: n,
                    right_name: name,
                    right: len,
                });
            }
        }
        if let Some(index) = self.masks.iter().position(|m| m.image_size() != self.image_size) {
            let got = self.masks[index].image_size();
            return Err(Error::MaskSize {
                what: "SoftDetections",
                index,
                got_h: got.height,
                got_w: got.width,
                want_h: self.image_size.height,
                want_w: self.image_size.width,
            });
        }
        Ok(())
    }

    /// The same detections with every mask binarised at `threshold` (bytes `> threshold · 255`,
    /// [`SoftMask::binarize`]), without any other post-processing step.
    ///
    /// # Errors
    /// As [`Self::validate`], or a threshold outside `[0, 1]`.
    pub fn binarize(&self, threshold: f64) -> Result<Detections> {
        self.validate()?;
        let masks = self.masks.iter().map(|m| m.binarize(threshold)).collect::<Result<Vec<_>>>()?;
        Ok(Detections::new(
            self.image_size,
            self.boxes.clone(),
            self.scores.clone(),
            self.labels.clone(),
            masks,
        )?)
    }
}

/// The post-processed instances of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    /// The image identifier given to [`Pipeline::run`].
    pub image_id: String,
    /// The cell type whose thresholds were applied (`None` when the image had no detection).
    pub cell_type: Option<CellType>,
    /// Kept instances by decreasing score, with binary, non-overlapping masks.
    pub detections: Detections,
    /// For each kept instance, its index in the input.
    pub source_indices: Vec<usize>,
}

impl Processed {
    /// The label image of the kept instances (instance `k` has label `k + 1`).
    pub fn label_image(&self) -> crate::LabelImage {
        crate::LabelImage::from_masks(self.detections.image_size, &self.detections.masks)
            .expect("the pipeline only outputs masks of its image")
    }
}

/// The configured post-processing.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    config: PostprocConfig,
}

impl Pipeline {
    /// A pipeline from a validated config.
    ///
    /// # Errors
    /// [`Error::Config`] when `config` is invalid.
    pub fn new(config: PostprocConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The config.
    pub fn config(&self) -> &PostprocConfig {
        &self.config
    }

    /// Post-processes one image, with the thresholds of the cell type voted by its box labels.
    ///
    /// An image without detections gives an empty result with `cell_type: None` (the seed crashes on
    /// `argmax` of an empty `bincount`).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] / [`Error::MaskSize`] for inconsistent input, [`Error::NanScore`] for a
    /// NaN score, [`Error::UnknownCellLabel`] when the winning label is not a cell type.
    #[tracing::instrument(level = "debug", skip_all, fields(image = image_id, n = input.boxes.len()))]
    pub fn run(&self, image_id: &str, input: &SoftDetections) -> Result<Processed> {
        input.validate()?;
        let cell_type = match vote::cell_type_vote(&input.labels) {
            None => return Ok(empty(image_id, input.image_size)),
            Some(Ok(t)) => t,
            Some(Err(label)) => {
                return Err(Error::UnknownCellLabel { image: image_id.to_string(), label });
            }
        };
        self.run_as(image_id, input, cell_type)
    }

    /// Post-processes one image with the thresholds of `cell_type` (no vote).
    ///
    /// # Errors
    /// As [`Pipeline::run`], without the vote's error.
    pub fn run_as(
        &self,
        image_id: &str,
        input: &SoftDetections,
        cell_type: CellType,
    ) -> Result<Processed> {
        input.validate()?;
        let p = self.config.params(cell_type);
        let order = nms::order_by_score(&input.scores)?;
        let confident: Vec<usize> = order
            .into_iter()
            .take_while(|&i| f64::from(input.scores[i]) >= p.confidence_threshold)
            .collect();
        let mut masks = Vec::with_capacity(confident.len());
        for &i in &confident {
            masks.push(input.masks[i].binarize(p.mask_threshold)?);
        }
        Ok(self.finish(
            image_id,
            input.image_size,
            &input.boxes,
            &input.scores,
            &input.labels,
            confident,
            masks,
            cell_type,
            p,
        ))
    }

    /// Post-processes one image whose masks are already binary (the binarisation step is skipped).
    ///
    /// # Errors
    /// As [`Pipeline::run`].
    pub fn run_binary(&self, image_id: &str, input: &Detections) -> Result<Processed> {
        if input.masks.len() != input.len() {
            return Err(Error::LengthMismatch {
                what: "Pipeline::run_binary",
                left_name: "boxes",
                left: input.len(),
                right_name: "masks",
                right: input.masks.len(),
            });
        }
        mask_nms::check_sizes("Pipeline::run_binary", input.image_size, &input.masks)?;
        let cell_type = match vote::cell_type_vote(&input.labels) {
            None => return Ok(empty(image_id, input.image_size)),
            Some(Ok(t)) => t,
            Some(Err(label)) => {
                return Err(Error::UnknownCellLabel { image: image_id.to_string(), label });
            }
        };
        let p = self.config.params(cell_type);
        let order = nms::order_by_score(&input.scores)?;
        let confident: Vec<usize> = order
            .into_iter()
            .take_while(|&i| f64::from(input.scores[i]) >= p.confidence_threshold)
            .collect();
        let masks = confident.iter().map(|&i| input.masks[i].clone()).collect();
        Ok(self.finish(
            image_id,
            input.image_size,
            &input.boxes,
            &input.scores,
            &input.labels,
            confident,
            masks,
            cell_type,
            p,
        ))
    }

    /// Post-processes many images, in parallel with the `rayon` feature; results keep input order.
    pub fn run_batch(&self, inputs: &[(String, SoftDetections)]) -> Vec<Result<Processed>> {
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            inputs.par_iter().map(|(id, d)| self.run(id, d)).collect()
        }
        #[cfg(not(feature = "rayon"))]
        {
            inputs.iter().map(|(id, d)| self.run(id, d)).collect()
        }
    }

    /// Steps after binarisation, on the confident detections (`idx`, sorted by score) and their masks.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        image_id: &str,
        size: ImageSize,
        boxes: &[BoxXyxy],
        scores: &[f32],
        labels: &[usize],
        mut idx: Vec<usize>,
        mut masks: Vec<CroppedMask>,
        cell_type: CellType,
        p: TypeParams,
    ) -> Processed {
        let select = |keep: &[usize], idx: &mut Vec<usize>, masks: &mut Vec<CroppedMask>| {
            *idx = keep.iter().map(|&k| idx[k]).collect();
            let mut old: Vec<Option<CroppedMask>> = masks.drain(..).map(Some).collect();
            *masks = keep.iter().map(|&k| old[k].take().expect("kept once")).collect();
        };
        if p.box_nms_threshold > 0.0 {
            let b: Vec<BoxXyxy> = idx.iter().map(|&i| boxes[i]).collect();
            let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
            let keep = nms::nms(&b, &s, p.box_nms_threshold).expect("validated inputs");
            select(&keep, &mut idx, &mut masks);
        }
        if p.mask_nms_threshold > 0.0 {
            let refs: Vec<&CroppedMask> = masks.iter().collect();
            let keep = mask_nms::suppress_sorted(&refs, p.mask_nms_threshold);
            select(&keep, &mut idx, &mut masks);
        }
        let areas: Vec<usize> = masks.iter().map(CroppedMask::area).collect();
        let keep = filter::apply_rule(self.config.small_masks, &areas, p.min_size);
        if keep.len() != masks.len() {
            select(&keep, &mut idx, &mut masks);
        }
        if self.config.corrupt_astro && cell_type == CellType::Astro {
            masks = masks.iter().map(corrupt::corrupt).collect();
        }
        if self.config.fill_holes {
            masks = masks.iter().map(corrupt::fill_holes).collect();
        }
        if self.config.remove_overlap {
            let refs: Vec<&CroppedMask> = masks.iter().collect();
            masks = overlap::resolve_refs(size, &refs);
        }
        if !self.config.keep_empty {
            let keep: Vec<usize> = (0..masks.len()).filter(|&k| masks[k].area() > 0).collect();
            select(&keep, &mut idx, &mut masks);
        }
        let detections = Detections {
            image_size: size,
            boxes: idx.iter().map(|&i| boxes[i]).collect(),
            scores: idx.iter().map(|&i| scores[i]).collect(),
            labels: idx.iter().map(|&i| labels[i]).collect(),
            masks,
        };
        tracing::debug!(image = image_id, kept = idx.len(), cell_type = %cell_type, "post-processed");
        Processed {
            image_id: image_id.to_string(),
            cell_type: Some(cell_type),
            detections,
            source_indices: idx,
        }
    }
}

fn empty(image_id: &str, size: ImageSize) -> Processed {
    Processed {
        image_id: image_id.to_string(),
        cell_type: None,
        detections: Detections::empty(size),
        source_indices: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soft(size: ImageSize, r: usize, c: usize, n: usize, v: u8) -> SoftMask {
        SoftMask::new(size, r, c, n, n, vec![v; n * n]).unwrap()
    }

    fn input(labels: Vec<usize>, scores: Vec<f32>, masks: Vec<SoftMask>) -> SoftDetections {
        let size = masks.first().map_or(ImageSize::new(32, 32), SoftMask::image_size);
        SoftDetections {
            image_size: size,
            boxes: vec![BoxXyxy::default(); labels.len()],
            scores,
            labels,
            masks,
        }
    }

    #[test]
    fn seed_order_on_a_small_image() {
        let s = ImageSize::new(32, 32);
        let cfg = PostprocConfig { min_size: [0; 3], ..PostprocConfig::default() };
        let pipe = Pipeline::new(cfg).unwrap();
        let d = input(
            vec![0, 0, 0, 2],
            vec![0.9, 0.8, 0.2, 0.7],
            vec![
                soft(s, 0, 0, 10, 200),
                soft(s, 0, 1, 10, 200),
                soft(s, 20, 20, 5, 200),
                soft(s, 5, 5, 10, 200),
            ],
        );
        let out = pipe.run("img", &d).unwrap();
        assert_eq!(out.cell_type, Some(CellType::Shsy5y));
        // 2 is below 0.3; 1 is suppressed by 0 (IoU 0.82 > 0.1); 3 overlaps 0 with IoU 25/175 > 0.1.
        assert_eq!(out.source_indices, vec![0]);
        let labels = out.label_image();
        assert_eq!(labels.max_label(), 1);
    }

    #[test]
    fn overlap_is_removed_in_confidence_order() {
        let s = ImageSize::new(32, 32);
        let cfg = PostprocConfig {
            min_size: [0; 3],
            mask_nms_threshold: [0.5; 3],
            ..PostprocConfig::default()
        };
        let pipe = Pipeline::new(cfg).unwrap();
        let d =
            input(vec![0, 0], vec![0.5, 0.9], vec![soft(s, 0, 0, 10, 200), soft(s, 5, 5, 10, 200)]);
        let out = pipe.run("img", &d).unwrap();
        assert_eq!(out.source_indices, vec![1, 0]);
        assert_eq!(out.detections.masks[0].area(), 100);
        assert_eq!(out.detections.masks[1].area(), 75);
    }

    #[test]
    fn batch_and_binary_runs_equal_single_runs() {
        let s = ImageSize::new(32, 32);
        let cfg = PostprocConfig {
            min_size: [0; 3],
            mask_nms_threshold: [0.5; 3],
            ..PostprocConfig::default()
        };
        let pipe = Pipeline::new(cfg).unwrap();
        let a = input(
            vec![1, 1, 0],
            vec![0.5, 0.9, 0.45],
            vec![soft(s, 0, 0, 10, 200), soft(s, 5, 5, 10, 120), soft(s, 20, 20, 6, 90)],
        );
        let b =
            input(vec![2, 2], vec![0.8, 0.75], vec![soft(s, 1, 1, 8, 255), soft(s, 3, 3, 9, 255)]);
        let batch = pipe.run_batch(&[("a".into(), a.clone()), ("b".into(), b.clone())]);
        assert_eq!(batch[0].as_ref().unwrap(), &pipe.run("a", &a).unwrap());
        assert_eq!(batch[1].as_ref().unwrap(), &pipe.run("b", &b).unwrap());
        let binary = Detections::new(
            s,
            a.boxes.clone(),
            a.scores.clone(),
            a.labels.clone(),
            a.masks.iter().map(|m| m.binarize(0.45).unwrap()).collect(),
        )
        .unwrap();
        assert_eq!(pipe.run_binary("a", &binary).unwrap(), pipe.run("a", &a).unwrap());
    }

    #[test]
    fn bad_input_gives_typed_errors() {
        let s = ImageSize::new(32, 32);
        let pipe = Pipeline::new(PostprocConfig::default()).unwrap();
        let nan = input(vec![0], vec![f32::NAN], vec![soft(s, 0, 0, 2, 200)]);
        assert!(matches!(pipe.run("a", &nan), Err(Error::NanScore { index: 0 })));
        let mut other = input(vec![0], vec![0.9], vec![soft(ImageSize::new(8, 8), 0, 0, 2, 200)]);
        other.image_size = s;
        assert!(matches!(pipe.run("b", &other), Err(Error::MaskSize { index: 0, .. })));
        let short = SoftDetections {
            scores: vec![],
            ..input(vec![0], vec![0.9], vec![soft(s, 0, 0, 2, 9)])
        };
        assert!(matches!(pipe.run("c", &short), Err(Error::LengthMismatch { .. })));
        let unknown = input(vec![7], vec![0.9], vec![soft(s, 0, 0, 2, 200)]);
        assert!(matches!(pipe.run("d", &unknown), Err(Error::UnknownCellLabel { label: 7, .. })));
        let none = SoftDetections {
            image_size: s,
            boxes: vec![],
            scores: vec![],
            labels: vec![],
            masks: vec![],
        };
        let out = pipe.run("e", &none).unwrap();
        assert!(out.cell_type.is_none() && out.detections.is_empty());
        let bad =
            PostprocConfig { mask_threshold: [0.45, f64::NAN, 0.45], ..PostprocConfig::default() };
        assert!(matches!(Pipeline::new(bad), Err(Error::Config { .. })));
    }
}
