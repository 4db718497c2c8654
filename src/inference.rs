//! Inference on a folder of images: trained members rebuilt from their run folders, the seed's
//! ensemble ([`crate::ensemble`]), post-processing on rayon's threads while the model runs the
//! next image, and the outputs (Kaggle submission, COCO results, OOF file, overlays, the
//! competition metric against a truth CSV).
//!
//! Every input is checked before the first image is predicted (the members agree, every image
//! header reads, every output can be written, the truth covers every image with its size), so a
//! long run does not fail at its end for a reason known at its start. Files are written to a
//! temporary file and renamed; an error leaves no partial submission, COCO or OOF file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use cellseg_core::ImageSize;
use cellseg_data::normalize::{normalize_into, padded_size};
use cellseg_data::raster::{Image, read_image, read_image_size};
use cellseg_dist::ProcessGroup;
use cellseg_ensemble::{Ensemble, EnsembleConfig, Member};
use cellseg_metrics::report::{
    CompetitionReport, PredictedTruth, TruthImage, evaluate_competition, load_truth_csv,
    truth_of_predicted,
};
use cellseg_postproc::oof::{OofReader, OofWriter};
use cellseg_postproc::output::{CocoImageId, coco_results, kaggle_rows, write_coco_results};
use cellseg_postproc::{Pipeline, Processed, SoftDetections};
use cellseg_rle::KaggleRle;
use cellseg_train::detector::{Detector, InputNormalisation, ModelCard};
use rayon::iter::{
    IndexedParallelIterator, IntoParallelRefIterator, ParallelBridge, ParallelIterator,
};
use tch::{Device, Tensor};

/// Errors of an inference run, each naming the file, folder or image at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A member could not be rebuilt from its run folder (no `model.toml`, no checkpoint, …).
    #[error("member {path}: {source}")]
    Member {
        /// The run folder given.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<cellseg_train::Error>,
    },
    /// An experiment folder given as a member is unusable (a fold not finished, no split).
    #[error("--model {path}: {source}")]
    Experiment {
        /// The folder given.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<crate::experiment::Error>,
    },
    /// Two members that cannot be ensembled.
    #[error("members {first} and {other} differ in {what}; an ensemble needs them equal")]
    Incompatible {
        /// The first member's folder.
        first: PathBuf,
        /// The other member's folder.
        other: PathBuf,
        /// What differs, with both values.
        what: String,
    },
    /// The ensemble refused its members or config, or failed on an image.
    #[error(transparent)]
    Ensemble(Box<cellseg_ensemble::Error>),
    /// The image folder is unusable.
    #[error("image folder {dir}: {reason}")]
    Images {
        /// The folder.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// An image file could not be read or decoded.
    #[error(transparent)]
    Image(Box<cellseg_data::Error>),
    /// Post-processing failed on an image.
    #[error("post-processing image `{id}`: {source}")]
    Postproc {
        /// The image.
        id: String,
        /// Why.
        #[source]
        source: Box<cellseg_postproc::Error>,
    },
    /// An output cannot be written.
    #[error("cannot write {path}: {reason}")]
    Output {
        /// The output path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The truth CSV could not be read.
    #[error(transparent)]
    Truth(Box<cellseg_metrics::Error>),
    /// The truth CSV and the images disagree.
    #[error("truth {path}: {reason}")]
    TruthMismatch {
        /// The truth CSV.
        path: PathBuf,
        /// What disagrees, naming the image.
        reason: String,
    },
    /// The OOF, submission or COCO writer failed.
    #[error(transparent)]
    Write(Box<cellseg_postproc::Error>),
    /// An overlay PNG could not be written.
    #[error(transparent)]
    Overlay(Box<cellseg_train::Error>),
    /// A collective of the ranks sharing the images failed.
    #[error(transparent)]
    Dist(Box<cellseg_dist::Error>),
    /// Another rank failed on its share of the images; this one stops with it.
    #[error("rank {rank} of {world} failed on its images (its output names the error)")]
    Peer {
        /// The rank that failed first.
        rank: usize,
        /// The group size.
        world: usize,
    },
}

macro_rules! boxed_from {
    ($($variant:ident: $ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Self::$variant(Box::new(e))
            }
        }
    )*};
}
boxed_from!(
    Ensemble: cellseg_ensemble::Error,
    Image: cellseg_data::Error,
    Truth: cellseg_metrics::Error,
    Write: cellseg_postproc::Error,
    Overlay: cellseg_train::Error,
    Dist: cellseg_dist::Error
);

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Trained detectors rebuilt from their run folders, in the order given.
#[derive(Debug)]
pub struct Members {
    members: Vec<(PathBuf, String, Detector)>,
}

