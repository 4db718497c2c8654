use super::*;
use crate::synthetic;
use cellseg_core::{BitMask, BoxXyxy, CellType, CroppedMask, Instances};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Checks the invariants every augmented sample must satisfy.
fn check_consistent(s: &Sample) -> std::result::Result<(), String> {
    let size = s.image.size();
    let inst = &s.instances;
    if inst.image_size != size {
        return Err(format!("instances {:?} vs image {:?}", inst.image_size, size));
    }
    if inst.boxes.len() != inst.masks.len() || inst.boxes.len() != inst.labels.len() {
        return Err("parallel arrays differ".into());
    }
    for (i, (b, m)) in inst.boxes.iter().zip(&inst.masks).enumerate() {
        if !b.is_nonempty() {
            return Err(format!("box {i} empty: {b:?}"));
        }
        if b.x1 < 0.0 || b.y1 < 0.0 || b.x2 > size.width as f32 || b.y2 > size.height as f32 {
            return Err(format!("box {i} outside {size:?}: {b:?}"));
        }
        if m.image_size() != size {
            return Err(format!("mask {i} of another size"));
        }
        if let Some(mb) = m.bbox() {
            // the seed clips boxes instead of recomputing them: the mask lies inside its box
            if mb.x1 < b.x1 || mb.y1 < b.y1 || mb.x2 > b.x2 || mb.y2 > b.y2 {
                return Err(format!("mask {i} bbox {mb:?} leaves box {b:?}"));
            }
        }
    }
    Ok(())
}

fn sample(t: CellType, seed: u64) -> Sample {
    let (image, instances) = synthetic::generate(t, ImageSize::new(300, 340), seed);
    Sample { id: format!("s{seed}"), image, instances }
}

#[test]
fn default_config_matches_documented_defaults_and_the_toml() {
    let c = AugmentConfig::default();
    assert_eq!((c.crop.height, c.crop.width), (256, 256));
    assert_eq!((c.flip.horizontal, c.flip.vertical, c.flip.diagonal), (0.25, 0.25, 0.0));
    assert_eq!(c.flip_paste.p, 0.3);
    let toml = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/augment.toml");
    assert_eq!(AugmentConfig::load(toml).unwrap(), c);
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let err =
        cellseg_core::config::parse_toml::<AugmentConfig>("[flip]\nhorizonal = 0.5", "a.toml")
            .unwrap_err()
            .to_string();
    assert!(err.contains("horizonal") && err.contains("a.toml"), "{err}");
    let mut c = AugmentConfig::default();
    c.flip.horizontal = 0.9;
    let err = Augment::new(c).unwrap_err().to_string();
    assert!(err.contains("flip (sum)"), "{err}");
}

