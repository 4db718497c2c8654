//! Fuzzing of the post-processing TOML (`cellseg_core::config::parse_toml` into [`PostprocConfig`],
//! then `validate` and `params`): arbitrary text and structure-aware documents (every key with
//! values of any type and at the edges). Every input must give `Ok` or a typed error naming the
//! file; the number of cases is explicit.

use cellseg_core::CellType;
use cellseg_core::config::parse_toml;
use cellseg_core::testing::{TextEdit, edited, fuzz};
use cellseg_postproc::config::PostprocConfig;
use proptest::prelude::*;

const CASES_POSTPROC_TOML: u32 = 10_000;

fn value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        3 => (0.0f64..1.0).prop_map(|v| format!("{v}")),
        2 => (0u64..200).prop_map(|v| v.to_string()),
        2 => prop::sample::select(vec![
            "0", "1", "1.0", "-0.0", "1.5", "-1", "inf", "-inf", "nan", "1e39", "1e-320",
            "18446744073709551615", "9223372036854775807", "-9223372036854775808", "true",
            "\"seed_smallest\"", "\"min_area\"", "\"other\"", "{}", "0x10", "1_000",
        ])
        .prop_map(String::from),
    ];
    prop_oneof![
        2 => scalar.clone(),
        3 => prop::collection::vec(scalar, 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
    ]
}

const KEYS: &[&str] = &[
    "version",
    "mask_threshold",
    "confidence_threshold",
    "mask_nms_threshold",
    "box_nms_threshold",
    "min_size",
    "small_masks",
    "corrupt_astro",
    "fill_holes",
    "remove_overlap",
    "keep_empty",
    "mask_treshold",
];

#[test]
fn fuzz_postproc_toml() {
    let doc = prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 0..8).prop_map(
        |kv| {
            let mut seen = Vec::new();
            let mut out = String::new();
            for (k, v) in kv {
                if !seen.contains(&k) {
                    seen.push(k);
                    out.push_str(&format!("{k} = {v}\n"));
                }
            }
            out
        },
    );
    let text = prop_oneof![6 => doc, 1 => ".{0,80}", 1 => "[a-z_ =\\[\\],.0-9\"\n]{0,60}"];
    fuzz("postproc toml", CASES_POSTPROC_TOML, &text, |t| {
        match parse_toml::<PostprocConfig>(&t, "post.toml") {
            Ok(cfg) => {
                if cfg.validate().is_ok() {
                    for ct in CellType::ALL {
                        let p = cfg.params(ct);
                        prop_assert!((0.0..=1.0).contains(&p.mask_threshold));
                    }
                    return Ok(true);
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("post.toml"), "{}", e),
        }
        Ok(false)
    });
}

const CASES_OOF: u32 = 5_000;

/// FNV-1a 64 (the OOF checksum).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// One detection's fields, any value (NaN scores, rectangles out of the image, huge sides).
fn detection() -> impl Strategy<Value = Vec<u8>> {
    let side = prop_oneof![4 => 0u32..6, 1 => Just(u32::MAX), 1 => Just(1 << 20)];
    (
        prop::collection::vec(
            prop_oneof![4 => -2.0f32..40.0, 1 => Just(f32::NAN), 1 => Just(f32::INFINITY)],
            5,
        ),
        0u32..12,
        0u32..12,
        0u32..12,
        side.clone(),
        side,
        0usize..40,
    )
        .prop_map(|(f, label, top, left, h, w, mask_len)| {
            let mut out = Vec::new();
            for v in f {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [label, top, left, h, w] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            // Usually exactly h·w mask bytes, sometimes fewer or more.
            let exact = (h as usize).saturating_mul(w as usize);
            let n = if exact <= 64 && mask_len % 4 != 0 { exact } else { mask_len };
            out.extend((0..n).map(|i| (i * 37) as u8));
            out
        })
}

/// An image record: id (any length, maybe not UTF-8), size (0 and huge included), a count that
/// may disagree with the detections, and a checksum that is right 3 times in 4.
fn image_record() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![
        4 => "[a-z0-9]{1,8}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => Just(vec![0xff, 0xfe]),
        1 => Just(vec![b'x'; 4097]),
    ];
    let side = prop_oneof![4 => 1u32..24, 1 => Just(0u32), 1 => Just(u32::MAX)];
    (
        id,
        side.clone(),
        side,
        prop::collection::vec(detection(), 0..4),
        prop_oneof![3 => Just(None), 1 => any::<u32>().prop_map(Some)],
        0u8..4,
    )
        .prop_map(|(id, h, w, dets, count, check)| {
            let mut r = vec![b'I'];
            r.extend_from_slice(&(id.len() as u32).to_le_bytes());
            r.extend_from_slice(&id);
            r.extend_from_slice(&h.to_le_bytes());
            r.extend_from_slice(&w.to_le_bytes());
            r.extend_from_slice(&count.unwrap_or(dets.len() as u32).to_le_bytes());
            for d in &dets {
                r.extend_from_slice(d);
            }
            let sum = if check == 0 { 1 } else { fnv1a(&r) };
            r.extend_from_slice(&sum.to_le_bytes());
            r
        })
}

