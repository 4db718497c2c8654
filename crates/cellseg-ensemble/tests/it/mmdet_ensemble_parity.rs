//! Parity with a Python reference of the seed's `EnsembleModel` (SEED.md §4.2) driving real
//! mmdet 2.17 models (`tools/ensemble_fixtures.py`, run at test time; kept in `target/tmp`, see `mmdet::cache_dir`): the seed's
//! Mask R-CNN, Cascade Mask R-CNN and HTC (R50, stride-1 stem, 8 classes) with random weights,
//! their `state_dict`s loaded strictly into ours, on one 256×256 image with 4 flip views.
//!
//! Three scenarios: A, every member with every view; B, a classifier member voting the cell type
//! that picks two members, masks from the identity view only; C, the cascade alone on the
//! identity view. Compared one-to-one: the views, the merged RPN logits and deltas, the
//! heuristic's level counts and cell type (and B's vote), the proposals, the merged boxes and
//! class probabilities, the NMS survivors (boxes, scores, labels), the merged 28×28 masks and the
//! final uint8 pasted masks. Rows with four leading spaces are diagnostics, not asserted.
//!
//! Runtime on 2 CPU cores: about 1 min of fixture and 1–2 min of Rust.

use crate::mmdet::{Fixture, Table, canonical, mismatches, mmdet_pasted, one_to_one, paste_diff};
use cellseg_backbones::LoadPolicy;
use cellseg_core::testing::torch_lock;
use cellseg_ensemble::{Ensemble, EnsembleConfig, Member, Prediction, Usage, View};
use cellseg_heads::{DetectorConfig, TwoStageDetector};
use tch::{Device, Tensor, nn};

/// Member `i` of the fixture: `configs/{file}.toml` with `member{i}.safetensors` loaded strictly.
fn member(fx: &Fixture, i: usize, file: &str) -> (nn::VarStore, Box<dyn TwoStageDetector>) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../configs/{file}.toml"));
    let cfg = DetectorConfig::from_toml(&path).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = cfg.build(&vs.root()).unwrap();
    let file = fx.path(&format!("member{i}.safetensors"));
    let r = cellseg_backbones::checkpoint::load(&vs, &file, &LoadPolicy::default()).unwrap();
    assert!(r.missing.is_empty() && r.unexpected.is_empty() && r.dropped.is_empty());
    (vs, model)
}

