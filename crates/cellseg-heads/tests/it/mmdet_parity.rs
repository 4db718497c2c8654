//! Parity with real mmdet 2.17: the seed's Mask R-CNN (SEED.md §2.4) built in mmdet with random
//! weights by `tools/mmdet_fixtures.py` (run at test time; kept in `target/tmp`, see `mmdet::cache_dir`), its `state_dict`
//! loaded strictly into our [`MaskRcnn`] built from [`DetectorConfig::default()`], and every stage
//! compared number by number on a 256×256 image with 40 GT cells and on a 520×704 image (padded
//! to 544×704 as the seed's test pipeline does) with 120.
//!
//! Each head is fed mmdet's own inputs (its FPN maps, RPN outputs, proposals, detections), so a
//! difference is located in one stage; the whole chain from the image is compared too. Training
//! uses deterministic sampling on both sides (every sampler's `num` = 10^7: all candidates in
//! index order). Every compared quantity is printed as a table row with its measured max
//! abs / rel difference and its tolerance; all rows are computed before the test fails, and it
//! fails listing every row over its tolerance.
//!
//! Two gaps this test found are fixed in `src`: the 28×28 mask targets are RoIAligned over the
//! GT bitmaps padded like the image (mmdet's `Pad`), and sampled in float64 (float32 grid
//! normalisation turned mmdet's exact 0.5 averages into 0.49999997, which binarised to 0). Rows
//! printed with four leading spaces are diagnostics, not asserted (e.g. rows only permuted among
//! exactly equal scores: we take the top `nms_pre` with `topk`, mmdet sorts; the kept sets are
//! equal, the order of exact ties is not).
//!
//! Runtime on 2 CPU cores: about 45-80 s of fixture and 30-100 s of Rust per size.

use cellseg_backbones::{BackboneKind, LoadPolicy, Norm};
use cellseg_core::ImageSize;
use cellseg_core::testing::torch_lock;
use cellseg_heads::assign::assigner::MaxIouAssigner;
use cellseg_heads::assign::mask_target::mask_targets;
use cellseg_heads::assign::roi_sampler::{BatchTargets, SampledRois};
use cellseg_heads::config::{BoxLoss, ClassOrder, DeltaClamp};
use cellseg_heads::heads::rpn::RpnOutputs;
use cellseg_heads::ops::box_coder::BoxCoder;
use cellseg_heads::roi_heads::multiclass_nms;
use cellseg_heads::{DetectorConfig, Features, MaskRcnn, TwoStageDetector};
use tch::{Device, Kind, Tensor, nn};

use crate::mmdet::{
    Fixture, HUGE, Table, default_threads, end_to_end, mismatches, mmdet_pasted, one_to_one,
    our_pasted, paste_diff,
};

