use super::*;
use cellseg_core::BoxXyxy;
use proptest::prelude::*;

fn grid(order: TweakOrder) -> TweakGrid {
    let mut g = TweakGrid {
        nms_thresholds: vec![0.05, 0.3],
        confidence_thresholds: vec![0.2, 0.5, 0.7],
        min_sizes: vec![0, 6, 20],
        ..TweakGrid::default()
    };
    if order == TweakOrder::ProcessResults {
        g.order = order;
        g.overlap_ious = OverlapIous::AfterCorruption;
        g.keep_first_when_all_small = false;
    }
    g
}

/// Random blobs (some with holes and concave parts, so astro corruption changes them) on a
/// 24×24 image, as soft masks, and truths that overlap them.
fn arb_image() -> impl Strategy<Value = TweakImage> {
    let size = ImageSize::new(24, 24);
    let blob = (0usize..18, 0usize..18, 2usize..7, 2usize..7, any::<u64>());
    (
        proptest::collection::vec((blob.clone(), 0f32..1.0, 0usize..3), 0..12),
        proptest::collection::vec(blob, 1..6),
    )
        .prop_map(move |(preds, truths)| {
            let cells = |(r, c, h, w, bits): (usize, usize, usize, usize, u64)| {
                (r, c, h, w, (0..h * w).map(move |k| (bits >> (k % 64)) & 1 == 1 || k % 4 == 0))
            };
            let mut d = SoftDetections {
                image_size: size,
                boxes: Vec::new(),
                scores: Vec::new(),
                labels: Vec::new(),
                masks: Vec::new(),
            };
            for (b, score, label) in preds {
                let (r, c, h, w, on) = cells(b);
                let data = on
                    .enumerate()
                    .map(|(k, v)| if v { 120 + (k % 100) as u8 } else { (k % 115) as u8 })
                    .collect();
                d.masks.push(SoftMask::new(size, r, c, h, w, data).unwrap());
                d.boxes.push(BoxXyxy::new(c as f32, r as f32, (c + w) as f32, (r + h) as f32));
                d.scores.push(score);
                d.labels.push(label);
            }
            let truth = truths
                .into_iter()
                .map(|b| {
                    let (r, c, h, w, on) = cells(b);
                    CroppedMask::new(size, r, c, h, w, on.map(u8::from).collect()).unwrap()
                })
                .collect();
            TweakImage { id: "img".into(), detections: d, truth, truth_type: Some(CellType::Cort) }
        })
}

use crate::SoftMask;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn incremental_equals_the_pipeline_at_every_point(image in arb_image()) {
        let slow = image_grid(&image, &grid(TweakOrder::ProcessResults)).unwrap();
        let mut g = grid(TweakOrder::ProcessResults);
        g.order = TweakOrder::Incremental;
        let fast = image_grid(&image, &g).unwrap();
        prop_assert_eq!(&fast, &slow);
    }

    #[test]
    fn seed_semantics_equal_the_pipeline_without_corruption(image in arb_image()) {
        let mut g = grid(TweakOrder::Incremental);
        g.corrupt_astro = false;
        let seed = image_grid(&image, &g).unwrap();
        let mut p = grid(TweakOrder::ProcessResults);
        p.corrupt_astro = false;
        let slow = image_grid(&image, &p).unwrap();
        // They differ only where the seed's keep-first fallback applies (every mask ≤ min size).
        let d = &image.detections;
        let areas: Vec<usize> = d.masks.iter().map(|m| m.binarize(0.45).unwrap().area()).collect();
        let per_size = g.confidence_thresholds.len();
        for (k, (a, b)) in seed.scores.iter().zip(&slow.scores).enumerate() {
            let s = g.min_sizes[(k / per_size) % g.min_sizes.len()];
            if areas.iter().any(|&x| x > s) {
                prop_assert_eq!(a, b, "grid point {}", k);
            }
        }
    }
}

