//! `tools/export_weights.py` turns a seed-style mmdet checkpoint into a file that loads strictly.

use cellseg_backbones::{
    Backbone, BackboneConfig, BackboneKind, Fpn, FpnConfig, LoadPolicy, checkpoint,
};
use tch::{Device, nn};

#[test]
fn exported_mmdet_checkpoint_loads_strictly_into_backbone_and_neck() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("seed.pth");
    let out = dir.path().join("seed.safetensors");
    crate::run_fixture_script(&["mmdet-sample", pth.to_str().unwrap()]);
    cellseg_core::testing::run_tool(
        "export_weights.py",
        &["mmdet", pth.to_str().unwrap(), out.to_str().unwrap(), "--only", "backbone,neck"],
    );
    let vs = nn::VarStore::new(Device::Cpu);
    let backbone = BackboneConfig::new(BackboneKind::TfEfficientnetB3)
        .build(&(vs.root() / "backbone"))
        .unwrap();
    let _fpn =
        Fpn::new(&(vs.root() / "neck"), &FpnConfig::default(), &backbone.out_shapes()).unwrap();
    let report = checkpoint::load(&vs, &out, &LoadPolicy::default()).unwrap();
    assert_eq!(report.loaded, vs.len());
    assert!(report.dropped.is_empty());
}
