//! Writers: Kaggle submission rows and COCO results JSON.
//!
//! Files are written to a temporary sibling and renamed into place, so a failed run never leaves a
//! partial file.

use std::io::Write;
use std::path::{Path, PathBuf};

use cellseg_rle::CocoRle;
use serde::{Deserialize, Serialize};

use crate::{Error, Processed, Result};

/// The Kaggle rows `id,<row-major 1-based RLE>` of one image, one per instance in output order. An
/// image without instances gets one row `id,` (empty prediction), as the competition requires; an
/// instance emptied by overlap removal gives `id,` as the seed's `rle_encoding` did.
pub fn kaggle_rows(image: &Processed) -> Vec<String> {
    if image.detections.masks.is_empty() {
        return vec![format!("{},", image.image_id)];
    }
    image
        .detections
        .masks
        .iter()
        .map(|m| format!("{},{}", image.image_id, cellseg_rle::kaggle::encode_cropped(m)))
        .collect()
}

/// Writes a Kaggle submission (`id,predicted` header, then [`kaggle_rows`] of every image).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_kaggle_csv(path: impl AsRef<Path>, images: &[Processed]) -> Result<()> {
    let mut text = String::from("id,predicted\n");
    for image in images {
        for row in kaggle_rows(image) {
            text.push_str(&row);
            text.push('\n');
        }
    }
    write_atomic(path.as_ref(), text.as_bytes())
}

/// A COCO image id: a number or, for Sartorius, the string id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CocoImageId {
    /// Numeric id (COCO, LIVECell).
    Int(u64),
    /// String id (Sartorius).
    Str(String),
}

/// A compressed COCO RLE, as pycocotools writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoSegmentation {
    /// `[height, width]`.
    pub size: [usize; 2],
    /// pycocotools' compressed counts string (column-major).
    pub counts: String,
}

/// One entry of a COCO results file (`loadRes` format for `segm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoResult {
    /// The image.
    pub image_id: CocoImageId,
    /// `label + category_offset`.
    pub category_id: usize,
    /// The mask.
    pub segmentation: CocoSegmentation,
    /// `[x, y, w, h]` of the mask, as pycocotools' `toBbox`.
    pub bbox: [f64; 4],
    /// The detection score.
    pub score: f32,
}

/// The COCO results of one image; `category_id = label + category_offset` (1 for Sartorius
/// categories `1 shsy5y, 2 astro, 3 cort`). Emptied masks are skipped (COCO has no use for them).
pub fn coco_results(
    image: &Processed,
    image_id: CocoImageId,
    category_offset: usize,
) -> Vec<CocoResult> {
    let d = &image.detections;
    d.masks
        .iter()
        .enumerate()
        .filter(|(_, m)| m.area() > 0)
        .map(|(k, m)| {
            let rle = CocoRle::from_cropped(m);
            CocoResult {
                image_id: image_id.clone(),
                category_id: d.labels[k] + category_offset,
                segmentation: CocoSegmentation {
                    size: [d.image_size.height, d.image_size.width],
                    counts: rle.to_counts_string(),
                },
                bbox: rle.to_bbox(),
                score: d.scores[k],
            }
        })
        .collect()
}

/// Writes a COCO results JSON array.
///
/// # Errors
/// [`Error::Json`] or [`Error::Io`] naming the file.
pub fn write_coco_results(path: impl AsRef<Path>, results: &[CocoResult]) -> Result<()> {
    let path = path.as_ref();
    let bytes = serde_json::to_vec(results)
        .map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let name = path.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::{BitMask, BoxXyxy, Detections, ImageSize};

    fn processed() -> Processed {
        let s = ImageSize::new(3, 4);
        let m =
            BitMask::from_vec(s, vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap().to_cropped();
        Processed {
            image_id: "abc".into(),
            cell_type: None,
            detections: Detections::new(s, vec![BoxXyxy::default()], vec![0.5], vec![1], vec![m])
                .unwrap(),
            source_indices: vec![0],
        }
    }

    #[test]
    fn kaggle_rows_are_row_major_and_empty_images_keep_a_row() {
        assert_eq!(kaggle_rows(&processed()), vec!["abc,2 2 6 1".to_string()]);
        let none = Processed { detections: Detections::empty(ImageSize::new(3, 4)), ..processed() };
        assert_eq!(kaggle_rows(&none), vec!["abc,".to_string()]);
    }

    #[test]
    fn files_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("sub.csv");
        write_kaggle_csv(&csv, &[processed()]).unwrap();
        assert_eq!(std::fs::read_to_string(&csv).unwrap(), "id,predicted\nabc,2 2 6 1\n");
        let json = dir.path().join("res.json");
        let res = coco_results(&processed(), CocoImageId::Str("abc".into()), 1);
        write_coco_results(&json, &res).unwrap();
        let back: Vec<CocoResult> =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(back, res);
        assert_eq!(back[0].category_id, 2);
        assert_eq!(back[0].bbox, [1.0, 0.0, 2.0, 2.0]);
        let err = write_kaggle_csv(dir.path().join("missing/sub.csv"), &[]).unwrap_err();
        assert!(err.to_string().contains("missing/sub.csv"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
