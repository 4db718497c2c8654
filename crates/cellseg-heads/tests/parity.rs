//! Parity with torchvision (fixtures generated at test time by `tools/heads_fixtures.py`).

use std::collections::HashMap;

use cellseg_backbones::{BackboneConfig, BackboneKind, FpnConfig, LoadPolicy, Norm};
use cellseg_core::ImageSize;
use cellseg_heads::config::{ClassOrder, DeltaClamp, HeadsConfig};
use cellseg_heads::roi_align::roi_align;
use cellseg_heads::roi_heads::proposals_to_rois;
use cellseg_heads::{MaskRcnn, MaskRcnnConfig};
use tch::{Device, Kind, Tensor, nn};

/// Runs `tools/heads_fixtures.py`; panics with a hint when `.venv` is missing.
fn fixture(args: &[&str]) {
    cellseg_core::testing::run_tool("heads_fixtures.py", args);
}

fn load(path: &std::path::Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    if a.numel() == 0 {
        return 0.0;
    }
    f64::try_from((a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs().max()).unwrap()
}

fn scale(a: &Tensor) -> f64 {
    if a.numel() == 0 { 1.0 } else { f64::try_from(a.abs().max()).unwrap().max(1.0) }
}

#[test]
fn roi_align_matches_torchvision_with_gradients() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ra.safetensors");
    fixture(&["roi_align", f.to_str().unwrap()]);
    let t = load(&f);
    for aligned in [true, false] {
        for sr in [0i64, 2] {
            let key = format!("a{}_s{sr}", i32::from(aligned));
            let feats = t["features"].copy().set_requires_grad(true);
            let out = roi_align(&feats, &t["rois"], 7, 0.5, sr, aligned);
            (&out * &t["weights"]).sum(Kind::Float).backward();
            let e_out = max_abs(&out, &t[&format!("out_{key}")]);
            let e_grad = max_abs(&feats.grad(), &t[&format!("grad_{key}")]);
            println!("roi_align {key}: max |out diff| {e_out:.2e}, max |grad diff| {e_grad:.2e}");
            assert!(e_out < 1e-4, "{key}: output differs by {e_out}");
            assert!(e_grad < 1e-4, "{key}: gradient differs by {e_grad}");
        }
    }
}

/// Heads configuration with every switch at torchvision's value (3 classes + background).
fn tv_heads() -> HeadsConfig {
    let mut h = HeadsConfig { num_classes: 3, ..HeadsConfig::default() };
    h.rpn.anchors.strides = vec![4, 8, 16, 32, 64];
    h.rpn.anchors.round_anchors = true;
    h.rpn.coder.clamp = DeltaClamp::MaxOnly;
    h.rpn.test_proposals.nms_pre = 1000;
    h.rpn.test_proposals.max_per_img = 1000;
    h.rpn.test_proposals.min_bbox_size = 1e-3;
    for roi in [&mut h.bbox_head.roi, &mut h.mask_head.roi] {
        roi.aligned = false;
        roi.sampling_ratio = 2;
        roi.featmap_strides = vec![4, 8, 16, 32];
    }
    h.bbox_head.coder.clamp = DeltaClamp::MaxOnly;
    h.bbox_head.class_order = ClassOrder::BackgroundFirst;
    h.test.score_thr = 0.05;
    h.test.nms_iou = 0.5;
    h.test.max_per_img = 100;
    h.test.min_bbox_size = 1e-2;
    h
}

/// Fraction of rows of `a` `[N, 4]` that have a box in `b` within `tol` pixels (and same label).
fn matched(a: &Tensor, la: Option<&Tensor>, b: &Tensor, lb: Option<&Tensor>, tol: f64) -> f64 {
    let n = a.size()[0];
    if n == 0 {
        return if b.size()[0] == 0 { 1.0 } else { 0.0 };
    }
    let d = (a.unsqueeze(1) - b.unsqueeze(0)).abs().amax(2, false); // [N, M]
    let mut ok = d.le(tol);
    if let (Some(la), Some(lb)) = (la, lb) {
        ok = ok.logical_and(&la.unsqueeze(1).eq_tensor(&lb.unsqueeze(0)));
    }
    f64::try_from(ok.any_dim(1, false).to_kind(Kind::Float).mean(Kind::Float)).unwrap()
}

