//! Parity with torchvision / timm trunks and torchvision's FPN, random weights, eval mode.

use std::collections::HashMap;

use cellseg_backbones::{
    Backbone, BackboneConfig, BackboneKind, Fpn, FpnConfig, LoadPolicy, checkpoint,
};
use tch::{Device, Kind, Tensor, nn};

/// Relative error `max|a - b| / max|b|` (the 1e-4 criterion).
fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.size(), want.size(), "shapes differ");
    let diff = (got - want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]).max(1e-12);
    diff / scale
}

fn check(kind: BackboneKind, h: i64, w: i64) {
    let dir = tempfile::tempdir().unwrap();
    let name = kind.name();
    let (hs, ws) = (h.to_string(), w.to_string());
    crate::run_fixture_script(&["parity", dir.path().to_str().unwrap(), name, &hs, &ws]);
    let expected: HashMap<String, Tensor> =
        checkpoint::read(dir.path().join(format!("{name}.expected.safetensors")))
            .unwrap()
            .into_iter()
            .collect();
    let input = &expected["input"];
    let mut worst = 0.0f64;
    for stride in [2, 1] {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = BackboneConfig { stem_stride: stride, ..BackboneConfig::new(kind) };
        let backbone = cfg.build(&(vs.root() / "backbone")).unwrap();
        let fpn =
            Fpn::new(&(vs.root() / "neck"), &FpnConfig::default(), &backbone.out_shapes()).unwrap();
        let weights = dir.path().join(format!("{name}.weights.safetensors"));
        // Strict, whole-VarStore load: every backbone.* and neck.* key must match.
        let report = checkpoint::load(&vs, &weights, &LoadPolicy::default()).unwrap();
        assert_eq!(report.loaded, vs.len());
        let (feats, pyramid) = tch::no_grad(|| {
            let feats = backbone.forward(input, false);
            let pyramid = fpn.forward(&feats);
            (feats, pyramid)
        });
        assert_eq!(feats.len(), 4);
        assert_eq!(pyramid.len(), 5);
        for (i, (f, spec)) in feats.iter().zip(backbone.out_shapes()).enumerate() {
            let want = &expected[&format!("s{stride}.c{i}")];
            let err = rel_err(f, want);
            assert!(err < 1e-4, "{name} stem stride {stride} C{i}: relative error {err:.2e}");
            assert_eq!(spec.channels, want.size()[1]);
            assert_eq!(spec.stride, [4, 8, 16, 32][i] / (3 - stride as u32));
            worst = worst.max(err);
        }
        for (i, p) in pyramid.iter().enumerate() {
            let want = &expected[&format!("s{stride}.p{i}")];
            let err = rel_err(p, want);
            assert!(err < 1e-4, "{name} stem stride {stride} P{i}: relative error {err:.2e}");
            worst = worst.max(err);
        }
        // The outputs are not trivial.
        assert!(feats[3].abs().max().double_value(&[]) > 1e-3);
        assert!(pyramid[4].std(true).double_value(&[]) > 1e-6);
        let _ = Kind::Float;
    }
    eprintln!(
        "{name}: worst relative error {worst:.2e} over 2 stem strides × (4 stages + 5 FPN levels)"
    );
}

#[test]
fn resnet50_and_fpn_equal_torchvision() {
    check(BackboneKind::Resnet50, 67, 61);
}

#[test]
fn resnext101_32x8d_and_fpn_equal_torchvision() {
    check(BackboneKind::Resnext101_32x8d, 45, 37);
}

#[test]
fn tf_efficientnet_b4_and_fpn_equal_timm_and_torchvision() {
    check(BackboneKind::TfEfficientnetB4, 67, 61);
}
