//! The ensemble on small random detectors of all three architectures: an ensemble of one with
//! the identity view and the member's own settings equals the member's `predict`; several
//! members with every view and a usage table run through all merge points; bad members and
//! inputs are refused by name.

use cellseg_backbones::{FpnConfig, TinyConfig};
use cellseg_core::testing::torch_lock;
use cellseg_core::{CellType, ImageSize};
use cellseg_ensemble::{Ensemble, EnsembleConfig, Error, Member, Usage, View};
use cellseg_heads::detectors::{Arch, DetectorConfig, Trunk};
use cellseg_heads::{HeadsConfig, TwoStageDetector};
use tch::{Device, Kind, Tensor, nn};

fn tiny(arch: Arch, classes: i64) -> DetectorConfig {
    let mut h = HeadsConfig { num_classes: classes, ..HeadsConfig::default() };
    h.rpn.feat_channels = 16;
    h.rpn.anchors.scales = vec![4.0];
    h.rpn.test_proposals.nms_pre = 200;
    h.rpn.test_proposals.max_per_img = 60;
    h.bbox_head.fc_channels = 32;
    h.bbox_head.reg_class_agnostic = arch != Arch::MaskRcnn;
    h.mask_head.conv_channels = 16;
    h.mask_head.num_convs = 1;
    h.htc.semantic_head.conv_channels = 16;
    h.htc.semantic_head.num_convs = 1;
    // Untrained heads give ~1/(C+1) probabilities: a low threshold keeps detections to compare.
    h.test.score_thr = 0.05;
    let cfg = DetectorConfig {
        arch: Arch::MaskRcnn,
        trunk: Trunk::Tiny,
        tiny: TinyConfig { widths: [8, 16, 16, 16], ..TinyConfig::default() },
        neck: FpnConfig { out_channels: 16, num_outs: 5 },
        heads: h,
        ..DetectorConfig::default()
    };
    if arch == Arch::MaskRcnn { cfg } else { cfg.to_arch(arch).unwrap() }
}

struct Built {
    _vs: nn::VarStore,
    model: Box<dyn TwoStageDetector>,
}

fn build(cfg: &DetectorConfig, seed: i64) -> Built {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = cfg.build(&vs.root()).unwrap();
    Built { _vs: vs, model }
}

fn image(seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn([1, 3, 96, 128], (Kind::Float, Device::Cpu))
}

#[test]
fn an_ensemble_of_one_with_its_own_settings_equals_predict() {
    let _torch = torch_lock();
    let size = ImageSize::new(90, 120);
    for (seed, arch) in [Arch::MaskRcnn, Arch::Cascade, Arch::Htc].into_iter().enumerate() {
        let b = build(&tiny(arch, 3), seed as i64);
        let img = image(10 + seed as i64);
        let want = b.model.predict(&img, &[size]).unwrap().remove(0);
        let members = vec![Member { name: "alone", model: b.model.as_ref() }];
        let ens = Ensemble::new(members, EnsembleConfig::of_member(b.model.as_ref())).unwrap();
        let got = ens.predict(&img, size).unwrap();
        assert!(want.boxes.len() > 5, "{arch:?}: only {} detections to compare", want.boxes.len());
        assert_eq!(got.soft, want, "{arch:?}");
        assert_eq!(got.used, [0]);
    }
}

