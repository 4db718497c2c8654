//! The Sartorius competition layout: `train.csv` + `train/{id}.png`, `test/`, and the optional
//! folder of corrected astro masks.
//!
//! `train.csv` has one row per instance (`id, annotation, width, height, cell_type, plate_time,
//! sample_date, sample_id, elapsed_timedelta`), `annotation` a row-major, 1-based Kaggle RLE. Rows
//! are grouped by `id`, images sorted by id (pandas `groupby`). Training masks get the seed's "fix"
//! (`SEED.md` §1.3): every instance's holes are filled (`scipy.ndimage.binary_fill_holes`), then, if
//! a corrected-mask PNG `{id}.png` exists, each instance is clipped to its red channel > 0 (Heng's
//! astro masks); boxes are the tight boxes of the resulting masks, and an instance emptied by the
//! clip keeps box `(0,0,0,0)` (the random crop drops it later, as in the seed). The seed validates
//! on the raw annotations: use [`SartoriusOptions::validation`] for those.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cellseg_core::{BoxXyxy, CellType, CroppedMask, ImageSize, Instances};
use rayon::prelude::*;

use crate::csv::{CsvFile, parse_usize};
use crate::fill_holes::fill_holes;
use crate::raster::{Image, read_image, read_image_size};
use crate::sample::{Sample, SampleSource};
use crate::skip::{Skipped, Strictness, skip_or_fail};
use crate::{Error, Result};

/// The three train images with wrong annotations (seed `WRONG_ANNOTATIONS`).
pub const WRONG_ANNOTATIONS: [&str; 3] = ["03b27b381a5f", "e92c56871769", "eec79772cb99"];

/// How to read `train.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct SartoriusOptions {
    /// Drop [`WRONG_ANNOTATIONS`] (seed `remove_anomalies=True`; default true).
    pub remove_anomalies: bool,
    /// Fill the holes of every instance (seed `fix=True` for training; default true).
    pub fill_holes: bool,
    /// Folder of corrected masks (`{id}.png`, red channel > 0 = foreground; seed `hck_fix/`,
    /// SEED.md §1.3). Every astro image must have one (an error names a missing one); another
    /// image is clipped when its file exists.
    pub corrected_masks: Option<PathBuf>,
    /// Check each image exists and has the CSV's width / height (reads PNG headers; default true).
    pub check_images: bool,
    /// Strict (default) or lenient handling of bad rows and images.
    pub strictness: Strictness,
}

impl Default for SartoriusOptions {
    fn default() -> Self {
        Self {
            remove_anomalies: true,
            fill_holes: true,
            corrected_masks: None,
            check_images: true,
            strictness: Strictness::Strict,
        }
    }
}

impl SartoriusOptions {
    /// The seed's validation ground truth: raw annotations, no hole filling, no clip.
    pub fn validation() -> Self {
        Self { fill_holes: false, corrected_masks: None, ..Self::default() }
    }
}

/// One annotated train image.
#[derive(Debug, Clone, PartialEq)]
pub struct SartoriusImage {
    /// The competition id (`0030fd0e6378`).
    pub id: String,
    /// `train/{id}.png`.
    pub path: PathBuf,
    /// Height × width (from the CSV).
    pub size: ImageSize,
    /// The cell type (label shsy5y=0, astro=1, cort=2).
    pub cell_type: CellType,
    /// `sample_id` (empty in some partial copies of the data).
    pub sample_id: String,
    /// `sample_id.split('_')[0]`, e.g. `shsy5y[diff]`.
    pub plate: Option<String>,
    /// `sample_id.split('_')[1][:-2]`, e.g. `E10` from `E10-4`.
    pub well: Option<String>,
    /// `plate + "_" + well`, the GroupKFold group.
    pub plate_well: Option<String>,
    /// The 1-based CSV line of each instance.
    pub lines: Vec<usize>,
    /// Ground truth (labels = `cell_type.label()`).
    pub instances: Instances,
}

impl SartoriusImage {
    /// Decodes the image.
    ///
    /// # Errors
    /// [`Error::Io`] (missing), [`Error::ImageDecode`] (corrupt).
    pub fn load_image(&self) -> Result<Image> {
        read_image(&self.path)
    }

    /// The image with its ground truth.
    ///
    /// # Errors
    /// As [`SartoriusImage::load_image`].
    pub fn to_sample(&self) -> Result<Sample> {
        Ok(Sample {
            id: self.id.clone(),
            image: self.load_image()?,
            instances: self.instances.clone(),
        })
    }
}