/// Found by `tests/fuzz.rs`: `inf` (or `1e39`, past f32) as the end of a sampled range passed
/// validation and then panicked in `random_range` (`NonFinite`) when the transform ran.
#[test]
fn infinite_range_ends_are_invalid_not_a_panic_later() {
    for (text, key) in [
        ("[gamma]\np = 1.0\nmax = inf", "gamma.min/max"),
        ("[gamma]\np = 0.7\nmax = 1e39", "gamma.min/max"),
        ("[noise]\np = 1.0\nmax_sigma = inf", "noise.max_sigma"),
        ("[noise]\np = 1.0\nmax_sigma = nan", "noise.max_sigma"),
    ] {
        let cfg: AugmentConfig = cellseg_core::config::parse_toml(text, "a.toml").unwrap();
        let err = Augment::new(cfg).unwrap_err().to_string();
        assert!(err.contains(key), "{text:?}: {err}");
    }
    // The largest finite ends still run.
    let text = "[gamma]\np = 1.0\nmin = 1e-45\nmax = 3.4e38\n[noise]\np = 1.0\nmax_sigma = 3e38";
    let aug = Augment::new(cellseg_core::config::parse_toml(text, "a.toml").unwrap()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    aug.apply(&sample(CellType::Astro, 1), &mut rng).unwrap();
}

#[test]
fn every_augmentation_keeps_boxes_valid_on_synthetic_cells() {
    let aug = Augment::new(AugmentConfig::all_on()).unwrap();
    for (k, t) in CellType::ALL.into_iter().enumerate() {
        let s = sample(t, k as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(k as u64);
        for _ in 0..30 {
            let out = aug.apply(&s, &mut rng).unwrap();
            assert_eq!(out.image.size(), ImageSize::new(256, 256));
            assert!(!out.instances.is_empty());
            check_consistent(&out).unwrap();
        }
    }
}

#[test]
fn crop_keeps_box_and_mask_consistent_with_the_source() {
    let s = sample(CellType::Cort, 5);
    let win = crop::CropWindow { top: 20, left: 30, height: 256, width: 256 };
    let out = crop::crop_sample(&s, win, false);
    let kept = crop::crop_boxes(&s.instances.boxes, win);
    assert_eq!(kept.len(), out.instances.len());
    for ((i, b), (ob, om)) in kept.iter().zip(out.instances.boxes.iter().zip(&out.instances.masks))
    {
        assert_eq!(b, ob);
        let src = s.instances.masks[*i].to_full();
        let dst = om.to_full();
        for r in 0..256 {
            for c in 0..256 {
                assert_eq!(dst.get(r, c), src.get(r + 20, c + 30));
            }
        }
        // boxes are clipped, not recomputed (seed): the cropped mask lies inside its box, and the
        // box equals the mask's box where the crop does not cut the cell
        if let Some(mb) = om.bbox() {
            assert!(mb.x1 >= ob.x1 && mb.y1 >= ob.y1 && mb.x2 <= ob.x2 && mb.y2 <= ob.y2);
            let src_box = s.instances.boxes[*i].translate(-30.0, -20.0);
            if src_box == src_box.clip(ImageSize::new(256, 256)) {
                assert_eq!(mb, *ob);
            }
        }
    }
    // pixels
    for r in 0..256 {
        for c in 0..256 {
            assert_eq!(out.image.get(r, c, 0), s.image.get(r + 20, c + 30, 0));
        }
    }
}

#[test]
fn crop_retries_and_reports_images_without_instances() {
    let mut s = sample(CellType::Cort, 1);
    s.instances = Instances::empty(s.image.size());
    let aug = Augment::new(AugmentConfig::default()).unwrap();
    let err = aug.apply(&s, &mut ChaCha8Rng::seed_from_u64(0)).unwrap_err();
    assert!(matches!(err, Error::NoInstanceSurvives { tries: 100, .. }), "{err}");
    assert!(err.to_string().contains(&s.id));
}

#[test]
fn flip_paste_blends_and_doubles_cort_instances_only() {
    let s = sample(CellType::Cort, 2);
    let fp = flip_paste::flip_paste(&s);
    assert_eq!(fp.instances.len(), 2 * s.instances.len());
    let w = s.image.size().width;
    let (a, b) = (s.image.get(10, 3, 0) as u16, s.image.get(10, w - 4, 0) as u16);
    assert_eq!(fp.image.get(10, 3, 0) as u16, (a + b) / 2);
    assert!(flip_paste::applies_to(&s.instances, 2));
    assert!(!flip_paste::applies_to(&sample(CellType::Astro, 2).instances, 2));
    check_consistent(&fp).unwrap();
}

#[test]
fn flips_are_applied_for_real_with_the_intended_rates() {
    let mut c = AugmentConfig::default();
    c.crop.enabled = false;
    c.flip_paste.p = 0.0;
    let aug = Augment::new(c).unwrap();
    let s = sample(CellType::Shsy5y, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (mut h, mut v, mut none) = (0, 0, 0);
    for _ in 0..400 {
        let out = aug.apply(&s, &mut rng).unwrap();
        if out.image == s.image {
            none += 1;
        } else if out.image == geometry::flip_image(&s.image, Flip::Horizontal) {
            h += 1;
        } else if out.image == geometry::flip_image(&s.image, Flip::Vertical) {
            v += 1;
        }
    }
    assert_eq!(h + v + none, 400);
    assert!(
        (70..130).contains(&h) && (70..130).contains(&v) && (150..250).contains(&none),
        "{h} {v} {none}"
    );
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    (
        20usize..80,
        20usize..80,
        proptest::collection::vec(
            (0usize..80, 0usize..80, 1usize..30, 1usize..30, 0usize..3),
            1..12,
        ),
        any::<u64>(),
    )
        .prop_map(|(h, w, rects, seed)| {
            let size = ImageSize::new(h, w);
            let mut inst = Instances::empty(size);
            for (r, c, rh, rw, label) in rects {
                let (r, c) = (r % h, c % w);
                let mut m = BitMask::zeros(size);
                for rr in r..(r + rh).min(h) {
                    for cc in c..(c + rw).min(w) {
                        // a non-convex shape: an L
                        if rr == r || cc == c {
                            m.set(rr, cc, true);
                        }
                    }
                }
                let cm = CroppedMask::from(&m);
                inst.boxes.push(cm.bbox().unwrap_or(BoxXyxy::default()));
                inst.labels.push(label);
                inst.masks.push(cm);
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let data = (0..h * w).map(|_| rng.random::<u8>()).collect();
            Sample { id: "p".into(), image: Image::new(size, 1, data).unwrap(), instances: inst }
        })
}

use crate::raster::Image;
use rand::RngExt;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_augmentation_makes_an_empty_or_outside_box(s in arb_sample(), seed in any::<u64>(), crop in 8usize..40, recompute in any::<bool>()) {
        let mut c = AugmentConfig::all_on();
        c.crop.height = crop;
        c.crop.width = crop;
        c.crop.recompute_boxes = recompute;
        let aug = Augment::new(c).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        match aug.apply(&s, &mut rng) {
            Ok(out) => {
                prop_assert!(check_consistent(&out).is_ok(), "{:?}", check_consistent(&out));
                if recompute {
                    for (b, m) in out.instances.boxes.iter().zip(&out.instances.masks) {
                        prop_assert_eq!(m.bbox(), Some(*b));
                    }
                }
            }
            Err(Error::NoInstanceSurvives { .. }) => {}
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn flipping_a_sample_twice_is_the_identity(s in arb_sample()) {
        for f in [Flip::Horizontal, Flip::Vertical, Flip::Diagonal] {
            let once = geometry::flip_instances(&s.instances, f);
            let twice = geometry::flip_instances(&once, f);
            prop_assert_eq!(&twice.boxes, &s.instances.boxes);
            for (a, b) in twice.masks.iter().zip(&s.instances.masks) {
                prop_assert_eq!(a.to_full(), b.to_full());
            }
            prop_assert_eq!(geometry::flip_image(&geometry::flip_image(&s.image, f), f), s.image.clone());
        }
    }
}
