//! COCO ground-truth and result files, read as pycocotools' `COCO` and `COCO.loadRes` read them.
//!
//! Ground truth: `images` (`id`, `height`, `width`), `annotations` (`id`, `image_id`,
//! `category_id`, `area`, `bbox`, `iscrowd`, `segmentation` as polygons, uncompressed or compressed
//! RLE) and `categories`. Results: a list of `{image_id, category_id, score, bbox | segmentation}`;
//! as in `loadRes`, when the first result has a non-empty `bbox` every result's area is its box area
//! (even for segm evaluation), otherwise areas come from the masks; ids are `index + 1`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cellseg_core::ImageSize;
use cellseg_rle::CocoRle;
use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result};

/// An image id: COCO uses integers, the Sartorius COCO files use the competition's string ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum ImageId {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageId::Int(i) => write!(f, "{i}"),
            ImageId::Str(s) => f.write_str(s),
        }
    }
}

/// One image entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoImage {
    /// Its id.
    pub id: ImageId,
    /// Its size.
    pub size: ImageSize,
}

/// One annotation (ground truth) or detection (result).
#[derive(Debug, Clone, PartialEq)]
pub struct CocoAnnotation {
    /// Annotation id (results: index + 1).
    pub id: i64,
    /// Image id.
    pub image_id: ImageId,
    /// Category id.
    pub category_id: i64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// Area used for the area ranges.
    pub area: f64,
    /// Crowd flag (results: false).
    pub iscrowd: bool,
    /// Detection score (ground truth: 1).
    pub score: f64,
    /// The mask, when loaded for segm evaluation.
    pub segmentation: Option<CocoRle>,
}

/// A COCO ground-truth file.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoDataset {
    /// Where it was read from (for error messages).
    pub path: PathBuf,
    /// Images in file order.
    pub images: Vec<CocoImage>,
    /// Annotations in file order.
    pub annotations: Vec<CocoAnnotation>,
    /// Category ids in file order.
    pub categories: Vec<i64>,
}

fn field_err(path: &Path, key: String, message: impl Into<String>) -> Error {
    Error::CocoField { path: path.to_path_buf(), key, message: message.into() }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })
}

fn get<'a>(path: &Path, obj: &'a Value, key: &str, ctx: &str) -> Result<&'a Value> {
    obj.get(key).ok_or_else(|| field_err(path, format!("{ctx}.{key}"), "missing"))
}

fn as_i64(path: &Path, v: &Value, key: &str) -> Result<i64> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(field_err(path, key.to_string(), format!("expected an integer, got {v}"))),
    }
}

fn as_f64(path: &Path, v: &Value, key: &str) -> Result<f64> {
    v.as_f64()
        .ok_or_else(|| field_err(path, key.to_string(), format!("expected a number, got {v}")))
}

fn as_image_id(path: &Path, v: &Value, key: &str) -> Result<ImageId> {
    match v {
        Value::String(s) => Ok(ImageId::Str(s.clone())),
        _ => as_i64(path, v, key).map(ImageId::Int),
    }
}

fn as_bbox(path: &Path, v: &Value, key: &str) -> Result<[f64; 4]> {
    let arr = v.as_array().filter(|a| a.len() == 4).ok_or_else(|| {
        field_err(path, key.to_string(), format!("expected [x, y, w, h], got {v}"))
    })?;
    let mut b = [0.0; 4];
    for (i, x) in arr.iter().enumerate() {
        b[i] = as_f64(path, x, key)?;
    }
    Ok(b)
}

fn as_bool_flag(path: &Path, v: Option<&Value>, key: &str) -> Result<bool> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(x) => Ok(as_i64(path, x, key)? != 0),
    }
}