/// `(plate, well, plate_well)` from a `sample_id` such as `shsy5y[diff]_E10-4_Vessel-714_Ph_3`.
pub fn plate_well(sample_id: &str) -> Option<(String, String, String)> {
    let mut parts = sample_id.split('_');
    let plate = parts.next().filter(|p| !p.is_empty())?;
    let well_field = parts.next()?;
    // python `[:-2]` drops the last two characters (`-4`)
    let n = well_field.chars().count();
    let well: String = well_field.chars().take(n.saturating_sub(2)).collect();
    Some((plate.to_string(), well.clone(), format!("{plate}_{well}")))
}

/// The annotated train images of a `train.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct SartoriusDataset {
    /// The CSV read.
    pub csv: PathBuf,
    /// Images sorted by id.
    pub images: Vec<SartoriusImage>,
    /// What a lenient read skipped (always empty in strict mode).
    pub skipped: Vec<Skipped>,
    /// The [`WRONG_ANNOTATIONS`] that were in the CSV and were dropped (`remove_anomalies`).
    pub removed_anomalies: Vec<String>,
}

struct Row {
    line: usize,
    rle: String,
    size: ImageSize,
    cell_type: String,
    sample_id: String,
}

impl SartoriusDataset {
    /// Reads the competition layout under `root`: `root/train.csv` and `root/train/`.
    ///
    /// # Errors
    /// See [`SartoriusDataset::read_csv`].
    pub fn read(root: &Path, options: &SartoriusOptions) -> Result<Self> {
        Self::read_csv(&root.join("train.csv"), &root.join("train"), options)
    }

    /// Reads `csv` with its images in `image_dir` (`{id}.png`).
    ///
    /// # Errors
    /// Each names the file and the CSV line: [`Error::Csv`] (malformed row, missing column),
    /// [`Error::Rle`] (bad RLE), [`Error::AnnotationOutside`] (a run beyond the image),
    /// [`Error::SizeMismatch`] (width / height differing between rows of an image, or from the
    /// PNG), [`Error::UnknownCellType`], [`Error::MissingImage`], [`Error::ImageDecode`] (a PNG
    /// whose header cannot be read). With [`Strictness::Lenient`] the bad row or image is skipped
    /// instead, logged and listed in [`SartoriusDataset::skipped`].
    pub fn read_csv(csv: &Path, image_dir: &Path, options: &SartoriusOptions) -> Result<Self> {
        let file = CsvFile::read(csv)?;
        let [c_id, c_ann, c_w, c_h, c_type, c_sample] =
            file.columns(["id", "annotation", "width", "height", "cell_type", "sample_id"], csv)?;
        let mut skipped = Vec::new();
        let strict = options.strictness;
        for (line, e) in file.bad {
            skip_or_fail(strict, csv, format!("line {line}"), e, &mut skipped)?;
        }
        if let Some(dir) = &options.corrected_masks
            && !dir.is_dir()
        {
            return Err(Error::CorrectedMasksFolder { dir: dir.clone() });
        }
        let mut by_id: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for (line, f) in &file.rows {
            let parsed = (|| -> Result<Row> {
                let w = parse_usize(&f[c_w], "width", csv, *line)?;
                let h = parse_usize(&f[c_h], "height", csv, *line)?;
                Ok(Row {
                    line: *line,
                    rle: f[c_ann].clone(),
                    size: ImageSize::new(h, w),
                    cell_type: f[c_type].trim().to_string(),
                    sample_id: f[c_sample].trim().to_string(),
                })
            })();
            match parsed {
                Ok(r) => by_id.entry(f[c_id].trim().to_string()).or_default().push(r),
                Err(e) => skip_or_fail(strict, csv, format!("line {}", line), e, &mut skipped)?,
            }
        }
        let mut removed_anomalies = Vec::new();
        if options.remove_anomalies {
            for id in WRONG_ANNOTATIONS {
                if by_id.remove(id).is_some() {
                    tracing::info!(id, "removed a known wrong annotation (remove_anomalies)");
                    removed_anomalies.push(id.to_string());
                }
            }
        }
        let results: Vec<(String, Result<BuiltImage>)> = by_id
            .into_par_iter()
            .map(|(id, rows)| {
                let r = build_image(&id, rows, csv, image_dir, options);
                (id, r)
            })
            .collect();
        let mut images = Vec::with_capacity(results.len());
        for (id, r) in results {
            match r {
                Ok((img, row_errors)) => {
                    for (line, e) in row_errors {
                        skip_or_fail(strict, csv, format!("line {}", line), e, &mut skipped)?;
                    }
                    images.push(img);
                }
                Err(e) => {
                    let row = match &e {
                        Error::MissingImage { row, .. }
                        | Error::SizeMismatch { row, .. }
                        | Error::MissingCorrectedMask { row, .. } => row.clone(),
                        _ => format!("image {id}"),
                    };
                    skip_or_fail(strict, csv, row, e, &mut skipped)?;
                }
            }
        }
        Ok(Self { csv: csv.to_path_buf(), images, skipped, removed_anomalies })
    }