/// The fixture's config (`config.json`) as ours, for `scenario`.
fn config(fx: &Fixture, scenario: &str) -> EnsembleConfig {
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("config.json")).unwrap()).unwrap();
    let f3 = |k: &str| -> [f64; 3] {
        let v: Vec<f64> = j[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        [v[0], v[1], v[2]]
    };
    let mut c = EnsembleConfig {
        num_classes: Some(3),
        delta: j["delta"].as_f64().unwrap(),
        ..EnsembleConfig::default()
    };
    let pre: Vec<usize> =
        j["rpn_nms_pre"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    c.proposals.nms_pre = [pre[0], pre[1], pre[2]];
    c.proposals.nms_iou = f3("rpn_iou");
    c.proposals.score_thr = f3("rpn_score_thr");
    c.proposals.max_per_img = [0; 3];
    c.boxes.nms_iou = f3("rcnn_iou");
    c.boxes.score_thr = f3("rcnn_score_thr");
    let s = &j["scenarios"][scenario];
    c.use_tta_masks = s["use_tta_masks"].as_bool().unwrap();
    let views = s["box_views"].as_array().unwrap();
    c.views = views.iter().map(|v| View::ALL[v.as_u64().unwrap() as usize]).collect();
    if let Some(u) = s.get("usage") {
        let l = |k: &str| {
            Some(u[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect())
        };
        c.usage =
            Some(Usage { cls: l("cls"), shsy5y: l("shsy5y"), astro: l("astro"), cort: l("cort") });
    }
    c
}

fn int(fx: &Fixture, k: &str) -> i64 {
    fx.get(k).int64_value(&[])
}

/// Every compared quantity of one scenario; `index` maps our member indices to the fixture's.
fn compare(fx: &Fixture, s: &str, p: &Prediction, index: &[i64], tab: &mut Table) {
    let used: Vec<i64> = p.used.iter().map(|&i| index[i]).collect();
    tab.count(
        &format!("{s}: used members differing"),
        mismatches(&Tensor::from_slice(&used), fx.get(&format!("{s}.used"))),
        0,
    );
    for l in 0..5 {
        tab.close(
            &format!("{s}: merged RPN logits {l}"),
            &p.rpn.cls[l],
            fx.get(&format!("{s}.rpn_cls_{l}")),
            1e-4,
            0.0,
        );
        tab.close(
            &format!("{s}: merged RPN deltas {l}"),
            &p.rpn.reg[l],
            fx.get(&format!("{s}.rpn_reg_{l}")),
            1e-4,
            0.0,
        );
    }
    let counts = Tensor::from_slice(&p.guess.level_counts);
    tab.count(
        &format!("{s}: level counts differing"),
        mismatches(&counts, fx.get(&format!("{s}.level_counts"))),
        0,
    );
    tab.count(
        &format!("{s}: cell type"),
        p.cell_type.label() as i64,
        int(fx, &format!("{s}.cell_type")),
    );
    if s == "B" {
        let voted = p.voted.map_or(-1, |t| t.label() as i64);
        tab.count("B: classifier vote", voted, int(fx, "B.cls_cell_type"));
    }
    let props = fx.get(&format!("{s}.proposals"));
    one_to_one(
        tab,
        &format!("{s}: proposals"),
        &p.proposals.boxes,
        &p.proposals.scores,
        &props.narrow(1, 0, 4),
        &props.select(1, 4),
        1e-4,
        1e-5,
    );
    if p.proposals.boxes.size()[0] == props.size()[0] {
        // Rows follow the proposals; among equal proposal scores both sides in canonical order.
        let ours = canonical(&p.proposals.boxes, &p.proposals.scores);
        let theirs = canonical(&props.narrow(1, 0, 4), &props.select(1, 4));
        let rows = |t: &Tensor, o: &Tensor| t.index_select(0, o);
        tab.close(
            &format!("{s}: merged boxes"),
            &rows(&p.merged.boxes, &ours),
            &rows(fx.get(&format!("{s}.merged_boxes")), &theirs),
            1e-3,
            0.0,
        );
        tab.close(
            &format!("{s}: merged class probabilities"),
            &rows(&p.merged.scores, &ours),
            &rows(fx.get(&format!("{s}.merged_scores")), &theirs),
            1e-5,
            0.0,
        );
    }
    let (db, ds, dl) = (
        fx.get(&format!("{s}.det_boxes")),
        fx.get(&format!("{s}.det_scores")),
        fx.get(&format!("{s}.det_labels")),
    );
    let d = &p.detections;
    one_to_one(tab, &format!("{s}: NMS survivors"), &d.boxes, &d.scores, db, ds, 1e-3, 1e-5);
    if d.boxes.size()[0] != db.size()[0] {
        return;
    }
    tab.count(&format!("{s}: labels differing"), mismatches(&d.labels, dl), 0);
    let want = fx.get(&format!("{s}.merged_masks"));
    let want = want
        .gather(1, &dl.view([-1, 1, 1, 1]).expand([-1, 1, 28, 28], false), false)
        .squeeze_dim(1);
    tab.close(&format!("{s}: merged 28x28 masks"), &p.mask_probs, &want, 1e-4, 0.0);
    let size = fx.size();
    let ours: Vec<Vec<u8>> = p
        .soft
        .masks
        .iter()
        .map(|m| {
            let mut full = vec![0u8; size.pixels()];
            let (t, l, h, w) = m.rect();
            for y in 0..h {
                full[(t + y) * size.width + l..(t + y) * size.width + l + w]
                    .copy_from_slice(&m.as_slice()[y * w..(y + 1) * w]);
            }
            full
        })
        .collect();
    let (n, max) = paste_diff(&ours, &mmdet_pasted(fx, &format!("{s}.paste")));
    // A probability within 1e-6 of a multiple of 1/255 may floor to the neighbouring byte.
    tab.count(
        &format!("{s}: pasted uint8 masks, pixels off by more than 1"),
        i64::from(max > 1) * n,
        0,
    );
    println!("    {s}: pasted uint8 masks: {n} pixels differ (max {max})");
}

#[test]
fn the_seeds_ensemble_over_mmdet_maskrcnn_cascade_and_htc() {
    let fx = Fixture::run_tool(
        "ensemble_fixtures.py",
        "ensemble_256x256",
        &["{out}", "--size", "256x256"],
    );
    let _torch = torch_lock();
    tch::set_num_threads(2);
    let _g = tch::no_grad_guard();
    let names = ["maskrcnn", "cascade", "htc"];
    let built: Vec<_> = names.iter().enumerate().map(|(i, f)| member(&fx, i, f)).collect();
    let members: Vec<Member> =
        built.iter().zip(names).map(|((_, m), name)| Member { name, model: m.as_ref() }).collect();
    let mut tab = Table::default();
    let (image, hw) = (fx.get("image"), fx.hw);
    for (v, view) in View::ALL.iter().enumerate() {
        tab.close(
            &format!("view {v:?}"),
            &view.image(image, hw),
            fx.get(&format!("view_{v}")),
            0.0,
            0.0,
        );
    }
    for s in ["A", "B"] {
        let t0 = std::time::Instant::now();
        let ens = Ensemble::new(members.clone(), config(&fx, s)).unwrap();
        let p = ens.predict(image, fx.size()).unwrap();
        println!("scenario {s}: {:.1} s", t0.elapsed().as_secs_f64());
        compare(&fx, s, &p, &[0, 1, 2], &mut tab);
    }
    let alone = Ensemble::new(vec![members[1]], config(&fx, "C")).unwrap();
    let p = alone.predict(image, fx.size()).unwrap();
    compare(&fx, "C", &p, &[1], &mut tab);
    tab.finish("the seed's ensemble");
}
