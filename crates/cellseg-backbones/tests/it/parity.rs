//! Parity with torchvision / timm trunks and torchvision's FPN, random weights, eval mode. The
//! stride-1 pass loads its trunk from the `.pth` file PyTorch wrote (`cellseg_backbones::pth`).

use std::collections::HashMap;

use cellseg_backbones::{
    Backbone, BackboneConfig, BackboneKind, Fpn, FpnConfig, LoadPolicy, checkpoint,
};
use tch::{Device, Tensor, nn};

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
        if stride == 2 {
            // Strict, whole-VarStore load: every backbone.* and neck.* key must match.
            let report = checkpoint::load(&vs, &weights, &LoadPolicy::default()).unwrap();
            assert_eq!(report.loaded, vs.len());
        } else {
            // The trunk straight from the classifier's own torch.save file (what torchvision /
            // timm publish; its head dropped by KeyMap::Trunk), the FPN from the safetensors file.
            let pth = dir.path().join(format!("{name}.pth"));
            let trunk = LoadPolicy {
                key_map: cellseg_backbones::KeyMap::Trunk,
                ..LoadPolicy::with_prefix("backbone")
            };
            let report = checkpoint::load(&vs, &pth, &trunk).unwrap();
            assert!(!report.dropped.is_empty(), "{name}: the classifier head is in the .pth");
            let neck: Vec<(String, Tensor)> = checkpoint::read(&weights)
                .unwrap()
                .into_iter()
                .filter_map(|(k, t)| k.strip_prefix("neck.").map(|k| (k.to_string(), t)))
                .collect();
            let neck_report =
                checkpoint::load_tensors(&vs, neck, &LoadPolicy::with_prefix("neck"), &weights)
                    .unwrap();
            assert_eq!(report.loaded + neck_report.loaded, vs.len());
        }
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
        if kind.efficientnet().is_some() {
            worst = worst.max(check_training_mode(kind, stride, &weights, &expected));
        }
        // The outputs are not trivial.
        assert!(feats[3].abs().max().double_value(&[]) > 1e-3);
        assert!(pyramid[4].std(true).double_value(&[]) > 1e-6);
    }
    eprintln!(
        "{name}: worst relative error {worst:.2e} (2 stem strides; 4 stages, 5 FPN levels; train-mode BN for EfficientNet)"
    );
}

/// Batch norm in training mode (`Norm::BatchNorm`, the seed's EfficientNet setting): outputs
/// with batch statistics and the updated running statistics equal PyTorch's after one step.
fn check_training_mode(
    kind: BackboneKind,
    stride: i64,
    weights: &std::path::Path,
    expected: &HashMap<String, Tensor>,
) -> f64 {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = BackboneConfig {
        stem_stride: stride,
        norm: cellseg_backbones::Norm::BatchNorm,
        drop_path_rate: 0.0,
        ..BackboneConfig::new(kind)
    };
    let backbone = cfg.build(&vs.root()).unwrap();
    let policy = LoadPolicy {
        prefix: None,
        key_map: cellseg_backbones::KeyMap::Identity,
        allow_missing: vec![],
        allow_unexpected: vec![r"^(neck|backbone)\.".into()],
    };
    // Load the trunk part of the file with its `backbone.` prefix stripped.
    let tensors: Vec<(String, Tensor)> = checkpoint::read(weights)
        .unwrap()
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix("backbone.").map(|k| (k.to_string(), t)))
        .collect();
    let report = checkpoint::load_tensors(&vs, tensors, &policy, weights).unwrap();
    assert_eq!(report.loaded, vs.len());
    let feats = tch::no_grad(|| backbone.forward(&expected["input"], true));
    let mut worst = 0.0f64;
    for (i, f) in feats.iter().enumerate() {
        let err = rel_err(f, &expected[&format!("s{stride}.train.c{i}")]);
        assert!(err < 1e-4, "{} train mode, stem stride {stride}, C{i}: {err:.2e}", kind.name());
        worst = worst.max(err);
    }
    let vars = vs.variables();
    let last = vars
        .keys()
        .filter(|k| k.starts_with("blocks.6.") && k.ends_with("bn3.running_mean"))
        .max()
        .unwrap()
        .clone();
    for (key, name) in [
        (last.clone(), "running_mean"),
        (last.replace("running_mean", "running_var"), "running_var"),
    ] {
        let err = rel_err(&vars[&key], &expected[&format!("s{stride}.train.{name}")]);
        assert!(err < 1e-4, "{} {key} after one training step: {err:.2e}", kind.name());
        worst = worst.max(err);
    }
    worst
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
