//! Property tests: round trips of every format, IoU invariants, parsers fuzzed with arbitrary input.

use cellseg_core::{BitMask, ImageSize};
use proptest::prelude::*;

use crate::{CocoRle, DsbRle, KaggleRle, coco, dsb, kaggle};

fn arb_mask_of(h: usize, w: usize) -> impl Strategy<Value = BitMask> {
    // Sparse and dense masks both: a per-mask density.
    (0.0f64..1.0, proptest::collection::vec(0.0f64..1.0, h * w)).prop_map(move |(p, u)| {
        let data = u.into_iter().map(|x| u8::from(x < p)).collect();
        BitMask::from_vec(ImageSize::new(h, w), data).unwrap()
    })
}

fn arb_mask() -> impl Strategy<Value = BitMask> {
    (1usize..14, 1usize..14).prop_flat_map(|(h, w)| arb_mask_of(h, w))
}

fn arb_pair() -> impl Strategy<Value = (BitMask, BitMask)> {
    (1usize..14, 1usize..14).prop_flat_map(|(h, w)| (arb_mask_of(h, w), arb_mask_of(h, w)))
}

proptest! {
    #[test]
    fn kaggle_round_trips(m in arb_mask()) {
        let s = kaggle::encode(&m);
        prop_assert_eq!(kaggle::decode(&s, m.size()).unwrap(), m.clone());
        prop_assert_eq!(kaggle::encode_cropped(&m.to_cropped()), s.clone());
        prop_assert_eq!(kaggle::decode_cropped(&s, m.size()).unwrap(), m.to_cropped());
        let k = KaggleRle::parse(&s, m.size()).unwrap();
        prop_assert_eq!(k.area(), m.area() as u64);
        prop_assert_eq!(k.bbox(), m.bbox());
        // Starts strictly increase, are 1-based, lengths > 0, runs inside the image.
        let v: Vec<u64> = s.split_whitespace().map(|t| t.parse().unwrap()).collect();
        for p in v.chunks(2) {
            prop_assert!(p[0] >= 1 && p[1] >= 1 && p[0] - 1 + p[1] <= m.size().pixels() as u64);
        }
        for w in v.chunks(2).collect::<Vec<_>>().windows(2) {
            prop_assert!(w[0][0] + w[0][1] < w[1][0]);
        }
    }

    #[test]
    fn dsb_round_trips(m in arb_mask()) {
        let s = dsb::encode(&m);
        prop_assert_eq!(dsb::decode(&s, m.size()).unwrap(), m.clone());
        prop_assert_eq!(dsb::encode_cropped(&m.to_cropped()), s.clone());
        let d = DsbRle::parse(&s, m.size()).unwrap();
        prop_assert_eq!(CocoRle::from_dsb(&d), CocoRle::from_mask(&m));
        prop_assert_eq!(CocoRle::from_mask(&m).to_dsb(), d);
    }

    #[test]
    fn coco_round_trips(m in arb_mask()) {
        let r = CocoRle::from_mask(&m);
        prop_assert_eq!(r.to_mask(), m.clone());
        prop_assert_eq!(r.to_cropped(), m.to_cropped());
        prop_assert_eq!(CocoRle::from_cropped(&m.to_cropped()), r.clone());
        prop_assert_eq!(CocoRle::from_counts_str(&r.to_counts_string(), m.size()).unwrap(), r.clone());
        prop_assert_eq!(CocoRle::from_counts(r.counts().to_vec(), m.size()).unwrap(), r.clone());
        prop_assert_eq!(r.area(), m.area() as u64);
        match m.bbox() {
            Some(b) => prop_assert_eq!(r.to_box_xyxy(), b),
            None => prop_assert_eq!(r.to_bbox(), [0.0; 4]),
        }
        let k = KaggleRle::from_mask(&m);
        prop_assert_eq!(CocoRle::from_kaggle(&k), r.clone());
        prop_assert_eq!(r.to_kaggle(), k);
    }

    #[test]
    fn counts_strings_round_trip_any_counts(counts in proptest::collection::vec(0u32..100_000, 1..40)) {
        let total: u64 = counts.iter().map(|&c| c as u64).sum();
        let size = ImageSize::new(1, total as usize);
        let r = CocoRle::from_counts(counts.clone(), size).unwrap();
        let back = CocoRle::from_counts_str(&r.to_counts_string(), size).unwrap();
        prop_assert_eq!(back.counts(), &counts[..]);
    }

    #[test]
    fn iou_is_symmetric_in_unit_interval_and_exact((a, b) in arb_pair()) {
        let (ra, rb) = (CocoRle::from_mask(&a), CocoRle::from_mask(&b));
        let ab = ra.iou(&rb, false).unwrap();
        let ba = rb.iou(&ra, false).unwrap();
        prop_assert_eq!(ab, ba);
        prop_assert!((0.0..=1.0).contains(&ab));
        prop_assert!((ab - a.iou(&b)).abs() < 1e-12);
        let crowd = ra.iou(&rb, true).unwrap();
        prop_assert!((0.0..=1.0).contains(&crowd) && crowd >= ab);
        let (ka, kb) = (KaggleRle::from_mask(&a), KaggleRle::from_mask(&b));
        prop_assert!((ka.iou(&kb).unwrap() - a.iou(&b)).abs() < 1e-12);
        let (da, db) = (DsbRle::from_mask(&a), DsbRle::from_mask(&b));
        prop_assert!((da.iou(&db).unwrap() - a.iou(&b)).abs() < 1e-12);
        let m = coco::iou_matrix(&[ra.clone(), rb.clone()], std::slice::from_ref(&rb), &[false]).unwrap();
        prop_assert_eq!(m, vec![ab, rb.iou(&rb, false).unwrap()]);
        let or: usize = a.as_slice().iter().zip(b.as_slice()).filter(|(x, y)| **x | **y != 0).count();
        let and: usize = a.as_slice().iter().zip(b.as_slice()).filter(|(x, y)| **x & **y != 0).count();
        prop_assert_eq!(ra.union(&rb).unwrap().area(), or as u64);
        prop_assert_eq!(ra.intersect(&rb).unwrap().area(), and as u64);
        prop_assert_eq!(ra.intersection_area(&rb).unwrap(), and as u64);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_strings(s in ".{0,80}", h in 0usize..30, w in 0usize..30) {
        let size = ImageSize::new(h, w);
        let _ = KaggleRle::parse(&s, size);
        let _ = DsbRle::parse(&s, size);
        let _ = CocoRle::from_counts_str(&s, size);
    }

    #[test]
    fn parsers_never_panic_on_number_soup(v in proptest::collection::vec(0u64..40, 0..12), h in 1usize..6, w in 1usize..6) {
        let s = v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        let size = ImageSize::new(h, w);
        if let Ok(k) = KaggleRle::parse(&s, size) {
            prop_assert_eq!(kaggle::decode(&k.to_string(), size).unwrap(), k.to_mask());
        }
        let alpha: String = v.iter().map(|&x| char::from(48 + (x as u8 % 64))).collect();
        let _ = CocoRle::from_counts_str(&alpha, size);
    }

    #[test]
    fn polygons_never_panic_and_stay_inside(xy in proptest::collection::vec(-20.0f64..60.0, 6..24), h in 0usize..40, w in 0usize..40) {
        let n = xy.len() / 2 * 2;
        if let Ok(r) = CocoRle::from_polygon(&xy[..n], h, w) {
            prop_assert!(r.area() <= (h * w) as u64);
            prop_assert_eq!(r.counts().iter().map(|&c| c as u64).sum::<u64>(), (h * w) as u64);
        }
    }
}

// ---- Fuzzing of the parsers of user text (counts set explicitly; the whole block runs in about a
// second in the dev profile). ----

const CASES_RLE_TEXT: u32 = 10_000;
const CASES_COUNTS: u32 = 10_000;
const CASES_POLYGONS: u32 = 5_000;

/// A token of a `"start length …"` string: plausible numbers, the edges of u32 / u64, signs,
/// decimals, non-ASCII digits and junk.
fn rle_token() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0u64..50).prop_map(|v| v.to_string()),
        1 => any::<u64>().prop_map(|v| v.to_string()),
        2 => prop::sample::select(vec![
            "4294967295", "4294967296", "18446744073709551615", "18446744073709551616",
            "0", "00", "-1", "+1", "1.0", "1e3", "", "١", "٣", "x", "NaN",
        ])
        .prop_map(String::from),
    ]
}