impl Members {
    /// Rebuilds each run folder's model (its `model.toml` and latest checkpoint) on `device` and
    /// checks that all members read images the same way and name their labels alike.
    ///
    /// # Errors
    /// [`Error::Member`] naming the folder; [`Error::Incompatible`] naming both folders and the
    /// two values.
    pub fn load(paths: &[PathBuf], device: Device) -> Result<Self> {
        let mut members: Vec<(PathBuf, String, Detector)> = Vec::new();
        for path in paths {
            let d = Detector::from_run(device, path)
                .map_err(|e| Error::Member { path: path.clone(), source: Box::new(e) })?;
            if let Some((first, _, f)) = members.first() {
                let (a, b): (&ModelCard, &ModelCard) = (f.card(), d.card());
                let differ = |what: &str, x: String, y: String| Error::Incompatible {
                    first: first.clone(),
                    other: path.clone(),
                    what: format!("{what} ({x} vs {y})"),
                };
                if a.input != b.input {
                    return Err(differ(
                        "input normalisation",
                        format!("{:?}", a.input),
                        format!("{:?}", b.input),
                    ));
                }
                if a.class_names != b.class_names {
                    return Err(differ(
                        "class names",
                        format!("{:?}", a.class_names),
                        format!("{:?}", b.class_names),
                    ));
                }
            }
            // A fold of an experiment is `<experiment>/fold<K>`, so that members stay apart.
            let name =
                match path.parent().filter(|p| crate::experiment::Experiment::is_experiment(p)) {
                    Some(exp) => format!(
                        "{}/{}",
                        crate::experiment::folder_name(exp),
                        crate::experiment::folder_name(path)
                    ),
                    None => crate::experiment::folder_name(path),
                };
            tracing::info!(path = %path.display(), arch = d.model().arch().name(), "member loaded");
            members.push((path.clone(), name, d));
        }
        Ok(Self { members })
    }

    /// The ensemble of all members with `config`.
    ///
    /// # Errors
    /// As [`Ensemble::new`].
    pub fn ensemble(&self, config: EnsembleConfig) -> Result<Ensemble<'_>> {
        let members =
            self.members.iter().map(|(_, name, d)| Member { name, model: d.model() }).collect();
        Ok(Ensemble::new(members, config)?)
    }

    /// The detectors.
    pub fn detectors(&self) -> impl Iterator<Item = &Detector> {
        self.members.iter().map(|(_, _, d)| d)
    }

    /// The model card every member shares (input normalisation, class names).
    pub fn card(&self) -> Option<&ModelCard> {
        self.members.first().map(|(_, _, d)| d.card())
    }
}

/// The ensemble config of a run over `n_members` members: the file at `path` (whose `[usage]`
/// lists may name members by `names`, see [`EnsembleConfig::load_named`]), else the seed's ENS
/// values, or its SINGLE values for one member; `no_tta` keeps the identity view only.
///
/// # Errors
/// As [`EnsembleConfig::load_named`].
pub fn ensemble_config(
    path: Option<&Path>,
    names: &[(String, Vec<usize>)],
    n_members: usize,
    no_tta: bool,
) -> Result<EnsembleConfig> {
    let mut cfg = match path {
        Some(p) => EnsembleConfig::load_named(p, names)?,
        None if n_members == 1 => EnsembleConfig::seed_single(),
        None => EnsembleConfig::default(),
    };
    if no_tta {
        cfg.views = vec![cellseg_ensemble::View::Identity];
    }
    Ok(cfg)
}

