//! Fuzzing of the readers of user files of cellseg-metrics: the CSV reader, the truth and
//! submission CSVs (then scored), COCO ground truth and results JSON (then evaluated, bbox and
//! segm). Arbitrary text plus structure-aware inputs; every input must give `Ok` or a typed error.
//! Case counts are explicit (`CASES_*`).

use std::cell::Cell;
use std::path::Path;

use cellseg_core::testing::{fuzz, scratch_dir};
use cellseg_metrics::coco_dataset::CocoDataset;
use cellseg_metrics::cocoeval::{self, CocoEvalParams, IouType};
use cellseg_metrics::{csv, report};
use proptest::prelude::*;
use serde_json::{Value, json};

const CASES_CSV: u32 = 10_000;
const CASES_COMPETITION: u32 = 3_000;
const CASES_COCO: u32 = 5_000;

fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => (0u64..30).prop_map(|v| v.to_string()),
        2 => prop::sample::select(vec![
            "a", "b", "c", "astro", "-1", "4294967296", "18446744073709551616", " 4 ", "\"",
            "\"\"", "\"x,y\"", "\"q\"\"q\"", "\"open", "x\"y", "\"a\"b", "é", "\r",
            "\"line\nbreak\"",
        ])
        .prop_map(String::from),
        3 => prop::collection::vec(0u64..40, 0..6)
            .prop_map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")),
        1 => "[ -~]{0,10}",
    ]
}

/// A CSV: a header (a shuffled selection of `columns`), rows of cells, one of the line ends.
fn csv_text(
    columns: &'static [&'static str],
    ids: &'static [&'static str],
) -> impl Strategy<Value = String> {
    (
        prop::sample::subsequence(columns.to_vec(), 0..=columns.len()).prop_shuffle(),
        prop::collection::vec(
            (
                prop::collection::vec(cell(), 0..10),
                prop::sample::select(ids.to_vec()),
                any::<bool>(),
            ),
            0..8,
        ),
        prop::sample::select(vec!["\n", "\r\n", "\n\n"]),
    )
        .prop_map(|(header, rows, eol)| {
            let n = header.len();
            let mut out = header.join(",");
            for (mut cells, id, full) in rows {
                out.push_str(eol);
                if full {
                    cells.resize(n, String::new());
                    if let Some(k) = header.iter().position(|h| *h == "id") {
                        cells[k] = id.to_string();
                    }
                }
                out.push_str(&cells.join(","));
            }
            out
        })
}

#[test]
fn fuzz_csv_reader() {
    let text = prop_oneof![
        2 => ".{0,120}",
        2 => csv_text(&["id", "annotation", "width", "height", "cell_type"], &["a", "b"]),
        1 => prop::collection::vec(prop::sample::select(vec!["\"", ",", "\n", "\r", "a", "é", "\"\""]), 0..30)
            .prop_map(|v| v.concat()),
    ];
    fuzz("fuzz_csv_reader", CASES_CSV, &text, |t| {
        let parsed = csv::parse(&t, Path::new("f.csv"));
        if let Ok(recs) = &parsed {
            let mut last = 0;
            for r in recs {
                prop_assert!(r.row > last);
                last = r.row;
            }
        }
        Ok(parsed.is_ok())
    });
}

#[test]
fn fuzz_truth_and_submission_csv_then_score() {
    let dir = scratch_dir();
    let (truth, pred) = (dir.path().join("train.csv"), dir.path().join("sub.csv"));
    // Sizes mostly small and consistent so that scoring is reached.
    let truth_text = csv_text(
        &["id", "annotation", "width", "height", "cell_type", "sample_id"],
        &["a", "b", "c"],
    )
    .prop_map(|t| {
        let mut lines: Vec<String> = t.split('\n').map(String::from).collect();
        let Some(head) = lines.first().cloned() else { return t };
        let cols: Vec<&str> = head.split(',').collect();
        for l in lines.iter_mut().skip(1) {
            let mut f: Vec<String> = l.split(',').map(String::from).collect();
            if f.len() == cols.len() {
                for (k, c) in cols.iter().enumerate() {
                    match *c {
                        "width" if f[k].parse::<u64>().is_ok_and(|v| v > 12) => f[k] = "6".into(),
                        "height" if f[k].parse::<u64>().is_ok_and(|v| v > 12) => f[k] = "5".into(),
                        _ => {}
                    }
                }
            }
            *l = f.join(",");
        }
        lines.join("\n")
    });
    let texts = prop_oneof![
        4 => valid_pair(),
        2 => (
            prop_oneof![4 => truth_text, 1 => ".{0,80}"],
            prop_oneof![4 => csv_text(&["id", "predicted"], &["a", "b", "c", "d"]), 1 => ".{0,60}"],
        ),
    ];
    let scored = fuzz("competition", CASES_COMPETITION, &texts, |(t, p)| {
        std::fs::write(&truth, &t).unwrap();
        std::fs::write(&pred, &p).unwrap();
        let report = report::competition_from_files(&truth, &pred);
        if let Ok(r) = &report {
            prop_assert!(r.overall.is_nan() || (0.0..=1.0).contains(&r.overall), "{}", r.overall);
        }
        Ok(report.is_ok())
    });
    assert!(scored > CASES_COMPETITION / 10, "the generator rarely reaches scoring");
}