/// Our config for the fixture: the seed's defaults, checked value by value against the mmdet
/// config in `tools/mmdet_fixtures.py::maskrcnn_cfg`, with the samplers' `num` set to [`HUGE`].
fn seed_config() -> DetectorConfig {
    let mut cfg = DetectorConfig::default();
    let b = &cfg.backbone;
    assert_eq!(
        (b.kind, b.stem_stride, b.norm, b.frozen_stages),
        (BackboneKind::Resnet50, 1, Norm::BatchNormEval, -1)
    );
    assert_eq!((cfg.neck.out_channels, cfg.neck.num_outs), (256, 5));
    let h = &cfg.heads;
    assert_eq!(h.num_classes, 8);
    let r = &h.rpn;
    assert_eq!((r.in_channels, r.feat_channels), (256, 256));
    assert_eq!(r.anchors.strides, [2, 4, 8, 16, 32]);
    assert_eq!(
        (r.anchors.scales.as_slice(), r.anchors.ratios.as_slice()),
        (&[8.0][..], &[0.5, 1.0, 2.0][..])
    );
    assert!(!r.anchors.round_anchors);
    assert_eq!(
        (r.coder.means, r.coder.stds, r.coder.clamp),
        ([0.0; 4], [1.0; 4], DeltaClamp::BothSides)
    );
    let a = &r.assigner;
    assert_eq!(
        (a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou, a.match_low_quality, a.gt_max_assign_all),
        (0.7, 0.3, 0.3, true, true)
    );
    assert_eq!(
        (r.sampler.num, r.sampler.pos_fraction, r.sampler.add_gt_as_proposals),
        (256, 0.5, false)
    );
    assert_eq!(r.loss_bbox, BoxLoss::L1);
    for p in [&r.train_proposals, &r.test_proposals] {
        assert_eq!((p.nms_pre, p.max_per_img, p.nms_iou, p.min_bbox_size), (2000, 1000, 0.7, 0.0));
    }
    let bh = &h.bbox_head;
    for (roi, size) in [(&bh.roi, 7), (&h.mask_head.roi, 14)] {
        assert_eq!(
            (roi.output_size, roi.sampling_ratio, roi.aligned, roi.finest_scale),
            (size, 0, true, 56.0)
        );
        assert_eq!(roi.featmap_strides, [2, 4, 8, 16]);
    }
    assert_eq!(bh.fc_channels, 1024);
    assert_eq!(
        (bh.coder.means, bh.coder.stds, bh.coder.clamp),
        ([0.0; 4], [0.1, 0.1, 0.2, 0.2], DeltaClamp::BothSides)
    );
    let a = &bh.assigner;
    assert_eq!(
        (a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou, a.match_low_quality, a.gt_max_assign_all),
        (0.5, 0.5, 0.5, true, true)
    );
    assert_eq!(
        (bh.sampler.num, bh.sampler.pos_fraction, bh.sampler.add_gt_as_proposals),
        (512, 0.25, true)
    );
    assert_eq!((bh.loss_bbox, bh.class_order), (BoxLoss::L1, ClassOrder::BackgroundLast));
    let m = &h.mask_head;
    assert_eq!(
        (m.num_convs, m.conv_channels, m.mask_size, m.binarize_targets, m.aligned_targets),
        (4, 256, 28, true, true)
    );
    let t = &h.test;
    assert_eq!((t.score_thr, t.nms_iou, t.max_per_img, t.min_bbox_size), (0.25, 0.3, 1000, -1.0));
    // The seed's mask_thr_binary is -1 (soft uint8 masks): `predict` returns soft masks, and
    // binarisation is cellseg-postproc's; the soft pasted masks are compared below.
    cfg.heads.rpn.sampler.num = HUGE;
    cfg.heads.bbox_head.sampler.num = HUGE;
    cfg
}

/// Builds our model and loads the fixture's weights strictly (missing, unexpected or misshapen
/// keys are an error).
fn model(fx: &Fixture) -> (nn::VarStore, MaskRcnn, DetectorConfig) {
    let cfg = seed_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let trunk = cfg.backbone.build(&(&root / "backbone")).unwrap();
    let model = MaskRcnn::with_backbone(&root, Box::new(trunk), &cfg.neck, &cfg.heads).unwrap();
    let report = cellseg_backbones::checkpoint::load(
        &vs,
        fx.path("weights.safetensors"),
        &LoadPolicy::default(),
    )
    .unwrap_or_else(|e| panic!("strict load of mmdet's state_dict: {e}"));
    assert!(report.missing.is_empty() && report.unexpected.is_empty() && report.dropped.is_empty());
    println!("loaded {} tensors strictly", report.loaded);
    (vs, model, cfg)
}