/// Image sizes that are small, empty, or at the edges of the pixel count (`u32` pixels at most).
fn any_size() -> impl Strategy<Value = ImageSize> {
    prop_oneof![
        8 => (0usize..8, 0usize..8).prop_map(|(h, w)| ImageSize::new(h, w)),
        1 => prop::sample::select(vec![
            ImageSize::new(65535, 65537),
            ImageSize::new(65536, 65536),
            ImageSize::new(1, u32::MAX as usize),
            ImageSize::new(1, u32::MAX as usize + 1),
            ImageSize::new(usize::MAX, 2),
            ImageSize::new(usize::MAX, usize::MAX),
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES_RLE_TEXT, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_kaggle_and_dsb_strings(
        tokens in prop::collection::vec(rle_token(), 0..10),
        seps in prop::collection::vec(prop::sample::select(vec![" ", "  ", "\t", "\n", "\r\n", "\u{a0}", ","]), 10),
        size in any_size(),
    ) {
        let mut s = String::new();
        for (i, t) in tokens.iter().enumerate() {
            s.push_str(t);
            s.push_str(seps[i]);
        }
        match KaggleRle::parse(&s, size) {
            Ok(k) => {
                // Parsed, so the pixel count fits (`pixels()` itself would overflow on usize::MAX).
                prop_assert!(k.area() <= size.pixels() as u64);
                prop_assert_eq!(KaggleRle::parse(&k.to_string(), size).unwrap(), k);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        if let Ok(d) = DsbRle::parse(&s, size) {
            prop_assert_eq!(DsbRle::parse(&d.to_string(), size).unwrap(), d);
        }
        if size.height.checked_mul(size.width).is_some_and(|p| p <= 64) {
            let _ = kaggle::decode_cropped(&s, size);
            let _ = dsb::decode_cropped(&s, size);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES_COUNTS, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_coco_counts_strings_and_the_batch_parser_agree(
        s in prop_oneof![6 => "[0-o]{0,16}", 1 => "[0-o]{0,4}[^0-o][0-o]{0,4}", 1 => ".{0,8}"],
        size in prop_oneof![6 => (0usize..9, 0usize..9).prop_map(|(h, w)| ImageSize::new(h, w)), 1 => any_size()],
    ) {
        let reference = CocoRle::from_counts_str(&s, size);
        if let Ok(mut batch) = crate::batch::CocoBatch::new(size) {
            let got = batch.push_counts_str(&s);
            prop_assert_eq!(got.is_ok(), reference.is_ok(), "{:?} {:?}", got, reference);
            if let Ok(r) = &reference {
                prop_assert_eq!(batch.area(0), r.area());
            }
        }
        if let Ok(r) = reference {
            prop_assert_eq!(CocoRle::from_counts_str(&r.to_counts_string(), size).unwrap(), r);
        }
    }

    #[test]
    fn fuzz_coco_counts_lists(counts in prop::collection::vec(prop_oneof![4 => 0i64..20, 1 => any::<i64>()], 0..10), size in any_size()) {
        if let Ok(r) = CocoRle::from_counts_i64(&counts, size) {
            prop_assert_eq!(r.counts().iter().map(|&c| c as u64).sum::<u64>(), size.pixels() as u64);
        }
    }
}

/// A polygon coordinate: inside or near a small image, far away, or at the edges of f64.
fn coordinate() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => -5.0f64..45.0,
        1 => prop::sample::select(vec![
            1e9, -1e9, 4.3e8, 2.2e9, f64::MAX, f64::MIN, f64::MIN_POSITIVE, -0.0, f64::NAN,
            f64::INFINITY, f64::NEG_INFINITY,
        ]),
        1 => any::<f64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES_POLYGONS, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_polygons_and_boxes(
        polys in prop::collection::vec(prop::collection::vec(coordinate(), 0..14), 0..3),
        h in 0usize..40,
        w in 0usize..40,
        bbox in [coordinate(), coordinate(), coordinate(), coordinate()],
    ) {
        if let Ok(r) = CocoRle::from_polygons(&polys, h, w) {
            prop_assert!(r.area() <= (h * w) as u64);
            prop_assert_eq!(r.counts().iter().map(|&c| c as u64).sum::<u64>(), (h * w) as u64);
        }
        if let Ok(r) = CocoRle::from_bbox(bbox, h, w) {
            prop_assert!(r.area() <= (h * w) as u64);
        }
    }
}

/// Found by `fuzz_polygons_and_boxes` (the process aborted: "memory allocation of 2147483648 bytes
/// failed" under a 4 GB limit): a box or vertex far outside the image (a results JSON with
/// `bbox = [0, 0, 1e9, 10]`) made the rasteriser store some 2·10^9 boundary points per edge (tens
/// of GB) before clipping. Now a typed error naming the coordinate.
#[test]
fn far_outside_vertices_are_an_error_not_gigabytes() {
    let e = CocoRle::from_bbox([0.0, 0.0, 1e9, 10.0], 20, 30).unwrap_err();
    assert!(matches!(e, crate::Error::PolygonFarOutside { index: 4, .. }), "{e}");
    assert!(e.to_string().contains("20x30"), "{e}");
    let e = CocoRle::from_polygons(
        &[vec![1.0, 1.0, 5.0, 1.0, 3.0, 4.0], vec![0.0, 0.0, 1.0, -1e12, 2.0, 2.0]],
        20,
        30,
    )
    .unwrap_err();
    assert!(matches!(e, crate::Error::PolygonFarOutside { polygon: 1, index: 3, .. }), "{e}");
    // One image size out is still rasterised (and clipped) as pycocotools does.
    let r = CocoRle::from_polygon(&[-31.0, -31.0, 61.0, -31.0, 61.0, 51.0, -31.0, 51.0], 20, 30)
        .unwrap();
    assert_eq!(r.area(), 600);
}
