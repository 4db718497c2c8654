//! Fuzzing of the post-processing TOML (`cellseg_core::config::parse_toml` into [`PostprocConfig`],
//! then `validate` and `params`): arbitrary text and structure-aware documents (every key with
//! values of any type and at the edges). Every input must give `Ok` or a typed error naming the
//! file; the number of cases is explicit.

use cellseg_core::CellType;
use cellseg_core::config::parse_toml;
use cellseg_postproc::config::PostprocConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

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
    let n = std::cell::Cell::new(0u32);
    let valid = std::cell::Cell::new(0u32);
    TestRunner::new(Config {
        cases: CASES_POSTPROC_TOML,
        failure_persistence: None,
        ..Config::default()
    })
    .run(&text, |t| {
        n.set(n.get() + 1);
        match parse_toml::<PostprocConfig>(&t, "post.toml") {
            Ok(cfg) => {
                if cfg.validate().is_ok() {
                    valid.set(valid.get() + 1);
                    for ct in CellType::ALL {
                        let p = cfg.params(ct);
                        prop_assert!((0.0..=1.0).contains(&p.mask_threshold));
                    }
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("post.toml"), "{}", e),
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(n.get(), CASES_POSTPROC_TOML);
    eprintln!("postproc toml: {} of {} valid", valid.get(), n.get());
}