fn inference(fx: &Fixture, model: &MaskRcnn, tab: &mut Table) {
    let _g = tch::no_grad_guard();
    let (h, w) = fx.hw;
    let image = fx.get("image");
    let mm_feats = Features { levels: fx.levels("fpn"), semantic: None };

    // 1. FPN outputs of the image (our backbone + FPN).
    let feats = model.features(image).unwrap();
    for (i, (f, want)) in feats.levels.iter().zip(&mm_feats.levels).enumerate() {
        // Measured: 0 (both sides run the same libtorch kernels with the same threads); the
        // slack covers another summation order (thread count) through 50 layers.
        tab.close(&format!("fpn_{i}"), f, want, 0.0, 1e-5);
    }

    // 2. RPN logits and deltas on mmdet's FPN maps.
    let out = model.rpn_outputs(&mm_feats).unwrap();
    for i in 0..5 {
        // Measured: 0.
        tab.close(
            &format!("rpn cls logits level {i}"),
            &out.cls[i],
            fx.get(&format!("rpn_cls_{i}")),
            1e-5,
            0.0,
        );
        tab.close(
            &format!("rpn deltas level {i}"),
            &out.reg[i],
            fx.get(&format!("rpn_reg_{i}")),
            1e-5,
            0.0,
        );
    }

    // 3. Test proposals from mmdet's RPN outputs, one-to-one in order.
    let mm_out = RpnOutputs { cls: fx.levels("rpn_cls"), reg: fx.levels("rpn_reg") };
    let props = model.proposals(&mm_out, &[(h, w)], model.test_proposals()).unwrap();
    let (pb, ps) = (fx.get("proposals"), fx.get("proposal_scores"));
    // Measured: 0 px, 0 (same decode arithmetic); 8 / 79 rows permuted among equal scores.
    one_to_one(
        tab,
        "proposals (mmdet RPN outputs)",
        &props[0].boxes,
        &props[0].scores,
        pb,
        ps,
        1e-5,
        1e-7,
    );

    // 4. Class logits and deltas on mmdet's proposals as RoIs.
    let pred = model.box_predictions(&mm_feats, &[pb.shallow_clone()]);
    // Measured: 3.7e-5 / 2.7e-5 (520x704; |logits| <= 11): RoIAlign's grid_sample rounding
    // (~1e-6 in the features) through the 12544-wide fc.
    tab.close("box head class logits", &pred.cls, fx.get("box_cls"), 1e-4, 0.0);
    tab.close("box head deltas", &pred.reg, fx.get("box_reg"), 1e-4, 0.0);

    // 5. Detections (softmax, decode, clip, score_thr, per-class NMS) on mmdet's proposals.
    let scores = model.box_scores(&mm_feats, &[pb.shallow_clone()], &[(h, w)]).unwrap();
    let c = model.num_classes();
    let dets = [multiclass_nms(&scores.boxes, &scores.scores.narrow(1, 0, c), model.rcnn_test())];
    let (db, ds, dl) = (fx.get("det_boxes"), fx.get("det_scores"), fx.get("det_labels"));
    // Measured: 6.1e-5 px, 3.9e-6 (520x704).
    one_to_one(
        tab,
        "detections (mmdet feats + proposals)",
        &dets[0].boxes,
        &dets[0].scores,
        db,
        ds,
        2e-4,
        1e-5,
    );
    let k = dets[0].labels.size()[0].min(dl.size()[0]);
    tab.count(
        "detections: labels differing",
        mismatches(&dets[0].labels.narrow(0, 0, k), &dl.narrow(0, 0, k)),
        0,
    );

    // 6. 28×28 mask probabilities of mmdet's detections (label channel).
    let probs = model.mask_probs(&mm_feats, &[db.shallow_clone()], &[dl.shallow_clone()]).unwrap();
    // Measured: 1.5e-5 (520x704), 4.0e-6 (256x256).
    tab.close("mask probabilities 28x28", &probs, fx.get("mask_probs"), 5e-5, 0.0);

    // 7. Pasted soft masks (uint8) of mmdet's probabilities and boxes: exact against mmdet's GPU
    // path (whole-image paste, the seed's); the CPU path cuts the border band of big boxes.
    let size = fx.size();
    let ours = our_pasted(fx.get("mask_probs"), db, size);
    let (n_gpu, m_gpu) = paste_diff(&ours, &mmdet_pasted(fx, "paste_gpu"));
    tab.count(&format!("pasted uint8 vs GPU path: pixels differing (max {m_gpu})"), n_gpu, 0);
    let (n_cpu, m_cpu) = paste_diff(&ours, &mmdet_pasted(fx, "paste"));
    println!(
        "    pasted uint8 vs mmdet's CPU path (skip_empty): {n_cpu} pixels differ, max {m_cpu} (documented, not asserted)"
    );

    // 8. The whole chain from the image: our features, RPN, proposals, detections, masks.
    // Measured: as from mmdet's inputs (our FPN maps are mmdet's bit for bit here).
    if let Some((boxes, probs)) = end_to_end(fx, model, &feats, 2e-4, tab) {
        let ours = our_pasted(&probs, &boxes, size);
        let (n, m) = paste_diff(&ours, &mmdet_pasted(fx, "paste_gpu"));
        // Measured: 1 pixel off by one uint8 step (a probability within 4e-5 of a multiple of 1/255).
        let total = (db.size()[0] * h * w) as f64;
        tab.push(
            "end-to-end pasted uint8: fraction of pixels differing",
            m as f64,
            n as f64 / total,
            "rel 1e-5".into(),
            n as f64 / total <= 1e-5,
        );
    }
}

