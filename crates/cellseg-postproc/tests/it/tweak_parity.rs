//! The tweak against the seed's `tweak_thresholds` re-written in numpy + pycocotools + opencv
//! (`tools/tweak_seed.py`), on predictions made from real Sartorius ground truth (jittered masks,
//! random scores, extra false positives): the same score at every grid point of every image, the
//! same best setting per predicted cell type, the same CV. The OOF file is written by the Python
//! (from the format's documentation) and read here; the Rust writer must give the same bytes.

use cellseg_core::CellType;
use cellseg_metrics::report::load_truth_csv;
use cellseg_postproc::oof::{read_oof, write_oof};
use cellseg_postproc::tweak::{OverlapIous, TweakGrid, TweakOrder, images_with_truth, tweak};
use serde::Deserialize;

#[derive(Deserialize)]
struct PyResult {
    images: Vec<PyImage>,
    best: std::collections::BTreeMap<String, PyBest>,
    cv: f64,
    seconds: f64,
}

#[derive(Deserialize)]
struct PyImage {
    id: String,
    cell: usize,
    scores: Vec<String>,
}

#[derive(Deserialize)]
struct PyBest {
    index: usize,
    score: f64,
    images: usize,
}

fn bits(s: &str) -> f64 {
    f64::from_bits(u64::from_str_radix(s, 16).unwrap())
}

#[test]
fn tweak_equals_the_seed_tweak_on_real_truth() {
    let Some(realdata) = cellseg_core::testing::realdata() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = cellseg_core::testing::repo_root();
    let grid_path = root.join("configs/tweak.toml");
    cellseg_core::testing::run_tool(
        "tweak_seed.py",
        &["gen".as_ref(), realdata.as_os_str(), d.as_os_str(), "--images".as_ref(), "10".as_ref()],
    );
    let (oof, truth_csv, py_json) = (d.join("oof.bin"), d.join("truth.csv"), d.join("py.json"));
    cellseg_core::testing::run_tool(
        "tweak_seed.py",
        &[
            "tweak".as_ref(),
            oof.as_os_str(),
            truth_csv.as_os_str(),
            grid_path.as_os_str(),
            py_json.as_os_str(),
        ],
    );
    let py: PyResult = serde_json::from_str(&std::fs::read_to_string(&py_json).unwrap()).unwrap();

    // The OOF file of the Python writer reads, and the Rust writer gives the same bytes.
    let predictions = read_oof(&oof).unwrap();
    let again = d.join("again.bin");
    write_oof(&again, &predictions).unwrap();
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&oof).unwrap(), "OOF bytes differ");

    let truth = load_truth_csv(&truth_csv).unwrap();
    let images = images_with_truth(predictions, &truth, &oof, &truth_csv).unwrap().images;
    let grid = TweakGrid::load(&grid_path).unwrap();
    let start = std::time::Instant::now();
    let ours = tweak(&images, &grid, &|| {}).unwrap();
    let rust_s = start.elapsed().as_secs_f64();

    assert_eq!(ours.images.len(), py.images.len());
    let (mut max_diff, mut exact, mut points) = (0f64, 0usize, 0usize);
    for (a, b) in ours.images.iter().zip(&py.images) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.cell_type.label(), b.cell, "{}: predicted cell type", a.id);
        assert_eq!(a.scores.len(), b.scores.len());
        for (k, (x, y)) in a.scores.iter().zip(&b.scores).enumerate() {
            let y = bits(y);
            let diff = (x - y).abs();
            // Only the summation order of the 10 precisions differs (numpy's mean vs a loop): any
            // difference in the counts would be at least 1/(10 · cells) ≈ 1e-4.
            assert!(diff <= 1e-12, "{} point {k} {:?}: rust {x} python {y}", a.id, ours.point(k));
            max_diff = max_diff.max(diff);
            exact += usize::from(diff == 0.0);
            points += 1;
        }
    }
    for b in &ours.per_type {
        let p = &py.best[b.cell_type.name()];
        assert_eq!(b.index, p.index, "{}: best grid point", b.cell_type);
        assert_eq!(b.images, p.images);
        assert!((b.score - p.score).abs() <= 1e-12);
    }
    assert_eq!(ours.per_type.len(), py.best.len());
    assert!((ours.cv - py.cv).abs() <= 1e-12, "CV {} vs {}", ours.cv, py.cv);
    let types: Vec<CellType> = ours.per_type.iter().map(|b| b.cell_type).collect();
    assert_eq!(types, CellType::ALL, "every type is exercised");
    eprintln!(
        "{} images x {} points: {points} scores equal ({exact} bit-identical, max diff \
         {max_diff:e}); CV {:.6}; rust {rust_s:.2} s (test profile), python {:.2} s\n{}",
        ours.images.len(),
        grid.len(),
        ours.cv,
        py.seconds,
        ours.table()
    );

    // The process_results order (one pipeline run per point) equals the incremental order with
    // its semantics; the seed tuner's semantics differ from it only where they must.
    let some: Vec<_> = images.iter().take(4).cloned().collect();
    let pr = TweakGrid {
        order: TweakOrder::ProcessResults,
        overlap_ious: OverlapIous::AfterCorruption,
        keep_first_when_all_small: false,
        ..grid.clone()
    };
    let slow = tweak(&some, &pr, &|| {}).unwrap();
    let fast =
        tweak(&some, &TweakGrid { order: TweakOrder::Incremental, ..pr.clone() }, &|| {}).unwrap();
    assert_eq!(fast.images, slow.images, "incremental vs process_results order");
    let seed = tweak(&some, &grid, &|| {}).unwrap();
    for (a, b) in seed.images.iter().zip(&slow.images) {
        let differ = a.scores.iter().zip(&b.scores).filter(|(x, y)| x != y).count();
        eprintln!(
            "{} ({}): seed-tuner semantics differ from process_results at {differ} of {} points",
            a.id,
            a.cell_type,
            a.scores.len()
        );
        if a.cell_type != CellType::Astro {
            assert_eq!(differ, 0, "{}: without corruption both semantics agree", a.id);
        }
    }
}
