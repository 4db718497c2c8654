//! Fuzzing of every reader of user files in cellseg-data: `train.csv` (Sartorius), the DSB CSV,
//! fold CSVs, COCO / LIVECell JSON, augmentation TOML (parsed, validated and then applied) and image
//! bytes. Inputs are arbitrary text plus structure-aware ones (valid files with mutated fields,
//! which reach the code behind the syntax). Every input must give `Ok` or a typed error, never a
//! panic. The number of cases of each target is set explicitly (`CASES_*`).

use std::path::{Path, PathBuf};

use cellseg_core::testing::{fuzz, scratch_dir};
use cellseg_core::{CellType, ImageSize};
use cellseg_data::augment::Augment;
use cellseg_data::coco::CocoFile;
use cellseg_data::dsb::DsbDataset;
use cellseg_data::livecell::LivecellDataset;
use cellseg_data::raster::{Image, decode_image, write_png};
use cellseg_data::sartorius::{SartoriusDataset, SartoriusOptions};
use cellseg_data::{AugmentConfig, Sample, Strictness, synthetic};
use proptest::prelude::*;
use rand::SeedableRng;
use serde_json::{Value, json};

const CASES_SARTORIUS: u32 = 10_000;
const CASES_DSB: u32 = 5_000;
const CASES_FOLDS: u32 = 5_000;
const CASES_COCO: u32 = 10_000;
const CASES_AUGMENT: u32 = 10_000;
const CASES_IMAGES: u32 = 5_000;

// ---- CSV -------------------------------------------------------------------------------------

/// One CSV cell: plausible values, numbers at the edges of their types, RLE-like runs, quoting
/// and separators inside fields, Unicode.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        4 => (0u64..40).prop_map(|v| v.to_string()),
        2 => prop::sample::select(vec![
            "0", "-1", "1.5", " 7 ", "+3", "18446744073709551615", "18446744073709551616",
            "4294967295", "4294967296", "65536", "1e3", "NaN", "\u{feff}id", "astro", "cort",
            "shsy5y", "shsy5y[diff]_E10-4_Vessel-714_Ph_3", "_", "a_b", "x_é-4", "\"", "\"\"",
            "\"a,b\"", "\"a\"\"b\"", "\"open", "a\"b", "\r", "\t", "ImageId", "fold",
        ])
        .prop_map(String::from),
        4 => prop::collection::vec(0u64..60, 0..8)
            .prop_map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")),
        1 => prop::collection::vec(any::<u64>(), 0..4)
            .prop_map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")),
        2 => "[ -~]{0,12}",
        1 => ".{0,8}",
    ]
}

/// A CSV whose header is a shuffled selection of `columns` and extra names, with rows of cells
/// (mostly as many as the header), joined with one of the line ends.
fn csv_text(
    columns: &'static [&'static str],
    ids: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let header = prop::sample::subsequence(columns.to_vec(), 0..=columns.len())
        .prop_flat_map(|cols| {
            let n = cols.len();
            (
                Just(cols),
                Just(vec!["extra"; 0]),
                prop::collection::vec(any::<prop::sample::Index>(), n),
            )
        })
        .prop_map(|(mut cols, _, shuffle)| {
            for (i, s) in shuffle.iter().enumerate() {
                let j = s.index(cols.len());
                cols.swap(i, j);
            }
            cols.into_iter().map(String::from).collect::<Vec<_>>()
        });
    (
        header,
        prop::collection::vec(
            (
                prop::collection::vec(cell(), 0..12),
                prop::sample::select(ids.to_vec()),
                any::<bool>(),
            ),
            0..8,
        ),
        prop::sample::select(vec!["\n", "\r\n", "\r", "\n\n"]),
        any::<bool>(),
    )
        .prop_map(|(header, rows, eol, extra_col)| {
            let mut header = header;
            if extra_col {
                header.push("note".into());
            }
            let n = header.len();
            let mut out = header.join(",");
            for (cells, id, full) in rows {
                out.push_str(eol);
                let mut cells = cells;
                if full {
                    cells.resize(n, String::new());
                    // Put a known id in the first id-like column so rows group together.
                    if let Some(k) = header.iter().position(|h| h == "id" || h == "ImageId") {
                        cells[k] = id.to_string();
                    }
                }
                out.push_str(&cells.join(","));
            }
            out
        })
}