fn training(fx: &Fixture, model: &MaskRcnn, cfg: &DetectorConfig, tab: &mut Table) {
    let (h, w) = fx.hw;
    let targets = fx.targets();
    let gt = fx.get("gt_boxes");
    let mm_feats = fx.levels("fpn");
    let mm_out = RpnOutputs { cls: fx.levels("rpn_cls"), reg: fx.levels("rpn_reg") };
    {
        let _g = tch::no_grad_guard();
        // 1. RPN targets: our anchors, assigner and coder composed as `RpnHead::losses` does.
        let anchors = Tensor::cat(&model.rpn_head().level_anchors(&mm_out), 0);
        let labels = Tensor::zeros([gt.size()[0]], (Kind::Int64, Device::Cpu));
        let res = MaxIouAssigner::new(&cfg.heads.rpn.assigner).assign(&anchors, gt, &labels);
        let mm_w = fx.get("rpn_label_weights").gt(0.0);
        tab.count(
            "rpn targets: sampled anchors differing",
            mismatches(&res.gt_inds.ge(0), &mm_w),
            0,
        );
        let mm_pos = fx.get("rpn_labels").eq(0).logical_and(&mm_w);
        tab.count(
            "rpn targets: positive anchors differing",
            mismatches(&res.gt_inds.gt(0), &mm_pos),
            0,
        );
        let pos = res.gt_inds.gt(0).nonzero().view([-1]);
        let enc = BoxCoder::new(&cfg.heads.rpn.coder).encode(
            &anchors.index_select(0, &pos),
            &gt.index_select(0, &(res.gt_inds.index_select(0, &pos) - 1)),
        );
        // Measured: 0.
        tab.close(
            "rpn targets: box deltas of positives",
            &enc,
            &fx.get("rpn_bbox_targets").index_select(0, &pos),
            1e-6,
            0.0,
        );

        // 2. Training proposals (rpn_proposal cfg) from mmdet's RPN outputs.
        let props = model.rpn_head().proposals(&mm_out, &[(h, w)], &cfg.heads.rpn.train_proposals);
        let (tb, ts) = (fx.get("train_proposals"), fx.get("train_proposal_scores"));
        // Measured: 0 px, 0.
        one_to_one(
            tab,
            "train proposals (mmdet RPN outputs)",
            &props[0].boxes,
            &props[0].scores,
            tb,
            ts,
            1e-5,
            1e-7,
        );
    }

    // 3. RoI sampling and targets on mmdet's training proposals.
    let tb = fx.get("train_proposals");
    let image = fx.get("image");
    let canvas = (image.size()[2], image.size()[3]);
    let gts = BatchTargets::new(std::slice::from_ref(&targets), Device::Cpu);
    let sampled = model.roi_head().stage().sample(&[tb.shallow_clone()], &gts, canvas);
    let mm_rois = fx.get("rcnn_rois");
    tab.count("rcnn sample: number of RoIs", sampled.rois.size()[0], mm_rois.size()[0]);
    let p = sampled.pos_rois.size()[0];
    tab.count("rcnn sample: number of positives", p, fx.get("rcnn_pos_gt_inds").size()[0]);
    if sampled.rois.size() == mm_rois.size() {
        // Measured: 0 (the same boxes, in the same order: GTs prepended, positives then negatives,
        // each ascending).
        tab.close("rcnn sample: RoIs (in order)", &sampled.rois, mm_rois, 0.0, 0.0);
        tab.count(
            "rcnn sample: labels differing",
            mismatches(&sampled.labels, fx.get("rcnn_labels")),
            0,
        );
        let mm_bt = fx.get("rcnn_bbox_targets").narrow(0, 0, p);
        // Measured: 0.
        tab.close(
            "rcnn targets: box deltas of positives",
            &sampled.bbox_targets,
            &mm_bt,
            1e-6,
            0.0,
        );
        // Measured: 0 (6 and 1 pixels before the padding and float64 fixes).
        let mt = fx.get("mask_targets");
        tab.count(
            "rcnn targets: 28x28 mask target pixels differing",
            mismatches(&sampled.mask_targets, mt),
            0,
        );
        // Diagnosis: the same targets before the `>= 0.5`, ours against mmdet's RoIAlign.
        let pos_boxes = sampled.pos_rois.narrow(1, 1, 4);
        let gi = fx.get("rcnn_pos_gt_inds");
        let padded = ImageSize::new(canvas.0 as usize, canvas.1 as usize);
        let soft = mask_targets(&pos_boxes, gi, &targets.masks, padded, 28, true, false);
        let mm_soft = fx.get("mask_targets_soft");
        // Measured: 6e-8. Before the fixes: 1.25e-6 at 256x256 (grid_sample's coordinate normalisation in
        // float32 turns mmdet's exact 0.5 averages into 0.49999997), 0.268 at 520x704 (mmdet
        // RoIAligns the GT bitmap padded to 544 rows, so a sample in the last image row blends
        // with the zero padding; ours clamps at the unpadded border).
        tab.close("rcnn targets: 28x28 soft (before >= 0.5)", &soft, mm_soft, 1e-6, 0.0);
        let half = mm_soft.eq(0.5);
        let flips = half.logical_and(&soft.lt(0.5)).sum(Kind::Int64).int64_value(&[]);
        println!(
            "    mask targets: {} of mmdet's soft values are exactly 0.5; ours is below 0.5 at {flips} of them",
            half.sum(Kind::Int64).int64_value(&[])
        );
    }

    // 4. Losses of each head on mmdet's inputs, then of the whole model from the image.
    if sampled.rois.size() == mm_rois.size() {
        // The mask loss on mmdet's own mask targets isolates the loss from the targets.
        let with_mm_targets = SampledRois {
            rois: sampled.rois.shallow_clone(),
            labels: sampled.labels.shallow_clone(),
            is_pos: sampled.is_pos.shallow_clone(),
            bbox_targets: sampled.bbox_targets.shallow_clone(),
            pos_rois: sampled.pos_rois.shallow_clone(),
            pos_labels: sampled.pos_labels.shallow_clone(),
            mask_targets: fx.get("mask_targets").shallow_clone(),
            is_gt: sampled.is_gt.shallow_clone(),
            rows_per_image: sampled.rows_per_image.clone(),
        };
        let l = model.roi_head().losses(&mm_feats, &with_mm_targets);
        // Measured: 0.
        tab.close(
            "loss_mask (mmdet feats, mmdet mask targets)",
            &l.mask,
            fx.get("loss_mask"),
            0.0,
            1e-6,
        );
    }
    let rpn = model.rpn_head().losses(&mm_out, &[gt.shallow_clone()], &[(h, w)]);
    let roi = model.roi_head().losses(&mm_feats, &sampled);
    let loss = |k: &str| fx.get(k).shallow_clone();
    // Measured: rel <= 2.3e-7; loss_mask 0 (rel 1.9e-5 / 2.7e-5 before the mask-target fixes).
    for (name, got, key) in [
        ("loss_rpn_cls (mmdet RPN outputs)", &rpn.cls, "loss_rpn_cls"),
        ("loss_rpn_bbox (mmdet RPN outputs)", &rpn.reg, "loss_rpn_bbox"),
        ("loss_cls (mmdet feats, sampled RoIs)", &roi.cls, "loss_cls"),
        ("loss_bbox (mmdet feats, sampled RoIs)", &roi.reg, "loss_bbox"),
        ("loss_mask (mmdet feats, sampled RoIs)", &roi.mask, "loss_mask"),
    ] {
        tab.close(name, got, &loss(key), 0.0, 2e-6);
    }
    let all = model.losses(fx.get("image"), std::slice::from_ref(&targets)).unwrap();
    // Measured: as the per-head losses (the same inputs bit for bit).
    for (name, got, key) in [
        ("end-to-end loss_rpn_cls", all.get("loss_rpn_cls").unwrap(), "loss_rpn_cls"),
        ("end-to-end loss_rpn_bbox", all.get("loss_rpn_bbox").unwrap(), "loss_rpn_bbox"),
        ("end-to-end loss_cls", all.get("loss_cls").unwrap(), "loss_cls"),
        ("end-to-end loss_bbox", all.get("loss_bbox").unwrap(), "loss_bbox"),
        ("end-to-end loss_mask", all.get("loss_mask").unwrap(), "loss_mask"),
    ] {
        tab.close(name, got, &loss(key), 0.0, 1e-5);
    }
}

fn check(size: &str) {
    let t0 = std::time::Instant::now();
    let fx = Fixture::run("maskrcnn", size);
    let t1 = t0.elapsed();
    let _torch = torch_lock();
    default_threads();
    let t2 = std::time::Instant::now();
    let (_vs, model, cfg) = model(&fx);
    let mut tab = Table::default();
    inference(&fx, &model, &mut tab);
    training(&fx, &model, &cfg, &mut tab);
    println!(
        "{size}: fixture {:.1} s, Rust side {:.1} s",
        t1.as_secs_f64(),
        t2.elapsed().as_secs_f64()
    );
    tab.finish(size);
}

#[test]
fn maskrcnn_matches_mmdet_256() {
    check("256x256");
}

#[test]
fn maskrcnn_matches_mmdet_520x704() {
    check("520x704");
}