#[test]
fn three_architectures_with_flips_and_usage_run_every_merge_point() {
    let _torch = torch_lock();
    let size = ImageSize::new(90, 120);
    let built: Vec<Built> = [Arch::MaskRcnn, Arch::Cascade, Arch::Htc]
        .into_iter()
        .enumerate()
        .map(|(i, a)| build(&tiny(a, 3), 20 + i as i64))
        .collect();
    let names = ["m", "c", "h"];
    let members: Vec<Member> =
        built.iter().zip(names).map(|(b, name)| Member { name, model: b.model.as_ref() }).collect();
    let mut cfg = EnsembleConfig::default();
    cfg.proposals.score_thr = [-1.0; 3];
    cfg.boxes.score_thr = [0.05; 3];
    let img = image(3);

    // Every member, four views.
    let ens = Ensemble::new(members.clone(), cfg.clone()).unwrap();
    let all = ens.predict(&img, size).unwrap();
    let n = all.proposals.boxes.size()[0];
    assert!(n > 0);
    assert_eq!(all.merged.scores.size(), [n, 3]);
    assert_eq!(all.used, [0, 1, 2]);
    assert_eq!(all.voted, None);
    assert_eq!(all.guess.level_counts.len(), 5);
    let k = all.soft.boxes.len();
    assert!(k > 0);
    assert_eq!(all.mask_probs.size(), [k as i64, 28, 28]);
    let probs = Vec::<f32>::try_from(all.mask_probs.view([-1])).unwrap();
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)));
    // Scores sorted, above the threshold; boxes inside the image.
    let s = &all.soft.scores;
    assert!(s.windows(2).all(|w| w[0] >= w[1]) && s.iter().all(|&v| v > 0.05));
    assert!(all.soft.boxes.iter().all(|b| b.x1 >= 0.0 && b.x2 <= 120.0 && b.y2 <= 90.0));

    // A classifier member votes the cell type, which picks the members.
    cfg.usage = Some(Usage {
        cls: Some(vec![0]),
        shsy5y: Some(vec![0, 1]),
        astro: Some(vec![1, 2]),
        cort: Some(vec![0, 2]),
    });
    cfg.use_tta_masks = false;
    let ens = Ensemble::new(members.clone(), cfg.clone()).unwrap();
    let sub = ens.predict(&img, size).unwrap();
    let voted = sub.voted.expect("the classifier detects something");
    assert_eq!(sub.cell_type, voted);
    let want_used = match voted {
        CellType::Shsy5y => vec![0, 1],
        CellType::Astro => vec![1, 2],
        CellType::Cort => vec![0, 2],
    };
    assert_eq!(sub.used, want_used);

    // Usage that names every member everywhere is the plain ensemble.
    cfg.usage = Some(Usage { cls: Some(vec![0, 1, 2]), ..Usage::default() });
    cfg.use_tta_masks = true;
    let same = Ensemble::new(members, cfg).unwrap().predict(&img, size).unwrap();
    assert_eq!(same.soft, all.soft);
}

#[test]
fn a_flipped_pass_is_the_member_on_the_flipped_image_mapped_back() {
    let _torch = torch_lock();
    let hw = (90, 120);
    let b = build(&tiny(Arch::Cascade, 3), 5);
    let img = image(4);
    let props = Tensor::from_slice(&[
        10.0f32, 5.0, 40.0, 30.0, 60.0, 50.0, 119.0, 89.0, 0.0, 0.0, 8.0, 8.0,
    ])
    .view([3, 4]);
    let views = [View::Identity, View::Horizontal];
    let both = Tensor::cat(&[View::Identity.image(&img, hw), View::Horizontal.image(&img, hw)], 0);
    let feats = b.model.features(&both).unwrap();
    let passes_of = |with_class_boxes| {
        cellseg_ensemble::boxes::member_passes(
            b.model.as_ref(),
            &feats,
            &props,
            &views,
            hw,
            0.5,
            3,
            with_class_boxes,
        )
        .unwrap()
    };
    let passes = passes_of(true);
    // By hand: the flipped image alone, the flipped RoIs moved by DELTA, the boxes flipped back.
    let flipped = b.model.features(&View::Horizontal.image(&img, hw)).unwrap();
    let rois = View::Horizontal.shift(&View::Horizontal.boxes(&props, hw), hw, 0.5);
    let direct = b.model.box_scores(&flipped, &[rois], &[hw]).unwrap();
    let close = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap() < 1e-4;
    assert!(close(&passes[1].scores, &direct.scores.narrow(1, 0, 3)));
    let back = View::Horizontal.boxes(&direct.boxes.select(1, 0), hw);
    assert!(close(&passes[1].boxes, &back));
    // Every class's box, mapped back (a class-agnostic cascade head: the same box for each).
    let all = View::Horizontal.boxes(&direct.boxes.narrow(1, 0, 3), hw);
    assert!(close(passes[1].class_boxes.as_ref().unwrap(), &all));
    // Without class boxes, the same best boxes and scores to the bit.
    let lean = passes_of(false);
    for (a, l) in passes.iter().zip(&lean) {
        assert!(l.class_boxes.is_none());
        assert!(a.boxes.equal(&l.boxes) && a.scores.equal(&l.scores));
    }
    // The identity pass is the member's own.
    let own = b
        .model
        .box_scores(&b.model.features(&img).unwrap(), &[props.shallow_clone()], &[hw])
        .unwrap();
    assert!(close(&passes[0].scores, &own.scores.narrow(1, 0, 3)));
}