/// Arbitrary text: valid UTF-8 of any kind, and arbitrary bytes (read as a file).
fn junk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![".{0,200}".prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..200),]
}

const SARTORIUS_COLS: &[&str] = &[
    "id",
    "annotation",
    "width",
    "height",
    "cell_type",
    "plate_time",
    "sample_date",
    "sample_id",
    "elapsed_timedelta",
];

#[test]
fn fuzz_sartorius_train_csv() {
    let dir = scratch_dir();
    let images = dir.path().join("train");
    std::fs::create_dir_all(&images).unwrap();
    // One real image so that `check_images` also reaches the PNG header check.
    write_png(&Image::filled(ImageSize::new(6, 7), 1, 9), &images.join("img1.png")).unwrap();
    let text = prop_oneof![4 => csv_text(SARTORIUS_COLS, &["img1", "img2", "03b27b381a5f", ""])
        .prop_map(String::into_bytes), 1 => junk()];
    let csv = dir.path().join("train.csv");
    fuzz(
        "fuzz_sartorius_train_csv",
        CASES_SARTORIUS,
        &(text, any::<[bool; 4]>()),
        |(text, flags)| {
            std::fs::write(&csv, &text).unwrap();
            let opts = SartoriusOptions {
                remove_anomalies: flags[0],
                fill_holes: flags[1],
                corrected_masks: flags[2].then(|| images.clone()),
                check_images: flags[3],
                strictness: Strictness::Strict,
            };
            let strict = SartoriusDataset::read_csv(&csv, &images, &opts);
            let lenient = SartoriusDataset::read_csv(
                &csv,
                &images,
                &SartoriusOptions { strictness: Strictness::Lenient, ..opts },
            );
            if let Ok(ds) = &strict {
                prop_assert!(ds.skipped.is_empty());
                let _ = ds.group_kfold(2);
            }
            if let Ok(ds) = lenient {
                let _ = ds.group_kfold(3);
                for im in &ds.images {
                    prop_assert_eq!(im.instances.len(), im.lines.len());
                }
            }
            Ok(strict.is_ok())
        },
    );
}

#[test]
fn fuzz_dsb_csv() {
    let dir = scratch_dir();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    write_png(&Image::filled(ImageSize::new(3, 4), 1, 9), &images.join("a.png")).unwrap();
    write_png(&Image::filled(ImageSize::new(5, 2), 3, 9), &images.join("b.png")).unwrap();
    // Sizes that match the images half of the time, so that RLE decoding is reached.
    let sized = (csv_text(&["ImageId", "EncodedPixels", "Height", "Width"], &["a", "b", "c"]),)
        .prop_map(|(t,)| {
            let mut lines: Vec<String> = t.split('\n').map(String::from).collect();
            if let Some(h) = lines.first().cloned() {
                let cols: Vec<&str> = h.split(',').collect();
                for l in lines.iter_mut().skip(1) {
                    let mut f: Vec<String> = l.split(',').map(String::from).collect();
                    if f.len() != cols.len() {
                        continue;
                    }
                    let id = cols.iter().position(|c| *c == "ImageId").map(|k| f[k].clone());
                    let (hh, ww) = match id.as_deref() {
                        Some("a") => ("3", "4"),
                        Some("b") => ("5", "2"),
                        _ => continue,
                    };
                    if let Some(k) = cols.iter().position(|c| *c == "Height") {
                        f[k] = hh.into();
                    }
                    if let Some(k) = cols.iter().position(|c| *c == "Width") {
                        f[k] = ww.into();
                    }
                    *l = f.join(",");
                }
            }
            lines.join("\n").into_bytes()
        });
    let text = prop_oneof![
        3 => sized,
        2 => csv_text(&["ImageId", "EncodedPixels", "Height", "Width"], &["a", "b", "c"])
            .prop_map(String::into_bytes),
        1 => junk(),
    ];
    let csv = dir.path().join("dsb.csv");
    fuzz("fuzz_dsb_csv", CASES_DSB, &text, |text| {
        std::fs::write(&csv, &text).unwrap();
        let strict = DsbDataset::read(&csv, &images, Strictness::Strict);
        if let Ok(ds) = &strict {
            prop_assert!(ds.skipped.is_empty());
        }
        if let Ok(ds) = DsbDataset::read(&csv, &images, Strictness::Lenient) {
            for im in &ds.images {
                prop_assert_eq!(im.instances.len(), im.lines.len());
            }
        }
        Ok(strict.is_ok())
    });
}