fn oof_file() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        prop_oneof![6 => Just(1u32), 1 => any::<u32>()],
        prop_oneof![6 => Just(0u32), 1 => any::<u32>()],
        prop::collection::vec(image_record(), 0..4),
        prop_oneof![4 => Just(None), 1 => any::<u64>().prop_map(Some)],
        prop_oneof![6 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 1..4)],
        prop_oneof![5 => Just(None), 1 => any::<usize>().prop_map(Some)],
    )
        .prop_map(|(version, flags, records, images, trailing, cut)| {
            let mut b = b"CSEG-OOF".to_vec();
            b.extend_from_slice(&version.to_le_bytes());
            b.extend_from_slice(&flags.to_le_bytes());
            for r in &records {
                b.extend_from_slice(r);
            }
            let mut end = vec![b'E'];
            end.extend_from_slice(&images.unwrap_or(records.len() as u64).to_le_bytes());
            let sum = fnv1a(&end);
            end.extend_from_slice(&sum.to_le_bytes());
            b.extend_from_slice(&end);
            b.extend_from_slice(&trailing);
            if let Some(c) = cut {
                b.truncate(c % (b.len() + 1));
            }
            b
        });
    prop_oneof![6 => structured, 1 => prop::collection::vec(any::<u8>(), 0..64)]
}

#[test]
fn fuzz_oof_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oof.bin");
    fuzz("oof file", CASES_OOF, &oof_file(), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        match cellseg_postproc::oof::read_oof(&path) {
            Ok(images) => {
                for (_, d) in &images {
                    prop_assert!(d.scores.iter().all(|s| !s.is_nan()));
                }
                Ok(true)
            }
            Err(e) => {
                prop_assert!(e.to_string().contains("oof.bin"), "{}", e);
                Ok(false)
            }
        }
    });
}

const CASES_TWEAK_TOML: u32 = 4_000;

/// The threshold grid (`TweakGrid::load`): `configs/tweak.toml` with values replaced (any type,
/// edges, long lists), lines dropped, the file cut; arbitrary bytes.
#[test]
fn fuzz_tweak_grid_toml() {
    let valid =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/tweak.toml"))
            .expect("configs/tweak.toml");
    let edit = prop_oneof![
        3 => (any::<usize>(), value()).prop_map(|(n, v)| TextEdit::Value(n, v)),
        1 => any::<usize>().prop_map(TextEdit::Drop),
        1 => any::<usize>().prop_map(TextEdit::Cut),
    ];
    let mutated = prop::collection::vec(edit, 1..5).prop_map(move |e| edited(&valid, &e));
    let input = prop_oneof![5 => mutated, 1 => prop::collection::vec(any::<u8>(), 0..120)];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tweak.toml");
    fuzz("tweak toml", CASES_TWEAK_TOML, &input, |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        match cellseg_postproc::tweak::TweakGrid::load(&path) {
            Ok(_) => Ok(true),
            Err(e) => {
                prop_assert!(e.to_string().contains("tweak.toml"), "{}", e);
                Ok(false)
            }
        }
    });
}