/// The members that `--model` folders stand for ([`expand_models`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelList {
    /// The run folder of every member, in order.
    pub runs: Vec<PathBuf>,
    /// Each given folder's name with the member indices it stands for (for [`ensemble_config`]).
    pub names: Vec<(String, Vec<usize>)>,
}

/// The members that `--model` folders stand for: a run folder is one member, an experiment
/// folder (with `folds.csv`) all its folds, in fold order.
///
/// # Errors
/// [`Error::Experiment`] for an experiment with a fold that is not finished.
pub fn expand_models(models: &[PathBuf]) -> Result<ModelList> {
    let (mut runs, mut names) = (Vec::new(), Vec::new());
    for m in models {
        let folds = if crate::experiment::Experiment::is_experiment(m) {
            crate::experiment::Experiment::open(m)
                .and_then(|e| e.fold_runs())
                .map_err(|e| Error::Experiment { path: m.clone(), source: Box::new(e) })?
        } else {
            vec![m.clone()]
        };
        let ix: Vec<usize> = (runs.len()..runs.len() + folds.len()).collect();
        names.push((crate::experiment::folder_name(m), ix));
        runs.extend(folds);
    }
    Ok(ModelList { runs, names })
}

/// One image of the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// The id: the file name without its extension (the Kaggle `test/{id}.png` layout).
    pub id: String,
    /// The file.
    pub path: PathBuf,
    /// Its size, from the header.
    pub size: ImageSize,
}

/// The PNG and TIFF images of `dir`, sorted by id, with their sizes read from the headers. Files
/// whose name starts with `.` are ignored; any other file is an error.
///
/// # Errors
/// [`Error::Images`] when the folder cannot be listed, holds no image, holds a file that is not
/// a PNG or TIFF or a sub-folder, or two files share an id; [`Error::Image`] naming a file whose
/// header does not decode.
pub fn list_images(dir: &Path) -> Result<Vec<ImageFile>> {
    let bad = |reason: String| Error::Images { dir: dir.to_path_buf(), reason };
    let entries = std::fs::read_dir(dir).map_err(|e| bad(format!("cannot list it: {e}")))?;
    let mut out: Vec<ImageFile> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| bad(format!("cannot list it: {e}")))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        if !matches!(ext.as_deref(), Some("png" | "tif" | "tiff")) || !path.is_file() {
            return Err(bad(format!(
                "`{name}` is not a PNG or TIFF image (the folder must hold only images)"
            )));
        }
        let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let size = read_image_size(&path)?;
        out.push(ImageFile { id, path, size });
    }
    if out.is_empty() {
        return Err(bad("no PNG or TIFF image in it".into()));
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = out.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(bad(format!(
            "{} and {} have the same id `{}`",
            w[0].path.display(),
            w[1].path.display(),
            w[0].id
        )));
    }
    Ok(out)
}

/// Where the outputs go; each is optional.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// Kaggle submission CSV (`id,predicted`).
    pub submission: Option<PathBuf>,
    /// COCO results JSON (`category_id = label + 1`).
    pub coco: Option<PathBuf>,
    /// The predictions before post-processing (for threshold tweaking).
    pub oof: Option<PathBuf>,
    /// A folder for one overlay PNG per image.
    pub overlays: Option<PathBuf>,
    /// A truth CSV (Sartorius `train.csv` layout) to score the submission against.
    pub truth: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug)]