#[test]
fn maskrcnn_matches_torchvision_stage_by_stage() {
    let dir = tempfile::tempdir().unwrap();
    fixture(&["maskrcnn", dir.path().to_str().unwrap()]);
    let t = load(&dir.path().join("stages.safetensors"));
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = MaskRcnnConfig {
        version: 1,
        backbone: BackboneConfig {
            kind: BackboneKind::Resnet50,
            stem_stride: 2,
            norm: Norm::BatchNormEval,
            ..BackboneConfig::default()
        },
        neck: FpnConfig::default(),
        heads: tv_heads(),
    };
    let model = MaskRcnn::new(&vs.root(), &cfg).unwrap();
    let report = cellseg_backbones::checkpoint::load(
        &vs,
        dir.path().join("weights.safetensors"),
        &LoadPolicy::default(),
    )
    .expect("strict load of the torchvision weights");
    println!("loaded {} tensors", report.loaded);
    let _g = tch::no_grad_guard();
    let image = &t["image"];
    let (h, w) = (image.size()[2], image.size()[3]);

    // 1. FPN outputs.
    let feats = model.features(image);
    for (i, f) in feats.iter().enumerate() {
        let want = &t[&format!("fpn_{i}")];
        let e = max_abs(f, want) / scale(want);
        println!("fpn_{i}: rel max diff {e:.2e}");
        assert!(e < 1e-4, "fpn_{i} differs: {e}");
    }
    // Heads from torchvision's own FPN maps: isolates every head number.
    let tv_feats: Vec<Tensor> = (0..5).map(|i| t[&format!("fpn_{i}")].shallow_clone()).collect();

    // 2. RPN logits and deltas.
    let out = model.rpn_outputs(&tv_feats);
    for i in 0..5 {
        let ec = max_abs(&out.cls[i], &t[&format!("rpn_cls_{i}")]);
        let er = max_abs(&out.reg[i], &t[&format!("rpn_reg_{i}")]);
        println!("rpn level {i}: cls {ec:.2e}, reg {er:.2e}");
        assert!(ec < 1e-4 && er < 1e-4, "rpn level {i}: {ec} {er}");
    }

    // 3. Proposals as sets.
    let props = model.proposals(&out, &[(h, w)]);
    let tvp = &t["proposals"];
    let ab = matched(tvp, None, &props[0].boxes, None, 1e-3);
    let ba = matched(&props[0].boxes, None, tvp, None, 1e-3);
    println!(
        "proposals: ours {} tv {}, matched {ab:.4} / {ba:.4}",
        props[0].boxes.size()[0],
        tvp.size()[0]
    );
    assert!(ab > 0.995 && ba > 0.995, "proposal sets differ: {ab} {ba}");

    // 4. RoI features, class logits and deltas on torchvision's proposals.
    let rois = proposals_to_rois(&[tvp.shallow_clone()], Device::Cpu);
    let bf = model.roi_head().box_roi_features(&tv_feats, &rois);
    let e = max_abs(&bf, &t["box_feats"]);
    println!("box roi features: {e:.2e}");
    assert!(e < 1e-4, "box RoI features: {e}");
    let pred = model.box_predictions(&tv_feats, &[tvp.shallow_clone()]);
    // torchvision: [bg, fg...] and 4(C+1); ours: [fg..., bg] and 4C.
    let tcls = &t["cls_logits"];
    let k = tcls.size()[1];
    let tv_cls = Tensor::cat(&[tcls.slice(1, 1, k, 1), tcls.slice(1, 0, 1, 1)], 1);
    let ec = max_abs(&pred.cls, &tv_cls);
    let er = max_abs(&pred.reg, &t["box_deltas"].slice(1, 4, 4 * k, 1));
    println!("class logits {ec:.2e}, box deltas {er:.2e}");
    assert!(ec < 1e-4 && er < 1e-4, "box head: {ec} {er}");

    // 5. Mask RoI features and 28×28 logits on torchvision's detections.
    let db = &t["det_boxes"];
    let mrois = proposals_to_rois(&[db.shallow_clone()], Device::Cpu);
    let mf = model.roi_head().mask_roi_features(&tv_feats, &mrois);
    let e = max_abs(&mf, &t["mask_feats"]);
    let ml = model.mask_logits(&tv_feats, &[db.shallow_clone()]);
    let em = max_abs(&ml, &t["mask_logits"].slice(1, 1, k, 1)) / scale(&t["mask_logits"]);
    println!("mask roi features {e:.2e}, mask logits rel {em:.2e} ({} detections)", db.size()[0]);
    assert!(e < 1e-4 && em < 1e-4, "mask head: {e} {em}");

    // 6. Final detections of the whole pipeline from the image (our backbone and FPN too).
    let dets = model.detect(&feats, &[(h, w)]);
    let tv_labels = &t["det_labels"] - 1;
    let a = matched(db, Some(&tv_labels), &dets[0].boxes, Some(&dets[0].labels), 1e-2);
    let b = matched(&dets[0].boxes, Some(&dets[0].labels), db, Some(&tv_labels), 1e-2);
    println!(
        "detections: ours {} tv {}, matched {a:.3} / {b:.3}",
        dets[0].boxes.size()[0],
        db.size()[0]
    );
    assert!(a >= 0.97 && b >= 0.97, "detections differ: {a} {b}");
    let preds = model.predict(image, &[ImageSize::new(h as usize, w as usize)]).unwrap();
    assert_eq!(preds[0].len(), dets[0].boxes.size()[0] as usize);
    assert_eq!(preds[0].masks.len(), preds[0].len());
}
