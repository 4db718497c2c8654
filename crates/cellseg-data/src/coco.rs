//! COCO instance-annotation JSON (polygons or RLE), as LIVECell and several Sartorius teams
//! distribute it, including LIVECell's dict-shaped `annotations` (`{"<id>": {...}}`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cellseg_core::{CroppedMask, ImageSize, Instances};
use cellseg_rle::CocoRle;
use rayon::prelude::*;
use serde_json::Value;

use crate::sartorius::rle_error;
use crate::skip::{Skipped, Strictness, skip_or_fail};
use crate::{Error, Result};

/// Polygon coordinates may exceed the image by this much (pycocotools clips them; annotation tools
/// put border vertices at `-0.5` or `W + 0.5`); anything further out is an error.
pub const POLYGON_TOLERANCE: f64 = 1.0;

/// `(image id, file name, size, [(annotation id, category, decoded mask)])`.
type DecodedImage = (String, String, ImageSize, Vec<(String, usize, Result<CroppedMask>)>);

/// One image of a COCO file with its annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoImage {
    /// `images[].id` (a number or a string in the JSON).
    pub id: String,
    /// `images[].file_name`.
    pub file_name: String,
    /// `height × width` from the JSON.
    pub size: ImageSize,
    /// `annotations[].id` of each instance, in file order.
    pub annotation_ids: Vec<String>,
    /// Ground truth: masks decoded exactly as pycocotools `annToRLE`, boxes the masks' tight boxes
    /// (pycocotools `toBbox`), labels the raw `category_id`s.
    pub instances: Instances,
}

/// A parsed COCO annotation file.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoFile {
    /// The JSON file.
    pub path: PathBuf,
    /// `(id, name)` of each category.
    pub categories: Vec<(u64, String)>,
    /// Images in file order.
    pub images: Vec<CocoImage>,
    /// What a lenient read skipped.
    pub skipped: Vec<Skipped>,
}

fn json_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Json { path: path.to_path_buf(), message: message.into() }
}

/// An id that may be a JSON number (LIVECell) or a string (some Sartorius COCO files).
fn get_id(v: &Value, key: &str, what: &str, path: &Path) -> Result<String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f >= 0.0) => {
            Ok((n.as_f64().unwrap_or(0.0) as u64).to_string())
        }
        _ => Err(json_err(path, format!("{what}: missing id key {key:?} (number or string)"))),
    }
}

fn get_u64(v: &Value, key: &str, what: &str, path: &Path) -> Result<u64> {
    v.get(key)
        .and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
        })
        .ok_or_else(|| json_err(path, format!("{what}: missing or non-integer key {key:?}")))
}

impl CocoFile {
    /// Reads and decodes a COCO JSON file.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Json`] (malformed file, missing key); per annotation, naming the
    /// file, the annotation id and the image id: [`Error::AnnotationOutside`] (polygon coordinate
    /// beyond the image by more than [`POLYGON_TOLERANCE`]), [`Error::SizeMismatch`] (RLE `size`
    /// differing from the image), [`Error::Rle`] (bad counts or polygon), [`Error::Json`] (an
    /// annotation of an unknown image). [`Strictness::Lenient`] skips such annotations instead.
    pub fn read(path: &Path, strictness: Strictness) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| json_err(path, e.to_string()))?;
        let mut skipped = Vec::new();
        let categories = match doc.get("categories").and_then(Value::as_array) {
            Some(cats) => cats
                .iter()
                .map(|c| {
                    Ok((
                        get_u64(c, "id", "categories[]", path)?,
                        c.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                    ))
                })
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let imgs = doc
            .get("images")
            .and_then(Value::as_array)
            .ok_or_else(|| json_err(path, "missing array \"images\""))?;
        let mut images = Vec::with_capacity(imgs.len());
        let mut index = HashMap::new();
        for im in imgs {
            let id = get_id(im, "id", "images[]", path)?;
            let what = format!("images[] id {id}");
            let file_name = im
                .get("file_name")
                .and_then(Value::as_str)
                .ok_or_else(|| json_err(path, format!("{what}: missing \"file_name\"")))?
                .to_string();
            let h = get_u64(im, "height", &what, path)? as usize;
            let w = get_u64(im, "width", &what, path)? as usize;
            index.insert(id.clone(), images.len());
            images.push((id, file_name, ImageSize::new(h, w), Vec::<(String, &Value)>::new()));
        }
        // LIVECell quirk: `annotations` may be an object keyed by annotation id. Its entries are
        // taken in increasing id order (numeric ids numerically), which is LIVECell's file order.
        let anns: Vec<&Value> = match doc.get("annotations") {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(Value::Object(o)) => {
                let mut entries: Vec<(&String, &Value)> = o.iter().collect();
                entries.sort_by(|a, b| match (a.0.parse::<u64>(), b.0.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => a.0.cmp(b.0),
                });
                entries.into_iter().map(|e| e.1).collect()
            }
            Some(_) => return Err(json_err(path, "\"annotations\" is neither a list nor a dict")),
            None => Vec::new(),
        };
        for a in anns {
            let ann_id = get_id(a, "id", "annotations[]", path)?;
            let image_id = get_id(a, "image_id", &format!("annotation {ann_id}"), path)?;
            match index.get(&image_id) {
                Some(&i) => images[i].3.push((ann_id, a)),
                None => {
                    let e =
                        json_err(path, format!("annotation {ann_id}: unknown image_id {image_id}"));
                    skip_or_fail(
                        strictness,
                        path,
                        format!("annotation {ann_id}"),
                        e,
                        &mut skipped,
                    )?;
                }
            }
        }
        let decoded: Vec<DecodedImage> = images
            .into_par_iter()
            .map(|(id, file_name, size, anns)| {
                let out = anns
                    .into_iter()
                    .map(|(ann_id, a)| {
                        let cat = get_u64(a, "category_id", &format!("annotation {ann_id}"), path);
                        let mask =
                            cat.and_then(|_| decode_segmentation(a, &ann_id, &id, size, path));
                        let cat = get_u64(a, "category_id", "", path).unwrap_or(0) as usize;
                        (ann_id, cat, mask)
                    })
                    .collect();
                (id, file_name, size, out)
            })
            .collect();
        let mut out_images = Vec::with_capacity(decoded.len());
        for (id, file_name, size, anns) in decoded {
            let mut inst = Instances::empty(size);
            let mut annotation_ids = Vec::new();
            for (ann_id, cat, mask) in anns {
                match mask {
                    Ok(m) => {
                        inst.boxes.push(m.bbox().unwrap_or_default());
                        inst.labels.push(cat);
                        inst.masks.push(m);
                        annotation_ids.push(ann_id);
                    }
                    Err(e) => skip_or_fail(
                        strictness,
                        path,
                        format!("annotation {ann_id}"),
                        e,
                        &mut skipped,
                    )?,
                }
            }
            out_images.push(CocoImage { id, file_name, size, annotation_ids, instances: inst });
        }
        Ok(Self { path: path.to_path_buf(), categories, images: out_images, skipped })
    }
}

