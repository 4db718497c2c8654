//! pycocotools / numpy parity on every COCO file of the real data, the DSB CSV and train_subset.csv.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use cellseg_core::ImageSize;
use cellseg_rle::{CocoRle, DsbRle, KaggleRle, coco};
use serde_json::Value;

use crate::fixtures::{read_json, realdata, repo, run_tool};

/// The reference directory, generated once per test binary; `None` when the real data is absent
/// (each caller's skip is reported by `realdata`, which fails instead under
/// `CELLSEG_REQUIRE_REALDATA=1`).
fn references() -> Option<&'static (tempfile::TempDir, PathBuf)> {
    static REFS: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let data = realdata()?;
    Some(REFS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        run_tool("rle_parity.py", &[&data, &repo(), dir.path()]);
        (dir, data)
    }))
}

fn coco_files(data: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for sub in ["sartorius/annotations/coco", "livecell"] {
        let mut f: Vec<PathBuf> = std::fs::read_dir(data.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        f.sort();
        files.extend(f);
    }
    files
}

fn decode_annotation(ann: &Value, size: ImageSize) -> CocoRle {
    let seg = &ann["segmentation"];
    match seg {
        Value::Array(polys) => {
            let ps: Vec<Vec<f64>> = polys
                .iter()
                .map(|p| p.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
                .collect();
            CocoRle::from_polygons(&ps, size.height, size.width).unwrap()
        }
        Value::Object(o) => {
            let sz = o["size"].as_array().unwrap();
            let rsize =
                ImageSize::new(sz[0].as_u64().unwrap() as usize, sz[1].as_u64().unwrap() as usize);
            match &o["counts"] {
                Value::String(s) => CocoRle::from_counts_str(s, rsize).unwrap(),
                Value::Array(a) => {
                    let c: Vec<i64> = a.iter().map(|v| v.as_i64().unwrap()).collect();
                    CocoRle::from_counts_i64(&c, rsize).unwrap()
                }
                other => panic!("bad counts {other}"),
            }
        }
        other => panic!("bad segmentation {other}"),
    }
}

#[test]
fn every_coco_file_matches_pycocotools() {
    let Some((dir, data)) = references() else { return };
    let files = coco_files(data);
    assert_eq!(files.len(), 10, "expected 8 Sartorius + 2 LIVECell COCO files");
    let mut checked = 0usize;
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy();
        let gt = read_json(file);
        let reference = read_json(&dir.path().join(format!("coco_{name}.json")));
        let sizes: HashMap<String, ImageSize> = gt["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|im| {
                let size = ImageSize::new(
                    im["height"].as_u64().unwrap() as usize,
                    im["width"].as_u64().unwrap() as usize,
                );
                (im["id"].to_string(), size)
            })
            .collect();
        let mut rles: HashMap<i64, CocoRle> = HashMap::new();
        for ann in gt["annotations"].as_array().unwrap() {
            let size = sizes[&ann["image_id"].to_string()];
            rles.insert(ann["id"].as_i64().unwrap(), decode_annotation(ann, size));
        }
        for r in reference["annotations"].as_array().unwrap() {
            let id = r["id"].as_i64().unwrap();
            let rle = &rles[&id];
            let want = r["counts"].as_str().unwrap();
            assert_eq!(rle.to_counts_string(), want, "{name}: annotation {id}: counts string");
            assert_eq!(rle.area(), r["area"].as_u64().unwrap(), "{name}: annotation {id}: area");
            let bbox: Vec<f64> =
                r["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(rle.to_bbox().to_vec(), bbox, "{name}: annotation {id}: toBbox");
            // Decode and re-encode through both mask types: identical string.
            let parsed = CocoRle::from_counts_str(want, rle.size()).unwrap();
            assert_eq!(&parsed, rle, "{name}: annotation {id}: parse");
            let crop = rle.to_cropped();
            assert_eq!(crop.area() as u64, rle.area());
            assert_eq!(
                CocoRle::from_cropped(&crop).to_counts_string(),
                want,
                "{name}: {id}: via CroppedMask"
            );
            if checked % 50 == 0 {
                assert_eq!(
                    CocoRle::from_mask(&rle.to_mask()).to_counts_string(),
                    want,
                    "{name}: {id}: via BitMask"
                );
                // Conversions between the three orders.
                let k = rle.to_kaggle();
                assert_eq!(CocoRle::from_kaggle(&k), *rle);
                let d = rle.to_dsb();
                assert_eq!(CocoRle::from_dsb(&d), *rle);
                assert_eq!(DsbRle::parse(&d.to_string(), d.size()).unwrap(), d);
            }
            checked += 1;
        }
        for im in reference["ious"].as_array().unwrap() {
            let ids: Vec<i64> =
                im["ann_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            let crowd: Vec<bool> = im["iscrowd"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap() != 0)
                .collect();
            let ms: Vec<CocoRle> = ids.iter().map(|i| rles[i].clone()).collect();
            let got = coco::iou_matrix(&ms, &ms, &crowd).unwrap();
            let want: Vec<f64> =
                im["iou"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(got.len(), want.len());
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-12,
                    "{name}: image {}: iou[{k}] {g} vs {w}",
                    im["image_id"]
                );
            }
        }
        let merges = &reference["merges"];
        let ids: Vec<i64> =
            merges["ann_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let ms: Vec<CocoRle> = ids.iter().map(|i| rles[i].clone()).collect();
        assert_eq!(
            CocoRle::merge(&ms, false).unwrap().to_counts_string(),
            merges["union"].as_str().unwrap(),
            "{name}: union"
        );
        assert_eq!(
            CocoRle::merge(&ms[..2], true).unwrap().to_counts_string(),
            merges["intersection"].as_str().unwrap(),
            "{name}: intersection"
        );
    }
    eprintln!("checked {checked} annotations of {} COCO files against pycocotools", files.len());
    assert!(checked > 40_000);
}

#[test]
fn dsb_column_major_csv_matches_numpy() {
    let Some((dir, _)) = references() else { return };
    let csv = std::fs::read_to_string(
        repo().join("tests/data/dsb2018_stage1_test/stage1_solution_subset.csv"),
    )
    .unwrap();
    let reference = read_json(&dir.path().join("dsb.json"));
    let reference = reference.as_array().unwrap();
    let mut n = 0;
    for (line, r) in csv.lines().skip(1).zip(reference) {
        let f: Vec<&str> = line.split(',').collect();
        let size = ImageSize::new(f[2].parse().unwrap(), f[3].parse().unwrap());
        let d = DsbRle::parse(f[1], size).unwrap();
        assert_eq!(d.area(), r["area"].as_u64().unwrap(), "{}", f[0]);
        let k = KaggleRle::from_cropped(&d.to_cropped());
        assert_eq!(k.to_string(), r["kaggle"].as_str().unwrap(), "{}: row-major re-encoding", f[0]);
        assert_eq!(d.to_string(), f[1].trim(), "{}: column-major re-encoding", f[0]);
        assert_eq!(cellseg_rle::dsb::encode(&d.to_mask()), f[1].trim());
        n += 1;
    }
    assert_eq!(n, reference.len());
    assert!(n > 3000);
}

#[test]
fn sartorius_train_csv_matches_numpy_and_pycocotools() {
    let Some((dir, data)) = references() else { return };
    let csv = std::fs::read_to_string(data.join("sartorius/train_subset.csv")).unwrap();
    let reference = read_json(&dir.path().join("kaggle.json"));
    let reference = reference.as_array().unwrap();
    let mut n = 0;
    for (line, r) in csv.lines().skip(1).zip(reference) {
        let f: Vec<&str> = line.split(',').collect();
        let size = ImageSize::new(f[3].parse().unwrap(), f[2].parse().unwrap());
        let k = KaggleRle::parse(f[1], size).unwrap();
        assert_eq!(k.area(), r["area"].as_u64().unwrap());
        assert_eq!(k.to_string(), r["kaggle"].as_str().unwrap());
        assert_eq!(cellseg_rle::kaggle::encode(&k.to_mask()), r["kaggle"].as_str().unwrap());
        assert_eq!(
            CocoRle::from_kaggle(&k).to_counts_string(),
            r["coco"].as_str().unwrap(),
            "{}: COCO string",
            f[0]
        );
        n += 1;
    }
    assert_eq!(n, reference.len());
}