pub struct InferenceReport {
    /// The post-processed images, in id order.
    pub processed: Vec<Processed>,
    /// Seconds from the first image to the last result.
    pub seconds: f64,
    /// The competition metric, with `--truth`.
    pub metric: Option<CompetitionReport>,
    /// The files written.
    pub written: Vec<PathBuf>,
}

impl InferenceReport {
    /// Images per second.
    pub fn images_per_s(&self) -> f64 {
        self.processed.len() as f64 / self.seconds.max(1e-9)
    }
}

/// What runs on every image: the ensemble on the members' device, the members' input
/// normalisation, and the post-processing.
#[derive(Debug)]
pub struct Inference<'e> {
    /// The ensemble.
    pub ensemble: &'e Ensemble<'e>,
    /// How images become the members' input (their model cards' `input`).
    pub input: &'e InputNormalisation,
    /// The post-processing.
    pub pipeline: &'e Pipeline,
    /// The members' device.
    pub device: Device,
}

impl Inference<'_> {
    /// Predicts `images`, post-processes each on rayon's threads while the model predicts the
    /// next, and writes `outputs`; `progress(done)` after each image.
    ///
    /// # Errors
    /// The checks of [`check_outputs`] and [`truth_for`] before any prediction; then the first
    /// image that fails to read, predict or post-process, by id. Only complete overlay PNGs of
    /// earlier images are left behind then.
    pub fn run(
        &self,
        images: &[ImageFile],
        outputs: &Outputs,
        progress: &mut dyn FnMut(usize),
    ) -> Result<InferenceReport> {
        check_outputs(outputs)?;
        let truth = outputs.truth.as_deref().map(|t| truth_for(t, images)).transpose()?;
        create_overlays_dir(outputs)?;
        let mut oof = outputs.oof.as_deref().map(OofWriter::create).transpose()?;
        let t0 = std::time::Instant::now();
        let processed =
            self.predict_images(images, oof.as_mut(), outputs.overlays.as_deref(), progress)?;
        let seconds = t0.elapsed().as_secs_f64();
        write_outputs(processed, seconds, oof, truth, outputs)
    }

    /// [`Self::run`] by the ranks of `group` together, with the same outputs byte for byte: rank
    /// `r` predicts the `r`-th contiguous share of `images` into a part file of soft detections
    /// beside the first output, then rank 0 reads the parts in order, post-processes every image
    /// and writes every output (and removes the parts). Rank 0 returns the report, the others
    /// `None`. One rank is [`Self::run`].
    ///
    /// # Errors
    /// As [`Self::run`], on the rank that failed; [`Error::Peer`] naming it on the others.
    pub fn run_sharded(
        &self,
        images: &[ImageFile],
        outputs: &Outputs,
        progress: &mut dyn FnMut(usize),
        group: &ProcessGroup,
    ) -> Result<Option<InferenceReport>> {
        let world = group.world_size();
        if world == 1 {
            return self.run(images, outputs, progress).map(Some);
        }
        check_outputs(outputs)?;
        let truth = outputs.truth.as_deref().map(|t| truth_for(t, images)).transpose()?;
        create_overlays_dir(outputs)?;
        let parts = shard_parts(outputs, world);
        let t0 = std::time::Instant::now();
        let predict = |i: usize| -> Result<(String, SoftDetections)> {
            let file = &images[i];
            Ok((file.id.clone(), self.predict(&read_image(&file.path)?)?))
        };
        let Some(soft) = predict_shared(group, &parts, images.len(), predict, progress)? else {
            return Ok(None);
        };
        let seconds = t0.elapsed().as_secs_f64();
        let oof = oof_of(outputs.oof.as_deref(), &soft)?;
        let overlays = outputs.overlays.as_deref();
        let processed = images
            .par_iter()
            .zip(soft.par_iter())
            .map(|(file, (id, d))| {
                let image = overlays.map(|_| read_image(&file.path)).transpose()?;
                post_process(self.pipeline, id, d, image.as_ref(), overlays)
            })
            .collect::<Result<Vec<_>>>()?;
        write_outputs(processed, seconds, oof, truth, outputs).map(Some)
    }

    /// Predicts `images` in order, appends each image's soft detections to `oof`, and
    /// post-processes each on rayon's threads while the model predicts the next (writing its
    /// overlay PNG into `overlays`); `progress(done)` after each image. Returns the processed
    /// images in `images` order.
    ///
    /// # Errors
    /// The first image that fails to read, predict or post-process, by id. Once an image has
    /// failed post-processing, no further image is predicted.
    pub fn predict_images(
        &self,
        images: &[ImageFile],
        mut oof: Option<&mut OofWriter>,
        overlays: Option<&Path>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Processed>> {
        let (tx, rx) = mpsc::channel::<(usize, String, SoftDetections, Image)>();
        let pipeline = self.pipeline;
        let failed = AtomicBool::new(false);
        let mut results = std::thread::scope(|scope| -> Result<Vec<(usize, Result<Processed>)>> {
            // Dropped on every return, so that the post-processing thread always finishes.
            let tx = tx;
            let failed = &failed;
            // Post-processing of image i runs on rayon's threads while the model predicts i + 1.
            let post = scope.spawn(move || {
                rx.into_iter()
                    .par_bridge()
                    .map(|(i, id, soft, image)| {
                        let r = post_process(pipeline, &id, &soft, Some(&image), overlays);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        (i, r)
                    })
                    .collect::<Vec<_>>()
            });
            for (i, file) in images.iter().enumerate() {
                if failed.load(Ordering::Relaxed) {
                    break; // the error is reported below, by image
                }
                let image = read_image(&file.path)?;
                let soft = self.predict(&image)?;
                if let Some(w) = oof.as_deref_mut() {
                    w.write_image(&file.id, &soft)?;
                }
                // The receiver hangs up only when the post-processing thread ends, after `tx`.
                let _ = tx.send((i, file.id.clone(), soft, image));
                progress(i + 1);
            }
            drop(tx);
            Ok(post.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        })?;
        results.sort_by_key(|(i, _)| *i);
        let processed = results.into_iter().map(|(_, r)| r).collect::<Result<Vec<_>>>()?;
        debug_assert_eq!(processed.len(), images.len(), "every image predicted without an error");
        Ok(processed)
    }

    /// The soft detections of one image, normalised and padded as the members were trained.
    ///
    /// # Errors
    /// The ensemble's.
    pub fn predict(&self, image: &Image) -> Result<SoftDetections> {
        let size = image.size();
        let padded = padded_size(size, self.input.size_divisor);
        let mut buf = vec![0f32; 3 * padded.pixels()];
        normalize_into(image, padded, self.input.pad_value, &mut buf);
        let t = Tensor::from_slice(&buf)
            .view([1, 3, padded.height as i64, padded.width as i64])
            .to_device(self.device);
        Ok(self.ensemble.predict(&t, size)?.soft)
    }
}

/// The soft detections of items `0..n` predicted by the ranks of `group` together: rank `r`
/// calls `predict` on the `r`-th contiguous share and writes the results to `parts[r]` (an OOF
/// file); rank 0 gets every item's, in order, read back from all the parts (which it removes),
/// the others `None`. `progress(done)` counts this rank's items.
///
/// # Errors
/// This rank's failure to predict or write; [`Error::Peer`] naming the first other rank that
/// failed; a failing collective. The part files are removed on every error.
pub(crate) fn predict_shared(
    group: &ProcessGroup,
    parts: &[PathBuf],
    n: usize,
    mut predict: impl FnMut(usize) -> Result<(String, SoftDetections)>,
    progress: &mut dyn FnMut(usize),
) -> Result<Option<Vec<(String, SoftDetections)>>> {
    let (rank, world) = (group.rank(), group.world_size());
    let share = |r: usize| r * n / world..(r + 1) * n / world;
    let mine = (|| -> Result<()> {
        let mut part = OofWriter::create(&parts[rank])?;
        for (k, i) in share(rank).enumerate() {
            let (id, soft) = predict(i)?;
            part.write_image(&id, &soft)?;
            progress(k + 1);
        }
        part.finish()?;
        Ok(())
    })();
    let failed = group.all_gather_f64(&[if mine.is_ok() { 0.0 } else { 1.0 }]);
    let first_failed = match failed {
        Ok(f) => f.iter().position(|f| f[0] != 0.0),
        Err(e) => {
            let _ = std::fs::remove_file(&parts[rank]);
            return Err(e.into());
        }
    };
    if mine.is_err() || first_failed.is_some() {
        let _ = std::fs::remove_file(&parts[rank]);
        mine?;
        return Err(Error::Peer { rank: first_failed.unwrap_or(rank), world });
    }
    if rank != 0 {
        return Ok(None);
    }
    let read = (|| {
        let mut soft = Vec::with_capacity(n);
        for part in parts {
            for record in OofReader::open(part)? {
                soft.push(record?);
            }
        }
        Ok(soft)
    })();
    for part in parts {
        let _ = std::fs::remove_file(part);
    }
    read.map(Some)
}

/// An OOF writer at `path` (if any) holding `soft`, to be finished by [`write_outputs`].
pub(crate) fn oof_of(
    path: Option<&Path>,
    soft: &[(String, SoftDetections)],
) -> Result<Option<OofWriter>> {
    let mut oof = path.map(OofWriter::create).transpose()?;
    if let Some(w) = oof.as_mut() {
        for (id, d) in soft {
            w.write_image(id, d)?;
        }
    }
    Ok(oof)
}

/// The files of a run from its post-processed images: the OOF file `oof` was filled with, the
/// submission, the COCO results, and the metric against the truth.
fn write_outputs(
    processed: Vec<Processed>,
    seconds: f64,
    oof: Option<OofWriter>,
    truth: Option<PredictedTruth>,
    outputs: &Outputs,
) -> Result<InferenceReport> {
    let mut written = Vec::new();
    if let Some(w) = oof {
        written.push(w.finish()?);
    }
    if let Some(path) = &outputs.submission {
        cellseg_postproc::output::write_kaggle_csv(path, &processed)?;
        written.push(path.clone());
    }
    if let Some(path) = &outputs.coco {
        let all: Vec<_> = processed
            .iter()
            .flat_map(|p| coco_results(p, CocoImageId::Str(p.image_id.clone()), 1))
            .collect();
        write_coco_results(path, &all)?;
        written.push(path.clone());
    }
    let metric = match (&outputs.truth, truth) {
        (Some(path), Some(t)) => {
            let mut m = score(path, &t.images, &processed)?;
            m.ignored_truth = t.ignored;
            Some(m)
        }
        _ => None,
    };
    Ok(InferenceReport { processed, seconds, metric, written })
}

/// Creates the overlay folder of `outputs`, if any.
fn create_overlays_dir(outputs: &Outputs) -> Result<()> {
    if let Some(dir) = &outputs.overlays {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Output { path: dir.clone(), reason: e.to_string() })?;
    }
    Ok(())
}

