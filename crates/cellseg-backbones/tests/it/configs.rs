//! Every `configs/backbones/*.toml` parses, validates and names its file's backbone.

use cellseg_backbones::BackboneConfig;

#[test]
fn every_backbone_config_parses_and_matches_its_file_name() {
    let dir = crate::repo().join("configs/backbones");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let cfg = BackboneConfig::from_toml(&path).unwrap_or_else(|e| panic!("{e}"));
        let stem = path.file_stem().unwrap().to_str().unwrap();
        assert_eq!(cfg.kind.name(), stem, "{}", path.display());
        n += 1;
    }
    assert_eq!(n, 10, "one config per backbone kind");
}