/// Sorted, disjoint 1-based runs as a Kaggle string, inside a 5×6 image or sometimes past it.
fn runs() -> impl Strategy<Value = String> {
    prop::collection::vec((0u64..6, 1u64..6), 0..5).prop_map(|gaps| {
        let mut out = Vec::new();
        let mut pos = 1;
        for (gap, len) in gaps {
            let start = pos + gap;
            out.push(format!("{start} {len}"));
            pos = start + len + 1;
        }
        out.join(" ")
    })
}

/// A truth CSV and a submission of the same images (a and b, 5×6), an RLE sometimes replaced by a
/// junk cell, sometimes a junk row: reaches scoring.
fn valid_pair() -> impl Strategy<Value = (String, String)> {
    let row = (prop::sample::select(vec!["a", "b"]), runs(), prop::option::weighted(0.05, cell()))
        .boxed();
    (
        prop::collection::vec(row.clone(), 1..6),
        prop::collection::vec(row, 0..6),
        prop::option::weighted(0.1, cell()),
    )
        .prop_map(|(truth, pred, junk)| {
            let mut t = String::from("id,annotation,width,height,cell_type");
            for (id, rle, j) in &truth {
                let rle = j.clone().unwrap_or_else(|| rle.clone());
                t.push_str(&format!("\n{id},{rle},6,5,astro"));
            }
            let mut p = String::from("id,predicted");
            let mut ids: Vec<&str> = truth.iter().map(|r| r.0).collect();
            ids.sort();
            ids.dedup();
            for id in ids {
                p.push_str(&format!("\n{id},"));
            }
            for (id, rle, j) in &pred {
                let rle = j.clone().unwrap_or_else(|| rle.clone());
                p.push_str(&format!("\n{id},{rle}"));
            }
            if let Some(j) = junk {
                p.push_str(&format!("\n{j}"));
            }
            (t, p)
        })
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0u64..5).prop_map(Value::from),
        prop::sample::select(vec![
            json!(-1),
            json!(0.5),
            json!(3.0),
            json!(1e300),
            json!(-1e300),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(9.5e15),
            json!([]),
            json!({}),
        ]),
        "[a-z0-9]{0,4}".prop_map(Value::from),
    ]
}

fn coord() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (-3.0f64..14.0).prop_map(Value::from),
        1 => prop::sample::select(vec![json!(1e9), json!(-1e12), json!(f64::MAX), json!(25.0), json!("2")]),
    ]
}

fn segmentation() -> impl Strategy<Value = Value> {
    let size = prop_oneof![4 => Just(json!([8, 10])), 1 => Just(json!([10, 8])), 1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::from)];
    prop_oneof![
        4 => prop::collection::vec(prop_oneof![6 => prop::collection::vec(coord(), 6..12), 1 => prop::collection::vec(coord(), 0..6)].prop_map(Value::from), 0..3).prop_map(Value::from),
        2 => (size.clone(), prop_oneof!["[0-o]{0,10}", ".{0,4}"]).prop_map(|(s, c)| json!({"size": s, "counts": c})),
        2 => (size, prop::collection::vec(prop_oneof![6 => (0i64..40).prop_map(Value::from), 1 => scalar()], 0..6))
            .prop_map(|(s, c)| json!({"size": s, "counts": c})),
        1 => scalar(),
    ]
}

/// An object with each of `entries` mostly present and of its type, sometimes of another type.
fn object(entries: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let vals: Vec<_> = entries
        .into_iter()
        .map(|(k, s)| {
            (
                Just(k),
                prop_oneof![60 => s.prop_map(Some), 1 => scalar().prop_map(Some), 1 => Just(None)],
            )
        })
        .collect();
    vals.prop_map(|kv| {
        Value::Object(kv.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect())
    })
    .boxed()
}

fn id() -> BoxedStrategy<Value> {
    prop_oneof![40 => (0u64..2).prop_map(Value::from), 1 => Just(json!("0")), 1 => Just(json!(1.0)), 1 => Just(json!(-5))].boxed()
}

