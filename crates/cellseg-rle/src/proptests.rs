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