/// Decodes a segmentation (polygons, uncompressed or compressed RLE) for an image of `size`,
/// as `COCO.annToRLE`.
fn segmentation(path: &Path, v: &Value, key: &str, image: &CocoImage) -> Result<CocoRle> {
    let seg_err = |source: cellseg_rle::Error| Error::CocoSegmentation {
        path: path.to_path_buf(),
        key: key.to_string(),
        source: Box::new(source),
    };
    let size = image.size;
    let rle = match v {
        Value::Array(polys) => {
            let mut ps = Vec::with_capacity(polys.len());
            for (i, p) in polys.iter().enumerate() {
                let arr = p.as_array().ok_or_else(|| {
                    field_err(path, format!("{key}[{i}]"), "expected a list of coordinates")
                })?;
                let mut xy = Vec::with_capacity(arr.len());
                for c in arr {
                    xy.push(as_f64(path, c, &format!("{key}[{i}]"))?);
                }
                ps.push(xy);
            }
            CocoRle::from_polygons(&ps, size.height, size.width).map_err(seg_err)?
        }
        Value::Object(o) => {
            let sz = o.get("size").and_then(Value::as_array).filter(|a| a.len() == 2).ok_or_else(
                || field_err(path, format!("{key}.size"), "expected [height, width]"),
            )?;
            let h = as_i64(path, &sz[0], &format!("{key}.size"))?;
            let w = as_i64(path, &sz[1], &format!("{key}.size"))?;
            if h < 0 || w < 0 {
                return Err(field_err(path, format!("{key}.size"), "negative size"));
            }
            let rsize = ImageSize::new(h as usize, w as usize);
            if rsize != size {
                return Err(Error::CocoMaskSize {
                    path: path.to_path_buf(),
                    key: key.to_string(),
                    image_id: image.id.to_string(),
                    got: rsize,
                    want: size,
                });
            }
            match o.get("counts") {
                Some(Value::String(s)) => CocoRle::from_counts_str(s, rsize).map_err(seg_err)?,
                Some(Value::Array(a)) => {
                    let mut c = Vec::with_capacity(a.len());
                    for x in a {
                        c.push(as_i64(path, x, &format!("{key}.counts"))?);
                    }
                    CocoRle::from_counts_i64(&c, rsize).map_err(seg_err)?
                }
                _ => {
                    return Err(field_err(
                        path,
                        format!("{key}.counts"),
                        "expected a string or a list",
                    ));
                }
            }
        }
        _ => return Err(field_err(path, key.to_string(), "expected polygons or an RLE object")),
    };
    Ok(rle)
}

impl CocoDataset {
    /// Reads a ground-truth file; masks are decoded only when `with_masks` (segm evaluation).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Json`], [`Error::CocoField`] naming the key (e.g.
    /// `annotations[12].area`), [`Error::CocoSegmentation`], [`Error::CocoMaskSize`].
    pub fn load(path: &Path, with_masks: bool) -> Result<Self> {
        let v = read_json(path)?;
        Self::from_value(path, &v, with_masks)
    }

