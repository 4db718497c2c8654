//! Fuzzing of every file a run folder holds and every training-side config: the safetensors
//! headers of `model.safetensors` / `optimizer.safetensors`, `state.json`, `latest.json`,
//! `model.toml` (the model card), `train.toml` ([`TrainConfig`]) and the detector's TOML
//! ([`DetectorConfig`]). Inputs are arbitrary bytes and mutations of a valid file (a value
//! replaced by one of any type or at the edges, lines dropped or added, the file cut, bytes
//! flipped). Every input must give `Ok` or a typed error naming the file — no panic; the number of
//! cases of each target is a constant, printed when the test passes.

use cellseg_core::config::parse_toml;
use cellseg_core::testing::torch_lock;
use cellseg_core::testing::{TextEdit, edited, fuzz};
use cellseg_train::checkpoint::{CheckpointStore, STATE_FILE, load_weights, read_tensors};
use cellseg_train::detector::{Detector, DetectorConfig, ModelCard};
use cellseg_train::{TrainConfig, TrainableModel};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor, nn};

const CASES_SAFETENSORS: u32 = 3_000;
const CASES_STATE_JSON: u32 = 3_000;
const CASES_LATEST_JSON: u32 = 2_000;
const CASES_MODEL_CARD: u32 = 2_000;
const CASES_TRAIN_TOML: u32 = 4_000;
const CASES_DETECTOR_TOML: u32 = 4_000;

/// Values of every type and at the edges, for TOML and JSON alike.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => (-2.0f64..2.0).prop_map(|v| format!("{v}")),
        2 => (0u64..100_000).prop_map(|v| v.to_string()),
        3 => prop::sample::select(vec![
            "0", "-1", "1e39", "-1e-320", "nan", "inf", "18446744073709551615",
            "9223372036854775807", "-9223372036854775808", "true", "false", "null", "\"\"",
            "\"x\"", "\"adamw\"", "\"cosine\"", "\"mask_rcnn\"", "\"htc\"", "\"../../etc\"", "[]",
            "[1, 2]", "{}", "[[1]]", "\"\\u0000\"",
        ])
        .prop_map(String::from),
    ]
}

fn edit() -> impl Strategy<Value = TextEdit> {
    let line = "[a-z_.]{1,12} = ".prop_flat_map(|k| scalar().prop_map(move |v| format!("{k}{v}")));
    prop_oneof![
        5 => (any::<usize>(), scalar()).prop_map(|(n, v)| TextEdit::Value(n, v)),
        2 => any::<usize>().prop_map(TextEdit::Drop),
        1 => (any::<usize>(), line).prop_map(|(n, l)| TextEdit::Insert(n, l)),
        1 => any::<usize>().prop_map(TextEdit::Cut),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(n, b)| TextEdit::Byte(n, b)),
    ]
}

/// Arbitrary bytes (1 in 4) or a mutation of `valid`.
fn file_from(valid: String) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(edit(), 1..5).prop_map(move |e| edited(&valid, &e)),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn tiny_model() -> Detector {
    let _torch = torch_lock();
    tch::manual_seed(0);
    Detector::from_config(Device::Cpu, &DetectorConfig::tiny(3)).unwrap()
}

#[test]
fn fuzz_safetensors_headers() {
    // A valid file: an 8-byte little-endian header length, a JSON header, the data.
    let dir = tempfile::tempdir().unwrap();
    let valid_path = dir.path().join("valid.safetensors");
    let w = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]);
    let b = Tensor::from_slice(&[1i64, 2]);
    Tensor::write_safetensors(&[("a.weight", &w), ("a.bias", &b)], &valid_path).unwrap();
    let valid = std::fs::read(&valid_path).unwrap();
    let header_len = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(valid[8..8 + header_len].to_vec()).unwrap();
    let data = valid[8 + header_len..].to_vec();
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = vs.root().sub("a").zeros("weight", &[2, 3]);

    // Header edits: the JSON text mutated (keys, dtypes, shapes, offsets), its length field
    // right or wrong, the data cut or extended.
    let json_value = prop_oneof![
        scalar(),
        prop::sample::select(vec![
            "\"F32\"",
            "\"F16\"",
            "\"BF16\"",
            "\"I64\"",
            "\"U8\"",
            "\"BOOL\"",
            "\"F64\"",
            "\"X9\"",
            "[2,3]",
            "[3,2]",
            "[0]",
            "[-1]",
            "[9223372036854775807, 2]",
            "[0,24]",
            "[24,24]",
            "[0,999999]",
            "[24,0]",
        ])
        .prop_map(String::from),
    ];
    let header_edit = (any::<usize>(), json_value).prop_map(|(i, v)| (i, v));
    let structured = (
        prop::collection::vec(header_edit, 0..4),
        prop_oneof![Just(0i64), -9i64..9, Just(i64::MAX / 2)],
        0usize..3,
        any::<u8>(),
    )
        .prop_map(move |(edits, len_delta, data_mode, byte)| {
            // Replace the value after the i-th `:` of the header.
            let mut h = header.clone();
            for (i, v) in edits {
                let colons: Vec<usize> = h.match_indices(':').map(|(p, _)| p).collect();
                if colons.is_empty() {
                    break;
                }
                let p = colons[i % colons.len()] + 1;
                let end = h[p..].find([',', '}']).map_or(h.len(), |e| {
                    // A value that is an array ends at its `]`.
                    if h[p..].starts_with('[') {
                        h[p..].find(']').map_or(p + e, |q| p + q + 1)
                    } else {
                        p + e
                    }
                });
                h.replace_range(p..end.max(p), &v);
            }
            let len = (h.len() as i64 + len_delta).max(0) as u64;
            let mut out = len.to_le_bytes().to_vec();
            out.extend_from_slice(h.as_bytes());
            match data_mode {
                0 => out.extend_from_slice(&data),
                1 => out.extend_from_slice(&data[..data.len() / 2]),
                _ => {
                    out.extend_from_slice(&data);
                    out.push(byte);
                }
            }
            out
        });
    let input = prop_oneof![4 => structured, 1 => prop::collection::vec(any::<u8>(), 0..64)];
    let path = dir.path().join("model.safetensors");
    fuzz("safetensors", CASES_SAFETENSORS, &input, |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        let read = read_tensors(&path);
        if let Err(e) = &read {
            prop_assert!(e.to_string().contains("model.safetensors"), "{e}");
        }
        if let Err(e) = load_weights(&vs, &path) {
            prop_assert!(e.to_string().contains("model.safetensors"), "{e}");
        }
        Ok(read.is_ok())
    });
}