#[test]
fn best_point_is_the_first_maximum_and_cv_weights_images() {
    let size = ImageSize::new(4, 4);
    let mk =
        |id: &str, t: CellType, scores: Vec<f64>| ImageGrid { id: id.into(), cell_type: t, scores };
    let g = TweakGrid {
        mask_thresholds: vec![0.45],
        nms_thresholds: vec![0.1],
        min_sizes: vec![0, 5],
        confidence_thresholds: vec![0.3, 0.6],
        ..TweakGrid::default()
    };
    let images = vec![
        mk("a", CellType::Cort, vec![0.1, 0.5, 0.5, 0.2]),
        mk("b", CellType::Cort, vec![0.3, 0.5, 0.5, 0.2]),
        mk("c", CellType::Astro, vec![0.0, 0.0, 0.0, 0.9]),
    ];
    let means = mean_scores(&images, 4, CellType::Cort).unwrap();
    assert_eq!(means, vec![0.2, 0.5, 0.5, 0.2]);
    assert_eq!(point(&g, 1), (0.45, 0.1, 0, 0.6));
    assert_eq!(point(&g, 2), (0.45, 0.1, 5, 0.3));
    let _ = size;
}

#[test]
fn images_without_detections_take_the_truth_type_and_score_zero() {
    let size = ImageSize::new(8, 8);
    let truth = vec![CroppedMask::new(size, 0, 0, 2, 2, vec![1; 4]).unwrap()];
    let empty = SoftDetections {
        image_size: size,
        boxes: vec![],
        scores: vec![],
        labels: vec![],
        masks: vec![],
    };
    let mut image =
        TweakImage { id: "e".into(), detections: empty, truth, truth_type: Some(CellType::Astro) };
    let r = tweak(std::slice::from_ref(&image), &TweakGrid::default(), &|| {}).unwrap();
    assert_eq!(r.per_type[0].cell_type, CellType::Astro);
    assert!(r.images[0].scores.iter().all(|&s| s == 0.0));
    image.truth_type = None;
    let e = tweak(&[image], &TweakGrid::default(), &|| {}).unwrap_err().to_string();
    assert!(e.contains("image e") && e.contains("no detections"), "{e}");
}

#[test]
fn oof_and_truth_must_describe_the_same_images() {
    use cellseg_metrics::report::TruthImage;
    let size = ImageSize::new(8, 8);
    let det = |s: ImageSize| SoftDetections {
        image_size: s,
        boxes: vec![],
        scores: vec![],
        labels: vec![],
        masks: vec![],
    };
    let t = |id: &str| TruthImage { id: id.into(), size, cell_type: "cort".into(), masks: vec![] };
    let (o, tr) = (std::path::Path::new("oof.bin"), std::path::Path::new("train.csv"));
    let e = images_with_truth(
        vec![("a".into(), det(size)), ("zz".into(), det(size))],
        &[t("a")],
        o,
        tr,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("oof.bin") && e.contains("train.csv") && e.contains("not in the truth: zz"),
        "{e}"
    );
    // A larger truth (the full train.csv against the OOF of the images training kept).
    let wider = images_with_truth(vec![("a".into(), det(size))], &[t("b"), t("a")], o, tr).unwrap();
    assert_eq!(wider.images.len(), 1);
    assert_eq!(wider.ignored_truth, ["b"]);
    let e = images_with_truth(vec![("a".into(), det(ImageSize::new(8, 9)))], &[t("a")], o, tr)
        .unwrap_err()
        .to_string();
    assert!(e.contains("image a is 8x9 in the OOF file but 8x8 in the truth"), "{e}");
    let ok = images_with_truth(vec![("a".into(), det(size))], &[t("a")], o, tr).unwrap().images;
    assert!(images_with_truth(vec![], &[t("a")], o, tr).unwrap().images.is_empty());
    assert_eq!(ok[0].truth_type, Some(CellType::Cort));
}
