//! DSB2018-style annotations: a CSV `ImageId,EncodedPixels,Height,Width[,…]` with one
//! **column-major** RLE per nucleus (pixel index = x·H + y + 1), images at `{dir}/{ImageId}.png`
//! (RGB or RGBA; alpha dropped). Also StarDist-style label images (one id per instance).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cellseg_core::{BitMask, ImageSize, Instances};

use crate::csv::{CsvFile, parse_usize};
use crate::raster::{read_image, read_image_size, read_label_image};
use crate::sample::{Sample, SampleSource};
use crate::sartorius::rle_error;
use crate::skip::{Skipped, Strictness, skip_or_fail};
use crate::{Error, Result};

/// One DSB image (all labels 0: nucleus).
#[derive(Debug, Clone, PartialEq)]
pub struct DsbImage {
    /// `ImageId`.
    pub id: String,
    /// `{dir}/{ImageId}.png`.
    pub path: PathBuf,
    /// 1-based CSV line of each instance.
    pub lines: Vec<usize>,
    /// Ground truth.
    pub instances: Instances,
}

/// The images of a DSB solution CSV, sorted by id.
#[derive(Debug, Clone, PartialEq)]
pub struct DsbDataset {
    /// The CSV read.
    pub csv: PathBuf,
    /// Images.
    pub images: Vec<DsbImage>,
    /// What a lenient read skipped.
    pub skipped: Vec<Skipped>,
}

impl DsbDataset {
    /// Reads `csv` and checks every image in `image_dir`.
    ///
    /// # Errors
    /// Naming the CSV and the line: [`Error::Csv`], [`Error::Rle`], [`Error::AnnotationOutside`],
    /// [`Error::SizeMismatch`] (rows of one image disagree, or the PNG differs),
    /// [`Error::MissingImage`], [`Error::ImageDecode`]. Lenient mode skips the row / image.
    pub fn read(csv: &Path, image_dir: &Path, strictness: Strictness) -> Result<Self> {
        let file = CsvFile::read(csv)?;
        let [c_id, c_rle, c_h, c_w] =
            file.columns(["ImageId", "EncodedPixels", "Height", "Width"], csv)?;
        let mut skipped = Vec::new();
        for (line, e) in file.bad {
            skip_or_fail(strictness, csv, format!("line {line}"), e, &mut skipped)?;
        }
        let mut by_id: BTreeMap<String, Vec<(usize, ImageSize, String)>> = BTreeMap::new();
        for (line, f) in &file.rows {
            let size = parse_usize(&f[c_h], "Height", csv, *line)
                .and_then(|h| Ok(ImageSize::new(h, parse_usize(&f[c_w], "Width", csv, *line)?)));
            match size {
                Ok(s) => by_id.entry(f[c_id].trim().to_string()).or_default().push((
                    *line,
                    s,
                    f[c_rle].clone(),
                )),
                Err(e) => skip_or_fail(strictness, csv, format!("line {}", line), e, &mut skipped)?,
            }
        }
        let mut images = Vec::with_capacity(by_id.len());
        for (id, rows) in by_id {
            let (first_line, size, _) = rows[0];
            let path = image_dir.join(format!("{id}.png"));
            let check = if !path.is_file() {
                Err(Error::MissingImage {
                    image: path.clone(),
                    annotations: csv.to_path_buf(),
                    row: format!("line {}", first_line),
                })
            } else {
                read_image_size(&path).and_then(|got| {
                    if got == size {
                        Ok(())
                    } else {
                        Err(Error::SizeMismatch {
                            path: csv.to_path_buf(),
                            row: format!("line {}", first_line),
                            image_id: id.clone(),
                            ann_h: size.height as u32,
                            ann_w: size.width as u32,
                            what: format!("image {}", path.display()),
                            got_h: got.height as u32,
                            got_w: got.width as u32,
                        })
                    }
                })
            };
            if let Err(e) = check {
                skip_or_fail(strictness, csv, format!("line {}", first_line), e, &mut skipped)?;
                continue;
            }
            let mut inst = Instances::empty(size);
            let mut lines = Vec::new();
            for (line, s, rle) in rows {
                let m = if s != size {
                    Err(Error::SizeMismatch {
                        path: csv.to_path_buf(),
                        row: format!("line {}", line),
                        image_id: id.clone(),
                        ann_h: s.height as u32,
                        ann_w: s.width as u32,
                        what: format!("line {first_line} of the same image"),
                        got_h: size.height as u32,
                        got_w: size.width as u32,
                    })
                } else {
                    cellseg_rle::dsb::decode_cropped(&rle, size)
                        .map_err(|e| rle_error(csv, format!("line {}", line), &id, size, e))
                };
                match m {
                    Ok(m) => {
                        inst.boxes.push(m.bbox().unwrap_or_default());
                        inst.labels.push(0);
                        inst.masks.push(m);
                        lines.push(line);
                    }
                    Err(e) => {
                        skip_or_fail(strictness, csv, format!("line {}", line), e, &mut skipped)?
                    }
                }
            }
            images.push(DsbImage { id, path, lines, instances: inst });
        }
        Ok(Self { csv: csv.to_path_buf(), images, skipped })
    }
}

impl SampleSource for DsbDataset {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn load(&self, index: usize) -> Result<Sample> {
        let im = &self.images[index];
        Ok(Sample {
            id: im.id.clone(),
            image: read_image(&im.path)?,
            instances: im.instances.clone(),
        })
    }
}

/// Reads an image and its label image (StarDist `img2d.tif` / `mask2d.tif`): one instance per
/// non-zero id, in increasing id order, label 0.
///
/// # Errors
/// [`Error::Io`], [`Error::ImageDecode`], [`Error::SizeMismatch`] when the two sizes differ.
pub fn read_label_pair(image: &Path, labels: &Path) -> Result<(Sample, Vec<u16>)> {
    let img = read_image(image)?;
    let (size, ids) = read_label_image(labels)?;
    if size != img.size() {
        return Err(Error::SizeMismatch {
            path: labels.to_path_buf(),
            row: "whole image".into(),
            image_id: image.display().to_string(),
            ann_h: size.height as u32,
            ann_w: size.width as u32,
            what: format!("image {}", image.display()),
            got_h: img.size().height as u32,
            got_w: img.size().width as u32,
        });
    }
    let mut present: Vec<u16> = ids.iter().copied().filter(|&v| v != 0).collect();
    present.sort_unstable();
    present.dedup();
    let mut inst = Instances::empty(size);
    for &id in &present {
        let data = ids.iter().map(|&v| u8::from(v == id)).collect();
        let m = BitMask::from_vec(size, data)?.to_cropped();
        inst.boxes.push(m.bbox().unwrap_or_default());
        inst.labels.push(0);
        inst.masks.push(m);
    }
    let id = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((Sample { id, image: img, instances: inst }, present))
}

#[cfg(test)]
mod tests;
