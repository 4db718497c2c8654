//! LIVECell: COCO JSONs with polygons (`annotations/LIVECell/livecell_coco_{train,val,test}.json`,
//! or the per-cell-line `LIVECell_single_cells/*/*.json` with dict-shaped `annotations`) and 8-bit
//! LZW-compressed TIFFs under `images/livecell_train_val_images/` and `images/livecell_test_images/`
//! (either directly or in one sub-folder per cell line, as the seed's copy had).
//!
//! Labels are the seed's 8 `LIVECELL_CLASSES` ([`LivecellClass`]), taken from the file-name prefix
//! (`A172_Phase_…tif` → a172 = 1). Boxes are the masks' tight boxes (the seed truncated the COCO
//! `bbox` to integers, which can cut the mask's last row or column by one pixel).

use std::path::{Path, PathBuf};

use cellseg_core::{ImageSize, Instances, LivecellClass};

use crate::coco::CocoFile;
use crate::raster::{Image, read_image, read_image_size};
use crate::sample::{Sample, SampleSource};
use crate::skip::{Skipped, Strictness, skip_or_fail};
use crate::{Error, Result};

/// One LIVECell image.
#[derive(Debug, Clone, PartialEq)]
pub struct LivecellImage {
    /// COCO image id.
    pub id: String,
    /// `file_name` of the JSON.
    pub file_name: String,
    /// Where the TIFF is.
    pub path: PathBuf,
    /// The cell line.
    pub class: LivecellClass,
    /// Ground truth, labels = `class.label()`.
    pub instances: Instances,
}

impl LivecellImage {
    /// The image with its ground truth.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::ImageDecode`].
    pub fn to_sample(&self) -> Result<Sample> {
        Ok(Sample {
            id: self.file_name.clone(),
            image: self.load_image()?,
            instances: self.instances.clone(),
        })
    }

    /// Decodes the TIFF.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::ImageDecode`].
    pub fn load_image(&self) -> Result<Image> {
        read_image(&self.path)
    }
}

/// The images of one LIVECell JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct LivecellDataset {
    /// The JSON read.
    pub json: PathBuf,
    /// Images in file order.
    pub images: Vec<LivecellImage>,
    /// What a lenient read skipped.
    pub skipped: Vec<Skipped>,
}

/// The image folder of a JSON: `livecell_test_images` when its name contains `test`, else
/// `livecell_train_val_images` (seed `prepare_extra_data`).
pub fn split_folder(json: &Path) -> &'static str {
    let name = json.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.contains("test") { "livecell_test_images" } else { "livecell_train_val_images" }
}

impl LivecellDataset {
    /// Reads `json`, finding each TIFF under `images_root/<split folder>/[<CellLine>/]file_name`.
    ///
    /// # Errors
    /// Those of [`CocoFile::read`], and per image (naming the JSON and the image id):
    /// [`Error::UnknownCellType`] (file-name prefix), [`Error::MissingImage`],
    /// [`Error::ImageDecode`] (unreadable TIFF header), [`Error::SizeMismatch`] (TIFF size differs
    /// from the JSON). [`Strictness::Lenient`] skips such images with a logged reason.
    pub fn read(json: &Path, images_root: &Path, strictness: Strictness) -> Result<Self> {
        let coco = CocoFile::read(json, strictness)?;
        let mut skipped = coco.skipped;
        let folder = images_root.join(split_folder(json));
        let mut images = Vec::with_capacity(coco.images.len());
        for im in coco.images {
            let row = format!("image {}", im.id);
            match resolve(&im, &folder, json) {
                Ok((path, class)) => {
                    let mut instances = im.instances;
                    instances.labels.iter_mut().for_each(|l| *l = class.label());
                    images.push(LivecellImage {
                        id: im.id,
                        file_name: im.file_name,
                        path,
                        class,
                        instances,
                    });
                }
                Err(e) => skip_or_fail(strictness, json, row, e, &mut skipped)?,
            }
        }
        Ok(Self { json: json.to_path_buf(), images, skipped })
    }
}

fn resolve(
    im: &crate::coco::CocoImage,
    folder: &Path,
    json: &Path,
) -> Result<(PathBuf, LivecellClass)> {
    let prefix = im.file_name.split('_').next().unwrap_or("");
    let class: LivecellClass = prefix.parse().map_err(|_| Error::UnknownCellType {
        path: json.to_path_buf(),
        row: format!("image {}", im.id),
        value: prefix.to_string(),
    })?;
    let nested = folder.join(class.folder()).join(&im.file_name);
    let path = if nested.is_file() { nested } else { folder.join(&im.file_name) };
    if !path.is_file() {
        return Err(Error::MissingImage {
            image: path,
            annotations: json.to_path_buf(),
            row: format!("image {}", im.id),
        });
    }
    let got: ImageSize = read_image_size(&path)?;
    if got != im.size {
        return Err(Error::SizeMismatch {
            path: json.to_path_buf(),
            row: format!("image {}", im.id),
            image_id: im.id.to_string(),
            ann_h: im.size.height as u32,
            ann_w: im.size.width as u32,
            what: format!("image {}", path.display()),
            got_h: got.height as u32,
            got_w: got.width as u32,
        });
    }
    Ok((path, class))
}

impl SampleSource for LivecellDataset {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn load(&self, index: usize) -> Result<Sample> {
        self.images[index].to_sample()
    }
}

#[cfg(test)]
mod tests;
