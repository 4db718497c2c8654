//! Cross-validation of experiments, the seed's `inference_val` (`SEED.md` §4.1): every training
//! image is predicted once, by the models of the fold that held it out (fold k of every
//! experiment, ensembled as [`crate::inference`] does), into ONE out-of-fold file, and scored
//! with the competition metric overall, per cell type and per fold.
//!
//! Everything is checked before the first prediction: the experiments share one split, every
//! fold of every experiment is finished and its model rebuilds from its run folder, each fold's run
//! validated on exactly that fold's images, every image of the split has its file and its truth,
//! and every output can be written.
//!
//! The OOF holds the images fold by fold (fold 0 first), each fold's in id order; the metric sums
//! the images in that order, as `tweak_thresholds` sums the OOF it reads, so the CV of
//! `cross_validate --postproc <tuned>` is the tuned CV `tweak_thresholds` prints.

use std::path::{Path, PathBuf};

use cellseg_data::raster::{read_image, read_image_size};
use cellseg_dist::ProcessGroup;
use cellseg_ensemble::EnsembleConfig;
use cellseg_metrics::report::{CompetitionReport, PredictedTruth, load_truth_csv};
use cellseg_postproc::oof::OofWriter;
use cellseg_postproc::{Pipeline, Processed};
use rayon::iter::{IntoParallelRefIterator, ParallelIterator};
use tch::Device;

use crate::experiment::{self, Experiment};
use crate::inference::{self, Error as InferenceError, ImageFile, Inference, Members, Outputs};