fn decode_segmentation(
    a: &Value,
    ann_id: &str,
    image_id: &str,
    size: ImageSize,
    path: &Path,
) -> Result<CroppedMask> {
    let row = format!("annotation {ann_id}");
    let seg = a
        .get("segmentation")
        .ok_or_else(|| json_err(path, format!("{row}: missing \"segmentation\"")))?;
    let outside = |detail: String| Error::AnnotationOutside {
        path: path.to_path_buf(),
        row: row.clone(),
        image_id: image_id.to_string(),
        height: size.height,
        width: size.width,
        detail,
    };
    let rle = match seg {
        Value::Array(polys) => {
            let mut polygons = Vec::with_capacity(polys.len());
            for (pi, p) in polys.iter().enumerate() {
                let coords = p
                    .as_array()
                    .ok_or_else(|| json_err(path, format!("{row}: polygon {pi} is not a list")))?;
                let mut xy = Vec::with_capacity(coords.len());
                for (k, c) in coords.iter().enumerate() {
                    let v = c.as_f64().ok_or_else(|| {
                        json_err(
                            path,
                            format!("{row}: polygon {pi} coordinate {k} is not a number"),
                        )
                    })?;
                    let limit = if k % 2 == 0 { size.width } else { size.height } as f64;
                    if !(v >= -POLYGON_TOLERANCE && v <= limit + POLYGON_TOLERANCE) {
                        let axis = if k % 2 == 0 { "x" } else { "y" };
                        return Err(outside(format!(
                            "polygon {pi} point {}: {axis} = {v} (limit {limit})",
                            k / 2
                        )));
                    }
                    xy.push(v);
                }
                polygons.push(xy);
            }
            CocoRle::from_polygons(&polygons, size.height, size.width)
                .map_err(|e| rle_error(path, row.clone(), image_id, size, e))?
        }
        Value::Object(o) => {
            let s = o
                .get("size")
                .and_then(Value::as_array)
                .ok_or_else(|| json_err(path, format!("{row}: RLE without \"size\"")))?;
            let (h, w) = match (s.first().and_then(Value::as_u64), s.get(1).and_then(Value::as_u64))
            {
                (Some(h), Some(w)) => (h as usize, w as usize),
                _ => return Err(json_err(path, format!("{row}: RLE \"size\" is not [h, w]"))),
            };
            if (h, w) != (size.height, size.width) {
                return Err(Error::SizeMismatch {
                    path: path.to_path_buf(),
                    row,
                    image_id: image_id.to_string(),
                    ann_h: h as u32,
                    ann_w: w as u32,
                    what: format!("image {image_id} in images[]"),
                    got_h: size.height as u32,
                    got_w: size.width as u32,
                });
            }
            let r = match o.get("counts") {
                Some(Value::String(c)) => CocoRle::from_counts_str(c, size),
                Some(Value::Array(c)) => {
                    let counts: Option<Vec<i64>> = c.iter().map(Value::as_i64).collect();
                    let counts = counts.ok_or_else(|| {
                        json_err(path, format!("{row}: RLE counts are not integers"))
                    })?;
                    CocoRle::from_counts_i64(&counts, size)
                }
                _ => return Err(json_err(path, format!("{row}: RLE without \"counts\""))),
            };
            r.map_err(|e| rle_error(path, row.clone(), image_id, size, e))?
        }
        _ => {
            return Err(json_err(
                path,
                format!("{row}: \"segmentation\" is neither polygons nor RLE"),
            ));
        }
    };
    Ok(rle.to_cropped())
}