    /// As [`CocoDataset::load`], from parsed JSON (`path` is only used in messages).
    ///
    /// # Errors
    /// As [`CocoDataset::load`].
    pub fn from_value(path: &Path, v: &Value, with_masks: bool) -> Result<Self> {
        let arr = |key: &str| -> Result<&Vec<Value>> {
            v.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| field_err(path, key.to_string(), "missing or not a list"))
        };
        let mut images = Vec::new();
        let mut index: HashMap<ImageId, usize> = HashMap::new();
        for (i, im) in arr("images")?.iter().enumerate() {
            let ctx = format!("images[{i}]");
            let id = as_image_id(path, get(path, im, "id", &ctx)?, &format!("{ctx}.id"))?;
            let h = as_i64(path, get(path, im, "height", &ctx)?, &format!("{ctx}.height"))?;
            let w = as_i64(path, get(path, im, "width", &ctx)?, &format!("{ctx}.width"))?;
            if h < 0 || w < 0 {
                return Err(field_err(path, ctx, "negative size"));
            }
            index.insert(id.clone(), images.len());
            images.push(CocoImage { id, size: ImageSize::new(h as usize, w as usize) });
        }
        let categories = match v.get("categories").and_then(Value::as_array) {
            Some(c) => c
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let ctx = format!("categories[{i}]");
                    as_i64(path, get(path, c, "id", &ctx)?, &format!("{ctx}.id"))
                })
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let mut annotations = Vec::new();
        for (i, a) in arr("annotations")?.iter().enumerate() {
            let ctx = format!("annotations[{i}]");
            let image_id =
                as_image_id(path, get(path, a, "image_id", &ctx)?, &format!("{ctx}.image_id"))?;
            let image = index.get(&image_id).map(|&k| &images[k]).ok_or_else(|| {
                field_err(path, format!("{ctx}.image_id"), format!("no image {image_id}"))
            })?;
            let seg = if with_masks {
                Some(segmentation(
                    path,
                    get(path, a, "segmentation", &ctx)?,
                    &format!("{ctx}.segmentation"),
                    image,
                )?)
            } else {
                None
            };
            let bbox = match a.get("bbox") {
                Some(b) => as_bbox(path, b, &format!("{ctx}.bbox"))?,
                None => match &seg {
                    Some(s) => s.to_bbox(),
                    None => return Err(field_err(path, format!("{ctx}.bbox"), "missing")),
                },
            };
            annotations.push(CocoAnnotation {
                id: as_i64(path, get(path, a, "id", &ctx)?, &format!("{ctx}.id"))?,
                image_id,
                category_id: as_i64(
                    path,
                    get(path, a, "category_id", &ctx)?,
                    &format!("{ctx}.category_id"),
                )?,
                bbox,
                area: as_f64(path, get(path, a, "area", &ctx)?, &format!("{ctx}.area"))?,
                iscrowd: as_bool_flag(path, a.get("iscrowd"), &format!("{ctx}.iscrowd"))?,
                score: 1.0,
                segmentation: seg,
            });
        }
        tracing::debug!(path = %path.display(), images = images.len(), annotations = annotations.len(), "COCO ground truth loaded");
        Ok(Self { path: path.to_path_buf(), images, annotations, categories })
    }

    /// Reads a result file against this ground truth, as `COCO.loadRes`.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Json`], [`Error::CocoField`] (missing `score`, image id not in the
    /// ground truth, …), [`Error::CocoSegmentation`], [`Error::CocoMaskSize`].
    pub fn load_results(&self, path: &Path, with_masks: bool) -> Result<Vec<CocoAnnotation>> {
        let v = read_json(path)?;
        self.results_from_value(path, &v, with_masks)
    }

    /// As [`CocoDataset::load_results`], from parsed JSON.
    ///
    /// # Errors
    /// As [`CocoDataset::load_results`].
    pub fn results_from_value(
        &self,
        path: &Path,
        v: &Value,
        with_masks: bool,
    ) -> Result<Vec<CocoAnnotation>> {
        let list = v
            .as_array()
            .ok_or_else(|| field_err(path, "(root)".into(), "results must be a list"))?;
        let index: HashMap<&ImageId, &CocoImage> =
            self.images.iter().map(|im| (&im.id, im)).collect();
        let bbox_mode = list
            .first()
            .and_then(|a| a.get("bbox"))
            .is_some_and(|b| b.as_array().is_none_or(|a| !a.is_empty()));
        let mut out = Vec::with_capacity(list.len());
        for (i, a) in list.iter().enumerate() {
            let ctx = format!("[{i}]");
            let image_id =
                as_image_id(path, get(path, a, "image_id", &ctx)?, &format!("{ctx}.image_id"))?;
            let image = index.get(&image_id).copied().ok_or_else(|| {
                field_err(
                    path,
                    format!("{ctx}.image_id"),
                    format!("image {image_id} is not in the ground truth {}", self.path.display()),
                )
            })?;
            let category_id =
                as_i64(path, get(path, a, "category_id", &ctx)?, &format!("{ctx}.category_id"))?;
            let score = as_f64(path, get(path, a, "score", &ctx)?, &format!("{ctx}.score"))?;
            let (bbox, area, seg) = if bbox_mode {
                let bb = as_bbox(path, get(path, a, "bbox", &ctx)?, &format!("{ctx}.bbox"))?;
                let seg = if !with_masks {
                    None
                } else if let Some(s) = a.get("segmentation") {
                    Some(segmentation(path, s, &format!("{ctx}.segmentation"), image)?)
                } else {
                    let (x1, x2, y1, y2) = (bb[0], bb[0] + bb[2], bb[1], bb[1] + bb[3]);
                    let poly = vec![vec![x1, y1, x1, y2, x2, y2, x2, y1]];
                    Some(
                        CocoRle::from_polygons(&poly, image.size.height, image.size.width)
                            .map_err(|source| Error::CocoSegmentation {
                                path: path.to_path_buf(),
                                key: format!("{ctx}.bbox"),
                                source: Box::new(source),
                            })?,
                    )
                };
                (bb, bb[2] * bb[3], seg)
            } else {
                let s = segmentation(
                    path,
                    get(path, a, "segmentation", &ctx)?,
                    &format!("{ctx}.segmentation"),
                    image,
                )?;
                let bb = match a.get("bbox") {
                    Some(b) => as_bbox(path, b, &format!("{ctx}.bbox"))?,
                    None => s.to_bbox(),
                };
                (bb, s.area() as f64, Some(s))
            };
            out.push(CocoAnnotation {
                id: i as i64 + 1,
                image_id,
                category_id,
                bbox,
                area,
                iscrowd: false,
                score,
                segmentation: seg,
            });
        }
        tracing::debug!(path = %path.display(), results = out.len(), "COCO results loaded");
        Ok(out)
    }
}
