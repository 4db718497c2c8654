//! Equality with independent references run in the same test, on real masks: OpenCV (contours and
//! the astro corruption), scipy (`binary_fill_holes`) and the seed's post-processing re-written with
//! numpy + pycocotools + torch (`tools/postproc_seed.py`), torchvision's box NMS, on Sartorius and LIVECell ground truth
//! turned into predictions by `tools/postproc_reference.py`.

use cellseg_core::{BoxXyxy, CellType, CroppedMask, ImageSize};
use cellseg_postproc::contours::{ChainApprox, find_contours};
use cellseg_postproc::corrupt::{corrupt, fill_holes};
use cellseg_postproc::{Pipeline, PostprocConfig, SoftDetections, SoftMask, nms};
use cellseg_rle::kaggle;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    images: Vec<ImageCase>,
    shapes: Vec<ShapeCase>,
}

#[derive(Deserialize)]
struct ImageCase {
    id: String,
    height: usize,
    width: usize,
    boxes: Vec<[f32; 4]>,
    scores: Vec<f32>,
    labels: Vec<usize>,
    soft: Vec<Soft>,
    expected: Expected,
    box_nms: Vec<BoxNms>,
}

#[derive(Deserialize)]
struct BoxNms {
    threshold: f64,
    single: Vec<usize>,
    batched: Vec<usize>,
}

#[derive(Deserialize)]
struct Soft {
    rect: [usize; 4],
    hex: String,
}

#[derive(Deserialize)]
struct Expected {
    cell: Option<usize>,
    indices: Vec<usize>,
    rles: Vec<String>,
}

#[derive(Deserialize)]
struct ShapeCase {
    height: usize,
    width: usize,
    mask: String,
    corrupt: String,
    filled: String,
    contours: Vec<Vec<i32>>,
    contours_none: Vec<Vec<i32>>,
}

/// Runs `tools/postproc_reference.py` with the project's `.venv` Python; `None` (with the skip
/// reported by `realdata`, which fails instead under `CELLSEG_REQUIRE_REALDATA=1`) when the real
/// data is absent.
fn reference() -> Option<Reference> {
    let realdata = cellseg_core::testing::realdata()?;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("postproc_reference.json");
    cellseg_core::testing::run_tool("postproc_reference.py", &[realdata.as_path(), out.as_path()]);
    Some(serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap())
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn sorted_contours(mut c: Vec<Vec<i32>>) -> Vec<Vec<i32>> {
    c.sort();
    c
}

#[test]
fn postproc_equals_opencv_scipy_and_the_seed_on_real_masks() {
    let Some(reference) = reference() else { return };

    // 1. Contours, astro corruption and hole filling on every shape.
    let mut bad = Vec::new();
    let mut holes = 0usize;
    let mut corrupted = 0usize;
    for (k, s) in reference.shapes.iter().enumerate() {
        let size = ImageSize::new(s.height, s.width);
        let mask: CroppedMask = kaggle::decode_cropped(&s.mask, size).unwrap();
        let (top, left, h, w) = mask.rect();
        for (approx, expected) in
            [(ChainApprox::Simple, &s.contours), (ChainApprox::None, &s.contours_none)]
        {
            let ours: Vec<Vec<i32>> = find_contours(mask.as_slice(), h, w, approx)
                .into_iter()
                .map(|c| {
                    c.points.iter().flat_map(|p| [p[0] + left as i32, p[1] + top as i32]).collect()
                })
                .collect();
            if sorted_contours(ours) != sorted_contours(expected.clone()) {
                bad.push(format!("shape {k}: {approx:?} contours differ from cv2.findContours"));
            }
        }
        let c = corrupt(&mask);
        corrupted += usize::from(c != mask);
        if kaggle::encode_cropped(&c) != s.corrupt {
            bad.push(format!("shape {k}: corrupt differs from findContours + fillConvexPoly"));
        }
        let filled = fill_holes(&mask);
        holes += filled.area() - mask.area();
        if kaggle::encode_cropped(&filled) != s.filled {
            bad.push(format!("shape {k}: fill_holes differs from binary_fill_holes"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} shapes differ:\n{}",
        bad.len(),
        reference.shapes.len(),
        bad[..bad.len().min(20)].join("\n")
    );
    eprintln!(
        "{} shapes equal; corruption changed {corrupted}, hole filling added {holes} pixels",
        reference.shapes.len()
    );
    assert!(
        reference.shapes.len() > 900 && holes > 0 && corrupted > 100,
        "too few shapes, changes or holes"
    );

    // 2. The whole pipeline with the seed's thresholds.
    let pipe = Pipeline::new(PostprocConfig::default()).unwrap();
    assert_eq!(pipe.config().min_size, [70; 3]);
    let mut kept = 0;
    let mut types = Vec::new();
    for im in &reference.images {
        let size = ImageSize::new(im.height, im.width);
        let masks = im
            .soft
            .iter()
            .map(|s| {
                SoftMask::new(size, s.rect[0], s.rect[1], s.rect[2], s.rect[3], hex_bytes(&s.hex))
                    .unwrap()
            })
            .collect();
        let input = SoftDetections {
            image_size: size,
            boxes: im.boxes.iter().map(|b| BoxXyxy::new(b[0], b[1], b[2], b[3])).collect(),
            scores: im.scores.clone(),
            labels: im.labels.clone(),
            masks,
        };
        for case in &im.box_nms {
            let single = nms::nms(&input.boxes, &input.scores, case.threshold).unwrap();
            assert_eq!(
                single, case.single,
                "{}: box NMS at {} differs from torchvision",
                im.id, case.threshold
            );
            let batched =
                nms::batched_nms(&input.boxes, &input.scores, &input.labels, case.threshold)
                    .unwrap();
            assert_eq!(
                batched, case.batched,
                "{}: class-aware NMS at {} differs",
                im.id, case.threshold
            );
        }
        let out = pipe.run(&im.id, &input).unwrap();
        assert_eq!(out.cell_type.map(CellType::label), im.expected.cell, "{}: cell type", im.id);
        assert_eq!(out.source_indices, im.expected.indices, "{}: kept detections", im.id);
        let rles: Vec<String> = out.detections.masks.iter().map(kaggle::encode_cropped).collect();
        for (k, (a, b)) in rles.iter().zip(&im.expected.rles).enumerate() {
            assert!(
                a == b,
                "{}: instance {k} (input {}) differs after post-processing",
                im.id,
                out.source_indices[k]
            );
        }
        kept += rles.len();
        types.extend(out.cell_type);
    }
    assert!(kept > 500, "only {kept} instances kept");
    assert!(
        types.contains(&CellType::Astro)
            && types.contains(&CellType::Cort)
            && types.contains(&CellType::Shsy5y)
    );
}