#[test]
fn fuzz_fold_csv() {
    let dir = scratch_dir();
    let csv = dir.path().join("folds.csv");
    let text = prop_oneof![
        4 => csv_text(&["id", "fold"], &["img1", "img2", "img3", " img1"]).prop_map(String::into_bytes),
        1 => junk(),
    ];
    let ids = prop::sample::subsequence(vec!["img1", "img2", "img3"], 0..=3);
    fuzz("fuzz_fold_csv", CASES_FOLDS, &(text, ids), |(text, ids)| {
        std::fs::write(&csv, &text).unwrap();
        let read = cellseg_data::folds::read_fold_csv(&csv, &ids);
        if let Ok(folds) = &read {
            prop_assert_eq!(folds.len(), ids.len());
        }
        Ok(read.is_ok())
    });
}

// ---- COCO / LIVECell JSON -------------------------------------------------------------------

/// A JSON scalar of any type, with numbers at the edges.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0u64..6).prop_map(Value::from),
        prop::sample::select(vec![
            json!(-1),
            json!(0.5),
            json!(2.0),
            json!(-0.0),
            json!(1e300),
            json!(-1e300),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(4294967296u64),
        ]),
        "[a-z0-9 ]{0,6}".prop_map(Value::from),
    ]
}

/// A coordinate near or far from a small image.
fn coord() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (-3.0f64..12.0).prop_map(Value::from),
        2 => (0u32..10).prop_map(Value::from),
        1 => prop::sample::select(vec![json!(1e9), json!(-1e9), json!(f64::MAX), json!(-1.0), json!("1")]),
    ]
}

fn segmentation() -> impl Strategy<Value = Value> {
    let counts_str = prop_oneof![
        "[0-o]{0,12}",
        ".{0,6}",
        prop::sample::select(vec!["", "0", "1", "<4", "PPP", "oooooooo", "8"])
            .prop_map(String::from),
    ];
    let counts_list = prop::collection::vec(
        prop_oneof![8 => (0i64..30).prop_map(Value::from), 1 => scalar()],
        0..8,
    );
    let size = prop_oneof![
        4 => Just(json!([8, 10])),
        2 => Just(json!([10, 8])),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::from),
    ];
    prop_oneof![
        4 => prop::collection::vec(prop::collection::vec(coord(), 0..12).prop_map(Value::from), 0..3)
            .prop_map(Value::from),
        2 => (size.clone(), counts_str).prop_map(|(s, c)| json!({"size": s, "counts": c})),
        2 => (size, counts_list).prop_map(|(s, c)| json!({"size": s, "counts": c})),
        1 => scalar(),
        1 => Just(json!({"counts": "0"})),
    ]
}