fn bbox() -> BoxedStrategy<Value> {
    prop_oneof![
        8 => prop::collection::vec(coord(), 4).prop_map(Value::from),
        1 => prop::collection::vec(coord(), 0..6).prop_map(Value::from),
    ]
    .boxed()
}

fn gt_doc() -> impl Strategy<Value = Value> {
    let image = object(vec![
        ("id", id()),
        ("height", prop_oneof![4 => Just(json!(8)), 1 => (0u64..12).prop_map(Value::from)].boxed()),
        ("width", prop_oneof![4 => Just(json!(10)), 1 => (0u64..12).prop_map(Value::from)].boxed()),
    ]);
    let ann = object(vec![
        ("id", id()),
        ("image_id", id()),
        ("category_id", prop_oneof![4 => (1u64..3).prop_map(Value::from), 1 => scalar()].boxed()),
        ("segmentation", segmentation().boxed()),
        ("bbox", bbox()),
        ("area", prop_oneof![(0.0f64..200.0).prop_map(Value::from), Just(json!(1e308))].boxed()),
        (
            "iscrowd",
            prop_oneof![
                (0u64..2).prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
                scalar()
            ]
            .boxed(),
        ),
    ]);
    let cat = object(vec![("id", (1u64..3).prop_map(Value::from).boxed())]);
    object(vec![
        (
            "images",
            // Integer ids become 0, 1, 2 (what annotations mostly refer to); others stay.
            prop::collection::vec(image, 2..4)
                .prop_map(|mut ims| {
                    for (i, im) in ims.iter_mut().enumerate() {
                        if im.get("id").is_some_and(Value::is_u64) {
                            im["id"] = json!(i);
                        }
                    }
                    Value::from(ims)
                })
                .boxed(),
        ),
        ("annotations", prop::collection::vec(ann, 0..5).prop_map(Value::from).boxed()),
        ("categories", prop::collection::vec(cat, 0..3).prop_map(Value::from).boxed()),
    ])
}

fn results_doc() -> impl Strategy<Value = Value> {
    let det = object(vec![
        ("image_id", id()),
        ("category_id", prop_oneof![4 => (1u64..3).prop_map(Value::from), 1 => scalar()].boxed()),
        (
            "score",
            prop_oneof![(0.0f64..1.0).prop_map(Value::from), Just(json!(1e300)), Just(json!(-3))]
                .boxed(),
        ),
        ("segmentation", segmentation().boxed()),
        ("bbox", bbox()),
    ]);
    prop_oneof![8 => prop::collection::vec(det, 0..6).prop_map(Value::from), 1 => scalar()]
}

/// A serialised document, sometimes mutated (truncated, a byte removed, inserted or replaced).
fn text_of(doc: impl Strategy<Value = Value>) -> impl Strategy<Value = Vec<u8>> {
    (doc, any::<u8>(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, op, at, byte)| {
        let mut b = v.to_string().into_bytes();
        let i = at.index(b.len());
        match op % 16 {
            0 => b.truncate(i),
            1 => {
                b.remove(i);
            }
            2 => b.insert(i, byte),
            3 => b[i] = byte,
            _ => {}
        }
        b
    })
}

#[test]
fn fuzz_coco_ground_truth_and_results_then_evaluate() {
    let dir = scratch_dir();
    let (gt_path, res_path) = (dir.path().join("gt.json"), dir.path().join("res.json"));
    // Evaluations, up to one per IoU type and case (a case with one is accepted).
    let evaluated = Cell::new(0u32);
    let params: Vec<CocoEvalParams> = [IouType::Bbox, IouType::Segm]
        .into_iter()
        .map(|t| CocoEvalParams { max_dets: vec![1, 2, 100], ..CocoEvalParams::new(t) })
        .collect();
    let inputs = (text_of(gt_doc()), text_of(results_doc()));
    fuzz("coco", CASES_COCO, &inputs, |(gt, res)| {
        let before = evaluated.get();
        std::fs::write(&gt_path, &gt).unwrap();
        std::fs::write(&res_path, &res).unwrap();
        for p in &params {
            let segm = p.iou_type == IouType::Segm;
            let Ok(g) = CocoDataset::load(&gt_path, segm) else { continue };
            let Ok(d) = g.load_results(&res_path, segm) else { continue };
            if let Ok(r) = cocoeval::evaluate(&g, &d, p) {
                evaluated.set(evaluated.get() + 1);
                for (name, v) in r.named_stats() {
                    prop_assert!(v == -1.0 || (0.0..=1.0).contains(&v), "{} = {}", name, v);
                }
            }
            let _ = report::coco_from_files(&gt_path, &res_path, p);
        }
        Ok(evaluated.get() > before)
    });
    assert!(evaluated.get() > CASES_COCO / 20, "the generator rarely reaches evaluation");
}