    /// Image ids, in order.
    pub fn ids(&self) -> Vec<&str> {
        self.images.iter().map(|i| i.id.as_str()).collect()
    }

    /// The seed's folds: `GroupKFold(n_splits)` on `plate_well`.
    ///
    /// # Errors
    /// [`Error::MissingGroup`] when an image has no `sample_id`, [`Error::TooFewGroups`].
    pub fn group_kfold(&self, n_splits: usize) -> Result<Vec<usize>> {
        crate::folds::group_kfold(&self.groups()?, n_splits)
    }

    /// The `plate_well` group of every image, in order.
    ///
    /// # Errors
    /// [`Error::MissingGroup`] when an image has no `sample_id`.
    pub fn groups(&self) -> Result<Vec<&str>> {
        self.images
            .iter()
            .map(|i| {
                i.plate_well.as_deref().ok_or_else(|| Error::MissingGroup { id: i.id.clone() })
            })
            .collect()
    }

    /// The images at `indices` (a fold's train or validation part).
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self {
            csv: self.csv.clone(),
            images: indices.iter().map(|&i| self.images[i].clone()).collect(),
            skipped: Vec::new(),
            removed_anomalies: self.removed_anomalies.clone(),
        }
    }
}

impl SampleSource for SartoriusDataset {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn load(&self, index: usize) -> Result<Sample> {
        self.images[index].to_sample()
    }
}

/// An image and the errors of its bad rows (line, error).
type BuiltImage = (SartoriusImage, Vec<(usize, Error)>);

/// Builds one image; row-level errors come back separately (so a lenient read skips the row only).
fn build_image(
    id: &str,
    rows: Vec<Row>,
    csv: &Path,
    image_dir: &Path,
    options: &SartoriusOptions,
) -> Result<BuiltImage> {
    let first = &rows[0];
    let size = first.size;
    let path = image_dir.join(format!("{id}.png"));
    let cell_type: CellType = first.cell_type.parse().map_err(|_| Error::UnknownCellType {
        path: csv.to_path_buf(),
        row: format!("line {}", first.line),
        value: first.cell_type.clone(),
    })?;
    if options.check_images {
        if !path.is_file() {
            return Err(Error::MissingImage {
                image: path,
                annotations: csv.to_path_buf(),
                row: format!("line {}", first.line),
            });
        }
        let got = read_image_size(&path)?;
        if got != size {
            return Err(Error::SizeMismatch {
                path: csv.to_path_buf(),
                row: format!("line {}", first.line),
                image_id: id.to_string(),
                ann_h: size.height as u32,
                ann_w: size.width as u32,
                what: format!("image {}", path.display()),
                got_h: got.height as u32,
                got_w: got.width as u32,
            });
        }
    }
    let clip = match &options.corrected_masks {
        Some(dir) => {
            let p = dir.join(format!("{id}.png"));
            if p.is_file() {
                let img = read_image(&p)?;
                if img.size() != size {
                    return Err(Error::SizeMismatch {
                        path: csv.to_path_buf(),
                        row: format!("line {}", first.line),
                        image_id: id.to_string(),
                        ann_h: size.height as u32,
                        ann_w: size.width as u32,
                        what: format!("corrected mask {}", p.display()),
                        got_h: img.size().height as u32,
                        got_w: img.size().width as u32,
                    });
                }
                Some(img)
            } else if cell_type == CellType::Astro {
                return Err(Error::MissingCorrectedMask {
                    id: id.to_string(),
                    mask: p,
                    annotations: csv.to_path_buf(),
                    row: format!("line {}", first.line),
                });
            } else {
                None
            }
        }
        None => None,
    };
    let mut row_errors = Vec::new();
    let mut lines = Vec::new();
    let mut masks = Vec::new();
    for r in &rows {
        if r.size != size {
            row_errors.push((
                r.line,
                Error::SizeMismatch {
                    path: csv.to_path_buf(),
                    row: format!("line {}", r.line),
                    image_id: id.to_string(),
                    ann_h: r.size.height as u32,
                    ann_w: r.size.width as u32,
                    what: format!("line {} of the same image", first.line),
                    got_h: size.height as u32,
                    got_w: size.width as u32,
                },
            ));
            continue;
        }
        if r.cell_type != first.cell_type || r.sample_id != first.sample_id {
            row_errors.push((
                r.line,
                Error::Csv {
                    path: csv.to_path_buf(),
                    line: r.line,
                    message: format!(
                        "image {id}: cell_type / sample_id differ from line {}",
                        first.line
                    ),
                },
            ));
            continue;
        }
        match cellseg_rle::kaggle::decode_cropped(&r.rle, size) {
            Ok(m) => {
                lines.push(r.line);
                masks.push(m);
            }
            Err(e) => {
                row_errors.push((r.line, rle_error(csv, format!("line {}", r.line), id, size, e)))
            }
        }
    }
    let masks: Vec<CroppedMask> = masks
        .into_iter()
        .map(|m| {
            let m = if options.fill_holes { fill_holes(&m) } else { m };
            match &clip {
                Some(c) => clip_to_red(&m, c),
                None => m,
            }
        })
        .collect();
    let emptied = masks.iter().filter(|m| m.area() == 0).count();
    if emptied > 0 {
        tracing::debug!(id, emptied, "instances emptied by the corrected mask keep box (0,0,0,0)");
    }
    let boxes: Vec<BoxXyxy> = masks.iter().map(|m| m.bbox().unwrap_or_default()).collect();
    let labels = vec![cell_type.label(); masks.len()];
    let instances = Instances::new(size, boxes, labels, masks)?;
    let pw = plate_well(&first.sample_id);
    Ok((
        SartoriusImage {
            id: id.to_string(),
            path,
            size,
            cell_type,
            sample_id: first.sample_id.clone(),
            plate: pw.as_ref().map(|p| p.0.clone()),
            well: pw.as_ref().map(|p| p.1.clone()),
            plate_well: pw.map(|p| p.2),
            lines,
            instances,
        },
        row_errors,
    ))
}