/// An object with some of the `keys` (each value from `val`, sometimes of another type) and
/// sometimes a key too many.
fn object(entries: Vec<(&'static str, BoxedStrategy<Value>)>) -> impl Strategy<Value = Value> {
    let n = entries.len();
    let vals: Vec<_> = entries
        .into_iter()
        .map(|(k, s)| {
            (
                Just(k),
                prop_oneof![10 => s.prop_map(Some), 1 => scalar().prop_map(Some), 1 => Just(None)],
            )
        })
        .collect();
    (vals, prop::option::weighted(0.1, scalar())).prop_map(move |(kv, extra)| {
        let mut o = serde_json::Map::new();
        for (k, v) in kv.into_iter().take(n) {
            if let Some(v) = v {
                o.insert(k.to_string(), v);
            }
        }
        if let Some(e) = extra {
            o.insert("junk".into(), e);
        }
        Value::Object(o)
    })
}

fn id_value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (0u64..4).prop_map(Value::from),
        2 => prop::sample::select(vec!["0", "1", "img"]).prop_map(Value::from),
        1 => Just(json!(1.0)),
        1 => Just(json!(-2)),
    ]
    .boxed()
}

fn coco_doc() -> impl Strategy<Value = Value> {
    let image = object(vec![
        ("id", id_value()),
        (
            "file_name",
            prop::sample::select(vec!["A172_Phase_A7_1_00d00h00m_1.tif", "x.tif", "", "../a.png"])
                .prop_map(Value::from)
                .boxed(),
        ),
        ("height", prop_oneof![4 => Just(json!(8)), 1 => (0u64..12).prop_map(Value::from)].boxed()),
        ("width", prop_oneof![4 => Just(json!(10)), 1 => (0u64..12).prop_map(Value::from)].boxed()),
    ]);
    let ann = object(vec![
        ("id", id_value()),
        ("image_id", id_value()),
        ("category_id", prop_oneof![4 => (0u64..3).prop_map(Value::from), 1 => scalar()].boxed()),
        ("segmentation", segmentation().boxed()),
        ("bbox", prop::collection::vec(coord(), 0..5).prop_map(Value::from).boxed()),
        ("area", (0.0f64..100.0).prop_map(Value::from).boxed()),
        (
            "iscrowd",
            prop_oneof![(0u64..2).prop_map(Value::from), any::<bool>().prop_map(Value::from)]
                .boxed(),
        ),
    ]);
    let category =
        object(vec![("id", (0u64..4).prop_map(Value::from).boxed()), ("name", scalar().boxed())]);
    let anns = prop::collection::vec(ann, 0..6).boxed();
    let annotations = prop_oneof![
        4 => anns.clone().prop_map(Value::from),
        // LIVECell's dict-shaped annotations, keyed by id.
        2 => anns.prop_map(|a| {
            Value::Object(a.into_iter().enumerate().map(|(i, v)| (format!("{}", 10 - i), v)).collect())
        }),
        1 => scalar(),
    ];
    object(vec![
        ("images", prop::collection::vec(image, 0..4).prop_map(Value::from).boxed()),
        ("annotations", annotations.boxed()),
        ("categories", prop::collection::vec(category, 0..3).prop_map(Value::from).boxed()),
    ])
}

/// Text mutations of a serialised document: truncation, a byte deleted, inserted or replaced.
fn mutate(text: String, op: u8, at: prop::sample::Index, byte: u8) -> Vec<u8> {
    let mut b = text.into_bytes();
    if b.is_empty() {
        return b;
    }
    let i = at.index(b.len());
    match op % 5 {
        0 => b.truncate(i),
        1 => {
            b.remove(i);
        }
        2 => b.insert(i, byte),
        3 => b[i] = byte,
        _ => {}
    }
    b
}

#[test]
fn fuzz_coco_and_livecell_json() {
    let dir = scratch_dir();
    let json = dir.path().join("livecell_coco_test.json");
    let text = prop_oneof![
        6 => coco_doc().prop_map(|v| v.to_string().into_bytes()),
        3 => (coco_doc(), any::<u8>(), any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(v, op, at, b)| mutate(v.to_string(), op, at, b)),
        1 => junk(),
    ];
    fuzz("fuzz_coco_and_livecell_json", CASES_COCO, &text, |text| {
        std::fs::write(&json, &text).unwrap();
        let strict = CocoFile::read(&json, Strictness::Strict);
        if let Ok(f) = &strict {
            prop_assert!(f.skipped.is_empty());
            for im in &f.images {
                prop_assert_eq!(im.instances.len(), im.annotation_ids.len());
            }
        }
        let _ = CocoFile::read(&json, Strictness::Lenient);
        let _ = LivecellDataset::read(&json, dir.path(), Strictness::Lenient);
        let _ = LivecellDataset::read(&json, dir.path(), Strictness::Strict);
        Ok(strict.is_ok())
    });
}

