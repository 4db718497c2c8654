//! COCOeval and competition-metric parity.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cellseg_metrics::coco_dataset::CocoDataset;
use cellseg_metrics::cocoeval::{self, CocoEvalParams, IouType};
use cellseg_metrics::report;

use crate::fixtures::{read_json, realdata, run_tool};

/// The reference directory, generated once per test binary; `None` when the real data is absent
/// (each caller's skip is reported by `realdata`, which fails instead under
/// `CELLSEG_REQUIRE_REALDATA=1`).
fn references() -> Option<&'static tempfile::TempDir> {
    static REFS: OnceLock<tempfile::TempDir> = OnceLock::new();
    let data = realdata()?;
    Some(REFS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        run_tool("metrics_parity.py", &[&data, dir.path()]);
        dir
    }))
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-9, "{what}[{k}]: {g} vs pycocotools {w}");
    }
}

#[test]
fn cocoeval_matches_pycocotools_on_every_coco_file() {
    let Some(dir) = references() else { return };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("gt.json").exists())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 10, "one reference per COCO file");
    for d in &dirs {
        let expected = read_json(&d.join("expected.json"));
        let max_dets: Vec<usize> = expected["max_dets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let gt = CocoDataset::load(&d.join("gt.json"), true).unwrap();
        for run in expected["runs"].as_array().unwrap() {
            let iou_type: IouType = run["iou_type"].as_str().unwrap().parse().unwrap();
            let res = run["results"].as_str().unwrap();
            let dt = gt.load_results(&d.join(res), iou_type == IouType::Segm).unwrap();
            let params =
                CocoEvalParams { max_dets: max_dets.clone(), ..CocoEvalParams::new(iou_type) };
            let r = cocoeval::evaluate(&gt, &dt, &params).unwrap();
            let what = format!("{} {res} {iou_type:?}", d.file_name().unwrap().to_string_lossy());
            assert_close(&format!("{what} stats"), &r.stats, &f64s(&run["stats"]));
            assert_close(&format!("{what} precision"), &r.precision, &f64s(&run["precision"]));
            assert_close(&format!("{what} recall"), &r.recall, &f64s(&run["recall"]));
            assert!(
                r.stats[0] > 0.0 && r.stats[0] < 1.0,
                "{what}: perturbed AP should be in (0, 1)"
            );
        }
    }
}

#[test]
fn competition_metric_matches_independent_python() {
    let Some(dir) = references() else { return };
    let c: &Path = &dir.path().join("competition");
    let rep =
        report::competition_from_files(&c.join("truth.csv"), &c.join("submission.csv")).unwrap();
    let expected = read_json(&c.join("expected.json"));
    let images = expected["images"].as_object().unwrap();
    assert_eq!(rep.images.len(), images.len());
    for im in &rep.images {
        let want = images[&im.id]["score"].as_f64().unwrap();
        assert!(
            (im.score.score - want).abs() < 1e-12,
            "image {}: {} vs {want}",
            im.id,
            im.score.score
        );
        assert_eq!(im.cell_type, images[&im.id]["cell_type"].as_str().unwrap());
    }
    assert!((rep.overall - expected["overall"].as_f64().unwrap()).abs() < 1e-12);
    let per = expected["per_cell_type"].as_object().unwrap();
    assert_eq!(rep.per_cell_type.len(), per.len());
    for (ct, v) in &rep.per_cell_type {
        assert!((v.score - per[ct].as_f64().unwrap()).abs() < 1e-12, "{ct}");
    }
    assert!(rep.images.iter().any(|i| i.n_pred == 0), "one image has an empty prediction row");
    assert!(rep.overall > 0.1 && rep.overall < 0.95);
}
