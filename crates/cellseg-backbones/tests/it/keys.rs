//! Variable names and shapes equal the torchvision / timm `state_dict` (minus the classifier) for
//! all ten trunks.

use std::collections::BTreeMap;

use cellseg_backbones::{BackboneConfig, BackboneKind};
use tch::{Device, nn};

#[test]
fn every_trunk_has_the_pytorch_keys_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("keys.json");
    crate::run_fixture_script(&["keys", json.to_str().unwrap()]);
    let text = std::fs::read_to_string(&json).unwrap();
    let table: BTreeMap<String, BTreeMap<String, Vec<i64>>> = serde_json::from_str(&text).unwrap();
    assert_eq!(table.len(), BackboneKind::ALL.len());
    for kind in BackboneKind::ALL {
        let want = &table[kind.name()];
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = BackboneConfig::new(kind).build(&vs.root()).unwrap();
        let got: BTreeMap<String, Vec<i64>> =
            vs.variables().into_iter().map(|(k, t)| (k, t.size())).collect();
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{}: missing {missing:?}, extra {extra:?}",
            kind.name()
        );
        for (k, shape) in want {
            assert_eq!(&got[k], shape, "{}: {k}", kind.name());
        }
    }
}