// ---- Augmentation TOML, then applied --------------------------------------------------------

/// A TOML value of any type, with floats at the edges (`inf`, `nan`, `1e39` which is past f32).
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0.0f64..1.0).prop_map(|v| format!("{v}")),
        2 => (0u64..600).prop_map(|v| v.to_string()),
        2 => prop::sample::select(vec![
            "0", "1", "0.0", "1.0", "-0.0", "0.5", "0.9999", "10", "10.0", "10.5", "-1", "-1.5",
            "inf", "-inf", "nan", "+inf", "1e39", "-1e39", "3.4e38", "1e-45", "1e-300",
            "18446744073709551615", "9223372036854775807", "-9223372036854775808", "true",
            "false", "\"x\"", "[]", "[1, 2]", "{}", "2",
        ])
        .prop_map(String::from),
    ]
}

const AUGMENT_KEYS: &[(&str, &[&str])] = &[
    ("crop", &["enabled", "height", "width", "max_tries", "recompute_boxes"]),
    ("flip", &["horizontal", "vertical", "diagonal"]),
    ("rot90", &["p"]),
    ("flip_paste", &["p", "label"]),
    ("brightness", &["p", "max_delta"]),
    ("contrast", &["p", "max_delta"]),
    ("gamma", &["p", "min", "max"]),
    ("blur", &["p", "min_sigma", "max_sigma"]),
    ("noise", &["p", "max_sigma"]),
];