#[test]
fn members_that_cannot_be_merged_are_refused_by_name() {
    let _torch = torch_lock();
    let a = build(&tiny(Arch::MaskRcnn, 3), 1);
    let b = build(&tiny(Arch::Cascade, 1), 2);
    let mut c_cfg = tiny(Arch::MaskRcnn, 3);
    c_cfg.heads.rpn.anchors.scales = vec![8.0];
    let c = build(&c_cfg, 3);
    fn m<'a>(name: &'a str, b: &'a Built) -> Member<'a> {
        Member { name, model: b.model.as_ref() }
    }
    fn err(members: Vec<Member>, cfg: EnsembleConfig) -> String {
        Ensemble::new(members, cfg).unwrap_err().to_string()
    }
    let (a, b, c) = (&a, &b, &c);

    let e = err(vec![m("run_a", a), m("run_b", b)], EnsembleConfig::default());
    assert!(e.contains("`run_a`") && e.contains("`run_b`") && e.contains("(3 and 1)"), "{e}");
    let e = err(vec![m("run_a", a), m("run_c", c)], EnsembleConfig::default());
    assert!(e.contains("`run_c`") && e.contains("anchors"), "{e}");
    let e = err(vec![], EnsembleConfig::default());
    assert!(e.contains("no member"), "{e}");
    let cfg = EnsembleConfig { num_classes: Some(4), ..EnsembleConfig::default() };
    let e = err(vec![m("run_a", a)], cfg);
    assert!(e.contains("num_classes = 4") && e.contains("3 classes"), "{e}");
    let cfg = EnsembleConfig {
        usage: Some(Usage { astro: Some(vec![0, 2]), ..Usage::default() }),
        ..EnsembleConfig::default()
    };
    let e = err(vec![m("run_a", a)], cfg);
    assert!(e.contains("usage.astro names member 2"), "{e}");
    let cfg = EnsembleConfig { views: vec![View::Horizontal], ..EnsembleConfig::default() };
    let e = err(vec![m("run_a", a)], cfg);
    assert!(e.contains("\"identity\""), "{e}");

    let ens = Ensemble::new(vec![m("run_a", a)], EnsembleConfig::default()).unwrap();
    let bad = Tensor::zeros([1, 3, 64, 64], (Kind::Float, Device::Cpu));
    let e = ens.predict(&bad, ImageSize::new(90, 120)).unwrap_err();
    assert!(matches!(e, Error::Mismatch(_)) && e.to_string().contains("[1, 3, 64, 64]"), "{e}");
    // Another dtype than the weights' is the heads' own input error, before any tensor work.
    let double = Tensor::zeros([1, 3, 64, 64], (Kind::Double, Device::Cpu));
    let e = ens.predict(&double, ImageSize::new(64, 64)).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::Heads(cellseg_heads::Error::Input { .. }))
            && msg.contains("Double")
            && msg.contains("Float"),
        "{msg}"
    );
}

#[test]
fn the_config_file_is_strict_and_names_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ens.toml");
    std::fs::write(&p, "delta = 0.5\n[boxes]\nnms_iuo = [0.7, 0.9, 0.6]\n").unwrap();
    let e = EnsembleConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("ens.toml") && e.contains("nms_iuo"), "{e}");
    std::fs::write(&p, "[proposals]\nnms_iou = [0.7, 1.5, 0.6]\n").unwrap();
    let e = EnsembleConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("ens.toml") && e.contains("proposals.nms_iou = 1.5"), "{e}");
    std::fs::write(&p, "[usage]\ncort = []\n").unwrap();
    let e = EnsembleConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("usage.cort = []"), "{e}");
    // A round trip keeps every value.
    let c = EnsembleConfig::seed_single();
    std::fs::write(&p, c.to_toml()).unwrap();
    assert_eq!(EnsembleConfig::load(&p).unwrap(), c);
    // A member's own settings (no proposal threshold: negative) and a usage table round-trip too.
    let member = tiny(Arch::Cascade, 3);
    let b = build(&member, 0);
    let mut own = EnsembleConfig::of_member(b.model.as_ref());
    own.usage = Some(Usage { cls: Some(vec![0]), ..Usage::default() });
    assert_eq!(own.proposals.score_thr, [-1.0; 3]);
    std::fs::write(&p, own.to_toml()).unwrap();
    assert_eq!(EnsembleConfig::load(&p).unwrap(), own);
}

#[test]
fn the_config_files_hold_the_seeds_values() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    // The file spells out the seed's num_classes = 3; the built-in default reads every class.
    let ens = EnsembleConfig::load(dir.join("ensemble.toml")).unwrap();
    assert_eq!(ens, EnsembleConfig { num_classes: Some(3), ..EnsembleConfig::default() });
    let single = EnsembleConfig::load(dir.join("ensemble_single.toml")).unwrap();
    assert_eq!(single, EnsembleConfig { num_classes: Some(3), ..EnsembleConfig::seed_single() });
}