/// Errors of a cross-validation, each naming the experiment, fold, file or image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An experiment folder is unusable (no split, a missing fold, another split).
    #[error(transparent)]
    Experiment(#[from] experiment::Error),
    /// A fold's run validated on other images than the split's fold.
    #[error(
        "{run}: its heldout/truth.csv lists image {id}, which the split of {experiment} puts in \
         fold {other} (this run is fold {fold}); it was trained on another split"
    )]
    ForeignRun {
        /// The experiment.
        experiment: PathBuf,
        /// The fold's run folder.
        run: PathBuf,
        /// The fold.
        fold: usize,
        /// The image.
        id: String,
        /// Its fold in the split (`none` when it is not in the split).
        other: String,
    },
    /// No experiment was given.
    #[error("no experiment given")]
    NoExperiment,
    /// An image of the split has no file.
    #[error("image {id} of fold {fold}: {path} is missing or unreadable ({reason})")]
    Image {
        /// The image.
        id: String,
        /// Its fold.
        fold: usize,
        /// The file looked for.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Members, ensemble, prediction, truth or outputs failed.
    #[error(transparent)]
    Inference(#[from] Box<InferenceError>),
}

impl From<InferenceError> for Error {
    fn from(e: InferenceError) -> Self {
        Self::Inference(Box::new(e))
    }
}

impl From<cellseg_metrics::Error> for Error {
    fn from(e: cellseg_metrics::Error) -> Self {
        Self::Inference(Box::new(InferenceError::from(e)))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to cross-validate and where the outputs go.
#[derive(Debug, Clone)]
pub struct CrossValidation {
    /// The experiment folders; fold k's members are fold k of each, in this order.
    pub experiments: Vec<PathBuf>,
    /// The training images (`{id}.png`, the Sartorius `train/` folder).
    pub images: PathBuf,
    /// The truth (the Sartorius `train.csv`; it may hold more images than the split).
    pub truth: PathBuf,
    /// The ensemble of each fold's members.
    pub ensemble: EnsembleConfig,
    /// The OOF file (the predictions before post-processing), for `tweak_thresholds`.
    pub oof: Option<PathBuf>,
    /// The post-processed OOF as a submission CSV, for `evaluate`.
    pub submission: Option<PathBuf>,
}

/// The result of [`CrossValidation::run`].
#[derive(Debug)]
pub struct CvReport {
    /// The metric over every validated image, in OOF order (the CV).
    pub overall: CompetitionReport,
    /// The metric of each fold's images.
    pub per_fold: Vec<CompetitionReport>,
    /// The post-processed images, in OOF order.
    pub processed: Vec<Processed>,
    /// The files written.
    pub written: Vec<PathBuf>,
    /// Seconds of prediction.
    pub seconds: f64,
}

impl CvReport {
    /// A text table: the metric per fold, then per cell type and overall.
    pub fn table(&self) -> String {
        let mut s = format!("{:<12} {:>7} {:>8}\n", "fold", "images", "score");
        for (k, f) in self.per_fold.iter().enumerate() {
            s.push_str(&format!("{:<12} {:>7} {:>8.5}\n", k, f.images.len(), f.overall));
        }
        s.push('\n');
        s + &self.overall.table()
    }
}

/// One fold's members and images, checked before any prediction.
struct FoldPlan {
    runs: Vec<PathBuf>,
    images: Vec<ImageFile>,
}

impl CrossValidation {
    /// The experiments opened and checked against each other.
    ///
    /// # Errors
    /// [`Error::NoExperiment`]; [`Error::Experiment`] for a folder without split, two splits that
    /// differ (naming the first differing id) or a fold that is not finished.
    pub fn experiments(&self) -> Result<Vec<Experiment>> {
        if self.experiments.is_empty() {
            return Err(Error::NoExperiment);
        }
        let exps =
            self.experiments.iter().map(|d| Experiment::open(d)).collect::<Result<Vec<_>, _>>()?;
        experiment::check_same_split(&exps)?;
        Ok(exps)
    }

    /// Predicts every fold's held-out images with that fold's members on `device`,
    /// post-processes them with `pipeline`, writes the outputs and scores the whole OOF;
    /// `progress(done, total)` after each image.
    ///
    /// # Errors
    /// Every check of this module's docs before the first prediction; then the first image that
    /// fails, by id. No partial OOF or submission is left behind.
    pub fn run(
        &self,
        pipeline: &Pipeline,
        device: Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<CvReport> {
        let Prepared { plans, all, truth, members } = self.prepare(device)?;
        let mut oof =
            self.oof.as_deref().map(OofWriter::create).transpose().map_err(InferenceError::from)?;
        let t0 = std::time::Instant::now();
        let mut processed: Vec<Processed> = Vec::with_capacity(all.len());
        let total = all.len();
        for (k, (plan, members)) in plans.iter().zip(&members).enumerate() {
            let ensemble = members.ensemble(self.ensemble.clone())?;
            let input = &members.card().expect("one member per experiment").input;
            let inf = Inference { ensemble: &ensemble, input, pipeline, device };
            let done = processed.len();
            tracing::info!(fold = k, images = plan.images.len(), members = plan.runs.len(), "fold");
            let p = inf.predict_images(&plan.images, oof.as_mut(), None, &mut |i| {
                progress(done + i, total)
            })?;
            processed.extend(p);
        }
        let seconds = t0.elapsed().as_secs_f64();
        self.finish(processed, seconds, oof, &plans, &truth)
    }

    /// [`Self::run`] by the ranks of `group` together, with the same outputs byte for byte: rank
    /// `r` predicts the `r`-th contiguous share of all the folds' images (each with its fold's
    /// members) into a part file, and rank 0 post-processes, writes and scores them all (see
    /// [`Inference::run_sharded`]). Rank 0 returns the report, the others `None`;
    /// `progress(done, share)` counts this rank's images.
    ///
    /// # Errors
    /// As [`Self::run`]; [`InferenceError::Peer`] naming a rank that failed.
    pub fn run_sharded(
        &self,
        pipeline: &Pipeline,
        device: Device,
        progress: &mut dyn FnMut(usize, usize),
        group: &ProcessGroup,
    ) -> Result<Option<CvReport>> {
        let world = group.world_size();
        if world == 1 {
            return self.run(pipeline, device, progress).map(Some);
        }
        let Prepared { plans, all, truth, members } = self.prepare(device)?;
        let ensembles = members
            .iter()
            .map(|m| m.ensemble(self.ensemble.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let inferences: Vec<Inference<'_>> = ensembles
            .iter()
            .zip(&members)
            .map(|(ensemble, m)| {
                let input = &m.card().expect("one member per experiment").input;
                Inference { ensemble, input, pipeline, device }
            })
            .collect();
        let fold_of: Vec<usize> =
            plans.iter().enumerate().flat_map(|(k, p)| vec![k; p.images.len()]).collect();
        let parts = inference::shard_parts(&self.outputs(), world);
        let share = all.len() / world + 1;
        let t0 = std::time::Instant::now();
        let predict = |i: usize| -> Result<_, InferenceError> {
            let file = &all[i];
            let image = read_image(&file.path).map_err(InferenceError::from)?;
            Ok((file.id.clone(), inferences[fold_of[i]].predict(&image)?))
        };
        let Some(soft) = inference::predict_shared(group, &parts, all.len(), predict, &mut |d| {
            progress(d, share)
        })?
        else {
            return Ok(None);
        };
        let seconds = t0.elapsed().as_secs_f64();
        let oof = inference::oof_of(self.oof.as_deref(), &soft)?;
        let processed = soft
            .par_iter()
            .map(|(id, d)| inference::post_process(pipeline, id, d, None, None))
            .collect::<Result<Vec<_>, _>>()?;
        self.finish(processed, seconds, oof, &plans, &truth).map(Some)
    }

    /// The outputs a cross-validation writes.
    fn outputs(&self) -> Outputs {
        Outputs {
            submission: self.submission.clone(),
            oof: self.oof.clone(),
            truth: Some(self.truth.clone()),
            ..Outputs::default()
        }
    }

    /// Every check before the first prediction: the experiments, their folds and images, the
    /// truth, the outputs, and every fold's members, rebuilt.
    fn prepare(&self, device: Device) -> Result<Prepared> {
        let exps = self.experiments()?;
        let split = &exps[0].split;
        // Every fold of every experiment, finished: a missing one is named before any work (the
        // seed's `inference_val` stops at the first fold it cannot load, after the folds before).
        let fold_runs = exps.iter().map(Experiment::fold_runs).collect::<Result<Vec<_>, _>>()?;
        let mut plans = Vec::with_capacity(split.n_folds);
        for k in 0..split.n_folds {
            let mut runs = Vec::with_capacity(exps.len());
            for (e, r) in exps.iter().zip(&fold_runs) {
                check_run_split(e, &r[k], k)?;
                runs.push(r[k].clone());
            }
            let images = split
                .fold_ids(k)
                .into_iter()
                .map(|id| {
                    let path = self.images.join(format!("{id}.png"));
                    let size = read_image_size(&path).map_err(|e| Error::Image {
                        id: id.to_string(),
                        fold: k,
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                    Ok(ImageFile { id: id.to_string(), path, size })
                })
                .collect::<Result<Vec<_>>>()?;
            plans.push(FoldPlan { runs, images });
        }
        let all: Vec<ImageFile> = plans.iter().flat_map(|p| p.images.iter().cloned()).collect();
        let truth = inference::truth_for(&self.truth, &all)?;
        inference::check_outputs(&Outputs { truth: None, ..self.outputs() })?;
        // Every fold's members, rebuilt before the first prediction: a bad checkpoint of the last
        // fold is found now, not after the folds before it were predicted.
        let members =
            plans.iter().map(|p| Members::load(&p.runs, device)).collect::<Result<Vec<_>, _>>()?;
        Ok(Prepared { plans, all, truth, members })
    }

    /// Writes the submission (the OOF writer is finished) and scores the whole OOF and each fold.
    fn finish(
        &self,
        processed: Vec<Processed>,
        seconds: f64,
        oof: Option<OofWriter>,
        plans: &[FoldPlan],
        truth: &PredictedTruth,
    ) -> Result<CvReport> {
        let mut written = Vec::new();
        if let Some(w) = oof {
            written.push(w.finish().map_err(InferenceError::from)?);
        }
        if let Some(path) = &self.submission {
            cellseg_postproc::output::write_kaggle_csv(path, &processed)
                .map_err(InferenceError::from)?;
            written.push(path.clone());
        }
        let mut overall = inference::score(&self.truth, &truth.images, &processed)?;
        overall.ignored_truth = truth.ignored.clone();
        let mut per_fold = Vec::with_capacity(plans.len());
        let mut at = 0;
        for plan in plans {
            let n = plan.images.len();
            per_fold.push(inference::score(
                &self.truth,
                &truth.images[at..at + n],
                &processed[at..at + n],
            )?);
            at += n;
        }
        Ok(CvReport { overall, per_fold, processed, written, seconds })
    }
}

/// What [`CrossValidation::prepare`] checked and built.
struct Prepared {
    plans: Vec<FoldPlan>,
    all: Vec<ImageFile>,
    truth: PredictedTruth,
    members: Vec<Members>,
}

/// Checks that the run of fold `k` validated on images of fold `k` of `exp`'s split (its
/// `heldout/truth.csv`, when it has one).
fn check_run_split(exp: &Experiment, run: &Path, k: usize) -> Result<()> {
    let truth = run.join("heldout").join("truth.csv");
    if !truth.is_file() {
        return Ok(());
    }
    for t in load_truth_csv(&truth)? {
        let f = exp.split.fold_of(&t.id);
        if f != Some(k) {
            return Err(Error::ForeignRun {
                experiment: exp.dir.clone(),
                run: run.to_path_buf(),
                fold: k,
                id: t.id,
                other: f.map_or_else(|| "none".into(), |f| f.to_string()),
            });
        }
    }
    Ok(())
}
