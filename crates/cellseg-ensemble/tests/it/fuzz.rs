//! Fuzzing of the ensemble's TOML ([`EnsembleConfig::load`]): the seed's `configs/ensemble.toml`
//! mutated (a value replaced by one of any type or at the edges, lines dropped or added, the file
//! cut, bytes flipped) and arbitrary bytes. Every input gives `Ok` or a typed error naming the
//! file — no panic; the number of cases is a constant, printed when the test passes.

use cellseg_core::testing::{TextEdit, edited, fuzz};
use cellseg_ensemble::EnsembleConfig;
use proptest::prelude::*;

const CASES_ENSEMBLE_TOML: u32 = 4_000;

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => (-2.0f64..2.0).prop_map(|v| format!("{v}")),
        2 => (0u64..100_000).prop_map(|v| v.to_string()),
        3 => prop::sample::select(vec![
            "0", "-1", "1e39", "nan", "inf", "18446744073709551615", "-9223372036854775808",
            "true", "\"\"", "\"identity\"", "\"diagonal\"", "\"astro\"", "[]", "[1, 2]",
            "[0.5, 0.5, 0.5]", "[[0, 1], [2]]", "{}", "[\"identity\", \"identity\"]",
        ])
        .prop_map(String::from),
    ]
}

#[test]
fn fuzz_ensemble_toml() {
    let valid = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/ensemble.toml"
    ))
    .expect("configs/ensemble.toml");
    let edit = prop_oneof![
        3 => (any::<usize>(), scalar()).prop_map(|(n, v)| TextEdit::Value(n, v)),
        1 => any::<usize>().prop_map(TextEdit::Drop),
        1 => any::<usize>().prop_map(TextEdit::Cut),
    ];
    let input = prop_oneof![
        4 => prop::collection::vec(edit, 1..5).prop_map(move |e| edited(&valid, &e)),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ensemble.toml");
    fuzz("ensemble.toml", CASES_ENSEMBLE_TOML, &input, |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        match EnsembleConfig::load(&path) {
            Ok(_) => Ok(true),
            Err(e) => {
                prop_assert!(e.to_string().contains("ensemble.toml"), "{e}");
                Ok(false)
            }
        }
    });
}