/// The part files of soft detections, one per rank: beside the first output file (a folder the
/// ranks share, as on one machine), else in the temporary folder under the truth's name.
pub(crate) fn shard_parts(outputs: &Outputs, world: usize) -> Vec<PathBuf> {
    let first = [&outputs.submission, &outputs.oof, &outputs.coco].into_iter().flatten().next();
    let (dir, name) = match (first, &outputs.truth) {
        (Some(f), _) => (f.parent().map(Path::to_path_buf).unwrap_or_default(), f.file_name()),
        (None, Some(t)) => (std::env::temp_dir(), t.file_name()),
        (None, None) => (std::env::temp_dir(), None),
    };
    let name = name.map_or("cellseg".into(), |n| n.to_string_lossy().into_owned());
    (0..world).map(|r| dir.join(format!(".{name}.rank{r}-of-{world}.oof"))).collect()
}

/// Post-processes one image and writes its overlay.
pub(crate) fn post_process(
    pipeline: &Pipeline,
    id: &str,
    soft: &SoftDetections,
    image: Option<&Image>,
    overlays: Option<&Path>,
) -> Result<Processed> {
    let p = pipeline
        .run(id, soft)
        .map_err(|e| Error::Postproc { id: id.to_string(), source: Box::new(e) })?;
    if let (Some(dir), Some(image)) = (overlays, image) {
        cellseg_train::overlay::write_overlay(
            &dir.join(format!("{id}.png")),
            image,
            &p.detections,
        )?;
    }
    Ok(p)
}