/// Maps an RLE error to [`Error::AnnotationOutside`] when a run leaves the image, else [`Error::Rle`].
pub(crate) fn rle_error(
    path: &Path,
    row: String,
    image_id: &str,
    size: ImageSize,
    e: cellseg_rle::Error,
) -> Error {
    if let cellseg_rle::Error::RunOutOfBounds { .. } = e {
        Error::AnnotationOutside {
            path: path.to_path_buf(),
            row,
            image_id: image_id.to_string(),
            height: size.height,
            width: size.width,
            detail: e.to_string(),
        }
    } else {
        Error::Rle {
            path: path.to_path_buf(),
            row,
            image_id: image_id.to_string(),
            source: Box::new(e),
        }
    }
}

/// `m` restricted to the pixels whose red channel (gray for 1-channel PNGs) is > 0 (the seed's
/// `mask_fix[:, :, 2] > 0` in BGR). A clip image of another size clips nothing outside itself.
fn clip_to_red(m: &CroppedMask, clip: &Image) -> CroppedMask {
    let (top, left, h, w) = m.rect();
    let cs = clip.size();
    let mut data = m.as_slice().to_vec();
    for r in 0..h {
        for c in 0..w {
            let (ir, ic) = (top + r, left + c);
            let keep = ir < cs.height && ic < cs.width && clip.get(ir, ic, 0) > 0;
            if !keep {
                data[r * w + c] = 0;
            }
        }
    }
    let full = CroppedMask::new(m.image_size(), top, left, h, w, data).expect("same rectangle");
    // tighten the rectangle
    if full.area() == 0 { CroppedMask::empty(m.image_size()) } else { full.to_full().to_cropped() }
}

/// Writes `samples` in the competition layout: `image_dir/{id}.png` and `csv` with the columns
/// `id,annotation,width,height,cell_type,sample_id` (one row per instance, row-major 1-based RLE;
/// the subset of `train.csv` that [`SartoriusDataset::read_csv`] and truth readers need; the
/// `sample_id` is the id). `cell_type(sample)` names each image's type. An image
/// without instances gets no row, as in `train.csv`. Every file is written atomically.
///
/// # Errors
/// [`Error::Io`] / [`Error::ImageEncode`] naming the file.
pub fn write_annotated(
    csv: &Path,
    image_dir: &Path,
    samples: &[Sample],
    cell_type: impl Fn(&Sample) -> String,
) -> Result<()> {
    std::fs::create_dir_all(image_dir).map_err(|e| Error::io(image_dir, e))?;
    let mut text = String::from("id,annotation,width,height,cell_type,sample_id\n");
    for s in samples {
        crate::raster::write_png(&s.image, &image_dir.join(format!("{}.png", s.id)))?;
        let (size, t) = (s.image.size(), cell_type(s));
        for m in &s.instances.masks {
            let rle = cellseg_rle::kaggle::encode_cropped(m);
            let (id, w, h) = (&s.id, size.width, size.height);
            text.push_str(&format!("{id},{rle},{w},{h},{t},{id}\n"));
        }
    }
    crate::raster::write_atomically(csv, text.as_bytes())
}

/// The unlabeled images of a `test/` folder (`{id}.png`), sorted by id.
///
/// # Errors
/// [`Error::Io`] when the folder cannot be listed.
pub fn read_test_images(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            out.push((id, path));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests;