/// A run folder with one checkpoint of the tiny detector, and its `state.json` text.
fn run_folder() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path());
    let model = tiny_model();
    let weights = cellseg_train::checkpoint::named_variables(model.var_store());
    let state = cellseg_train::TrainState {
        format: cellseg_train::checkpoint::STATE_FORMAT,
        step: 4,
        epoch: 1,
        batch_in_epoch: 2,
        schedule: cellseg_train::LrSchedule::new(&Default::default(), 1e-3, 100),
        rng_algorithm: cellseg_train::sampler::ALGORITHM.into(),
        optimizer_steps: Default::default(),
        loss_scale: None,
        nonfinite_steps: 1,
        nonfinite_streak: vec![cellseg_train::SkippedBatch {
            step: 3,
            image_ids: vec!["a".into()],
        }],
        best: None,
        config: TrainConfig::default(),
        world_size: 1,
        checksums: Default::default(),
    };
    let ckpt = store.save(&weights, &[], &state, Some(0.5), 2).unwrap();
    if let Some(card) = model.description().unwrap() {
        std::fs::write(dir.path().join("model.toml"), card).unwrap();
    }
    let text = std::fs::read_to_string(ckpt.join(STATE_FILE)).unwrap();
    (dir, text)
}

#[test]
fn fuzz_state_json() {
    let (dir, valid) = run_folder();
    let ckpt = CheckpointStore::new(dir.path()).latest_dir().unwrap().unwrap();
    let path = ckpt.join(STATE_FILE);
    fuzz("state.json", CASES_STATE_JSON, &file_from(valid), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        match CheckpointStore::load_dir(&ckpt) {
            Ok(_) => Ok(true),
            Err(e) => {
                prop_assert!(e.to_string().contains("state.json"), "{e}");
                Ok(false)
            }
        }
    });
}

#[test]
fn fuzz_latest_json_and_the_resume_fallback() {
    let (dir, _) = run_folder();
    let latest = dir.path().join("latest.json");
    let valid = std::fs::read_to_string(&latest).unwrap();
    let vs = tiny_model();
    let store = CheckpointStore::new(dir.path());
    fuzz("latest.json", CASES_LATEST_JSON, &file_from(valid), |bytes| {
        std::fs::write(&latest, &bytes).unwrap();
        if let Err(e) = store.latest_dir() {
            prop_assert!(e.to_string().contains("latest.json"), "{e}");
        }
        // Whatever latest.json holds (a path out of the folder, garbage), the resume reads
        // the one sound checkpoint.
        let ckpt = store.load_resumable(vs.var_store());
        prop_assert!(ckpt.is_ok(), "{}", ckpt.unwrap_err());
        Ok(true)
    });
}

#[test]
fn fuzz_model_card() {
    let (dir, _) = run_folder();
    let path = dir.path().join("model.toml");
    let valid = std::fs::read_to_string(&path).unwrap();
    fuzz("model.toml", CASES_MODEL_CARD, &file_from(valid), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        match ModelCard::read(&path) {
            Ok(card) => {
                // Only sizes a laptop can build are built (a card may ask for 10⁵ channels).
                let _ = card.model.validate();
                Ok(true)
            }
            Err(e) => {
                prop_assert!(e.to_string().contains("model.toml"), "{e}");
                Ok(false)
            }
        }
    });
}

fn fuzz_toml<T: serde::de::DeserializeOwned>(
    name: &str,
    valid: String,
    cases: u32,
    validate: impl Fn(&T) -> bool,
) {
    fuzz(name, cases, &file_from(valid), |bytes| {
        let Ok(text) = String::from_utf8(bytes) else { return Ok(false) };
        match parse_toml::<T>(&text, "fuzz.toml") {
            Ok(cfg) => Ok(validate(&cfg)),
            Err(e) => {
                prop_assert!(e.to_string().contains("fuzz.toml"), "{e}");
                Ok(false)
            }
        }
    });
}

#[test]
fn fuzz_train_toml() {
    let valid = TrainConfig::default().to_toml().unwrap();
    fuzz_toml::<TrainConfig>("train.toml", valid, CASES_TRAIN_TOML, |c| match c.validate() {
        Ok(()) => true,
        Err(e) => {
            assert!(e.to_string().contains('`'), "{e}");
            false
        }
    });
}

#[test]
fn fuzz_detector_toml() {
    let valid = toml::to_string(&DetectorConfig::tiny(3)).unwrap();
    fuzz_toml::<DetectorConfig>("detector.toml", valid, CASES_DETECTOR_TOML, |c| {
        c.validate().is_ok()
    });
}