/// Checks that every output file can be created (its folder exists and is writable) before any
/// work, by creating and removing a probe file beside it.
///
/// # Errors
/// [`Error::Output`] naming the path.
pub fn check_outputs(outputs: &Outputs) -> Result<()> {
    for path in [&outputs.submission, &outputs.coco, &outputs.oof].into_iter().flatten() {
        let fail = |reason: String| Error::Output { path: path.clone(), reason };
        if path.is_dir() {
            return Err(fail("it is a folder".into()));
        }
        let name = path.file_name().ok_or_else(|| fail("no file name".into()))?;
        let probe = path.with_file_name(format!(
            ".{}.probe-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::File::create(&probe).map_err(|e| fail(e.to_string()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

/// The truth of every image, in `images` order, under the workspace's superset rule
/// ([`truth_of_predicted`]): truth images not in `images` are left out and listed.
///
/// # Errors
/// The truth CSV's read errors; [`Error::TruthMismatch`] for an image without a truth row or
/// whose size differs from the truth's.
pub fn truth_for(path: &Path, images: &[ImageFile]) -> Result<PredictedTruth> {
    let ids: Vec<&str> = images.iter().map(|f| f.id.as_str()).collect();
    let bad = |reason: String| Error::TruthMismatch { path: path.to_path_buf(), reason };
    let t = match truth_of_predicted(load_truth_csv(path)?, &ids, path) {
        Err(cellseg_metrics::Error::MissingIds { ids, .. }) => {
            let f = images.iter().find(|f| f.id == ids[0]).expect("a listed image");
            return Err(bad(format!(
                "no row for image `{}` ({}){}",
                f.id,
                f.path.display(),
                if ids.len() > 1 { format!(" and {} more", ids.len() - 1) } else { String::new() }
            )));
        }
        r => r?,
    };
    for (f, t) in images.iter().zip(&t.images) {
        if t.size != f.size {
            return Err(bad(format!(
                "image `{}` is {}x{} but its truth rows say {}x{}",
                f.id, f.size.height, f.size.width, t.size.height, t.size.width
            )));
        }
    }
    Ok(t)
}

/// The competition metric of `processed` against `truth` (same order), from the submission
/// rows as the `evaluate` example reads them.
///
/// # Errors
/// [`Error::TruthMismatch`] for a prediction that does not encode at the truth's size; the
/// metric's errors.
pub fn score(
    path: &Path,
    truth: &[TruthImage],
    processed: &[Processed],
) -> Result<CompetitionReport> {
    let preds = truth
        .iter()
        .zip(processed)
        .map(|(t, p)| {
            kaggle_rows(p)
                .iter()
                .filter_map(|row| row.split_once(',').map(|(_, rle)| rle.to_string()))
                .filter(|rle| !rle.is_empty())
                .map(|rle| KaggleRle::parse(&rle, t.size))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::TruthMismatch {
                    path: path.to_path_buf(),
                    reason: format!("prediction of `{}` does not encode: {e}", t.id),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(evaluate_competition(truth, &preds)?)
}