/// A TOML document of the known sections and keys with values of any type, sometimes an unknown
/// key, sometimes a section written twice.
fn augment_toml() -> impl Strategy<Value = String> {
    let entry = (
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        toml_value(),
        prop::option::weighted(0.05, Just("bogus")),
    );
    prop::collection::vec(entry, 0..14).prop_map(|entries| {
        let mut sections: Vec<(&str, Vec<String>)> = Vec::new();
        for (s, k, v, bogus) in entries {
            let (name, keys) = AUGMENT_KEYS[s.index(AUGMENT_KEYS.len())];
            let key = bogus.unwrap_or(keys[k.index(keys.len())]);
            let line = format!("{key} = {v}");
            match sections.iter_mut().find(|(n, _)| *n == name) {
                Some((_, lines)) if !lines.iter().any(|l| l.starts_with(&format!("{key} "))) => {
                    lines.push(line)
                }
                Some(_) => {}
                None => sections.push((name, vec![line])),
            }
        }
        sections
            .into_iter()
            .map(|(n, lines)| format!("[{n}]\n{}\n", lines.join("\n")))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Every transform on (`p = 1`, flips at their most), then a few keys set to values of any type: reaches the code that
/// runs each transform with the edge values that validation lets through.
fn augment_toml_all_on() -> impl Strategy<Value = String> {
    let overrides = prop::collection::vec(
        (any::<prop::sample::Index>(), any::<prop::sample::Index>(), toml_value()),
        1..4,
    );
    overrides.prop_map(|ov| {
        let mut out = String::new();
        for (name, keys) in AUGMENT_KEYS {
            out.push_str(&format!("[{name}]\n"));
            for key in *keys {
                let over = ov.iter().find(|(s, k, _)| {
                    AUGMENT_KEYS[s.index(AUGMENT_KEYS.len())].0 == *name
                        && AUGMENT_KEYS[s.index(AUGMENT_KEYS.len())].1[k.index(keys.len())] == *key
                });
                match over {
                    Some((_, _, v)) => out.push_str(&format!("{key} = {v}\n")),
                    // The flips' default rates already sum to 0.5.
                    None if *key == "horizontal" => out.push_str("horizontal = 0.5\n"),
                    None if *key == "p" => out.push_str("p = 1.0\n"),
                    None => {}
                }
            }
        }
        out
    })
}

#[test]
fn fuzz_augment_toml_parse_validate_apply() {
    let samples: Vec<Sample> = [CellType::Astro, CellType::Cort]
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let (image, instances) = synthetic::generate(t, ImageSize::new(24, 20), i as u64);
            Sample { id: format!("s{i}"), image, instances }
        })
        .collect();
    let text = prop_oneof![
        4 => augment_toml(),
        4 => augment_toml_all_on(),
        1 => ".{0,60}",
    ];
    let applied = fuzz("augment", CASES_AUGMENT, &(text, any::<u64>()), |(text, seed)| {
        let cfg = match cellseg_core::config::parse_toml::<AugmentConfig>(&text, "aug.toml") {
            Ok(c) => c,
            Err(e) => {
                prop_assert!(e.to_string().contains("aug.toml"), "{}", e);
                return Ok(false);
            }
        };
        let Ok(aug) = Augment::new(cfg) else { return Ok(false) };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for s in &samples {
            for _ in 0..3 {
                if let Ok(out) = aug.apply(s, &mut rng) {
                    prop_assert_eq!(out.instances.len(), out.instances.masks.len());
                }
            }
        }
        Ok(true)
    });
    assert!(applied > CASES_AUGMENT / 10, "the generator rarely makes a valid config ({applied})");
}

// ---- Image bytes ------------------------------------------------------------------------------

#[test]
fn fuzz_image_bytes() {
    let dir = scratch_dir();
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for (k, ch) in [(0, 1), (1, 3)] {
        let p = dir.path().join(format!("{k}.png"));
        let (img, _) = synthetic::generate(CellType::Shsy5y, ImageSize::new(9, 11), k);
        let img = if ch == 1 {
            img
        } else {
            let data = img.as_slice().iter().flat_map(|&v| [v, v / 2, 255 - v]).collect();
            Image::new(img.size(), 3, data).unwrap()
        };
        write_png(&img, &p).unwrap();
        seeds.push(std::fs::read(&p).unwrap());
    }
    // LIVECell-style LZW TIFFs, as the synthetic generator writes them.
    let lc = dir.path().join("lc");
    synthetic::generate_livecell(&lc, 1, 3).unwrap();
    for e in walk(&lc) {
        if e.extension().is_some_and(|x| x == "tif") {
            seeds.push(std::fs::read(&e).unwrap());
            break;
        }
    }
    assert_eq!(seeds.len(), 3, "a PNG of each kind and a TIFF");
    let seeds2 = seeds.clone();
    let mutated = (
        any::<prop::sample::Index>(),
        prop::collection::vec((any::<u8>(), any::<prop::sample::Index>(), any::<u8>()), 1..6),
    )
        .prop_map(move |(s, ops)| {
            let mut b = seeds2[s.index(seeds2.len())].clone();
            for (op, at, byte) in ops {
                if b.is_empty() {
                    break;
                }
                let i = at.index(b.len());
                match op % 4 {
                    0 => b.truncate(i),
                    1 => {
                        b.remove(i);
                    }
                    2 => b.insert(i, byte),
                    _ => b[i] = byte,
                }
            }
            b
        });
    let bytes = prop_oneof![8 => mutated, 1 => prop::collection::vec(any::<u8>(), 0..64)];
    let path = dir.path().join("fuzz.img");
    fuzz("fuzz_image_bytes", CASES_IMAGES, &bytes, |b| {
        let decoded = decode_image(&b, Path::new("fuzz.img"));
        if let Ok(img) = &decoded {
            prop_assert_eq!(
                img.as_slice().len(),
                img.size().height * img.size().width * img.channels()
            );
        }
        std::fs::write(&path, &b).unwrap();
        let _ = cellseg_data::raster::read_image_size(&path);
        let _ = cellseg_data::raster::read_label_image(&path);
        Ok(decoded.is_ok())
    });
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
