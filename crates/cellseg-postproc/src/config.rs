//! The post-processing config: the seed's per-cell-type thresholds, read from TOML.
//!
//! Every per-type list is indexed `[shsy5y, astro, cort]` (the seed's `CELL_TYPES` order), as in the
//! seed's `process_results(results, thresholds_mask, thresholds_nms, thresholds_conf, min_sizes)`.
//! Defaults are the values of the seed's final `Inference.ipynb` (SEED.md §5, "Final
//! post-processing values"); `configs/postproc.toml` spells them out.

use std::path::Path;

use cellseg_core::CellType;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, filter::SmallMaskRule};

/// Post-processing settings, per cell type where the seed has per-type values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostprocConfig {
    /// File format version (1).
    pub version: u32,
    /// Soft-mask binarisation threshold on the 0–1 scale, compared as `byte > thr · 255`.
    /// Seed: `[0.45, 0.45, 0.45]`.
    pub mask_threshold: [f64; 3],
    /// Confidence threshold: detections with `score ≥ thr` are kept. Seed: `[0.3, 0.4, 0.7]`.
    pub confidence_threshold: [f64; 3],
    /// Mask-NMS IoU threshold (suppress when IoU `>` thr); 0 disables it, as in the seed's `if
    /// thresh_nms > 0`. Seed: `[0.1, 0.1, 0.05]`.
    pub mask_nms_threshold: [f64; 3],
    /// Optional class-agnostic box NMS on the confident boxes before mask NMS; 0 disables it.
    /// Default `[0, 0, 0]`: the seed's `process_results` has none (its ensemble already ran box NMS at
    /// `rcnn_iou_threshold = [0.7, 0.9, 0.6]` before pasting masks).
    pub box_nms_threshold: [f64; 3],
    /// Area threshold of the small-mask rule (pixels). Seed: the final scoring call passes the scalar
    /// `70` (the notebook's `best_min_sizes` is `[0, 0, 0]`, tuned `[50, 125, 75]` in a comment).
    pub min_size: [usize; 3],
    /// Which small-mask rule `min_size` feeds. Seed: `seed_smallest` (its `remove_small_masks`).
    pub small_masks: SmallMaskRule,
    /// Re-corrupt astro masks (contours filled with `fillConvexPoly`). Seed: `true`.
    pub corrupt_astro: bool,
    /// Fill the holes of every kept mask (`binary_fill_holes`) before overlap removal. Seed: `false`
    /// (the seed fills holes of training masks only).
    pub fill_holes: bool,
    /// Give each pixel to the most confident mask covering it. Seed: `true`.
    pub remove_overlap: bool,
    /// Keep masks that overlap removal left empty (they become `id,` rows). Seed: `true` (it never
    /// drops them).
    pub keep_empty: bool,
}

impl Default for PostprocConfig {
    fn default() -> Self {
        Self {
            version: 1,
            mask_threshold: [0.45, 0.45, 0.45],
            confidence_threshold: [0.3, 0.4, 0.7],
            mask_nms_threshold: [0.1, 0.1, 0.05],
            box_nms_threshold: [0.0, 0.0, 0.0],
            min_size: [70, 70, 70],
            small_masks: SmallMaskRule::SeedSmallest,
            corrupt_astro: true,
            fill_holes: false,
            remove_overlap: true,
            keep_empty: true,
        }
    }
}

/// The thresholds that apply to one image of a given cell type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypeParams {
    /// See [`PostprocConfig::mask_threshold`].
    pub mask_threshold: f64,
    /// See [`PostprocConfig::confidence_threshold`].
    pub confidence_threshold: f64,
    /// See [`PostprocConfig::mask_nms_threshold`].
    pub mask_nms_threshold: f64,
    /// See [`PostprocConfig::box_nms_threshold`].
    pub box_nms_threshold: f64,
    /// See [`PostprocConfig::min_size`].
    pub min_size: usize,
}

impl PostprocConfig {
    /// Reads `path` and validates it.
    ///
    /// # Errors
    /// [`Error::Core`] naming the file and key for unreadable or invalid TOML, [`Error::Config`] for
    /// a value out of range.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let cfg: Self = cellseg_core::config::load_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML (every key written), preceded by `comment` as `#` lines.
    pub fn to_toml(&self, comment: &str) -> String {
        let mut out: String = comment.lines().map(|l| format!("# {l}\n")).collect();
        out.push_str(&toml::to_string(self).expect("a PostprocConfig serialises to TOML"));
        out
    }

    /// Writes [`PostprocConfig::to_toml`] to `path` through a temporary file and a rename (no
    /// partial file under `path`, ever).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save(&self, path: impl AsRef<Path>, comment: &str) -> Result<()> {
        let path = path.as_ref();
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let io = |p: &Path, source| Error::Io { path: p.to_path_buf(), source };
        std::fs::write(&tmp, self.to_toml(comment)).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(path, e)
        })
    }

    /// Checks the version and that every threshold lies in `[0, 1]` (NaN never does).
    ///
    /// # Errors
    /// [`Error::Config`] naming the key and the value.
    pub fn validate(&self) -> Result<()> {
        if self.version != 1 {
            return Err(Error::Config {
                key: "version".into(),
                value: self.version.to_string(),
                reason: "only version 1 is known",
            });
        }
        let lists = [
            ("mask_threshold", &self.mask_threshold),
            ("confidence_threshold", &self.confidence_threshold),
            ("mask_nms_threshold", &self.mask_nms_threshold),
            ("box_nms_threshold", &self.box_nms_threshold),
        ];
        for (key, list) in lists {
            for (t, &v) in CellType::ALL.iter().zip(list.iter()) {
                if !(0.0..=1.0).contains(&v) {
                    return Err(Error::Config {
                        key: format!("{key}[{}] ({t})", t.label()),
                        value: v.to_string(),
                        reason: "must lie in [0, 1]",
                    });
                }
            }
        }
        Ok(())
    }

    /// The thresholds of `cell_type`.
    pub fn params(&self, cell_type: CellType) -> TypeParams {
        let i = cell_type.label();
        TypeParams {
            mask_threshold: self.mask_threshold[i],
            confidence_threshold: self.confidence_threshold[i],
            mask_nms_threshold: self.mask_nms_threshold[i],
            box_nms_threshold: self.box_nms_threshold[i],
            min_size: self.min_size[i],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::config::parse_toml;

    #[test]
    fn the_committed_config_equals_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/postproc.toml");
        assert_eq!(PostprocConfig::load(path).unwrap(), PostprocConfig::default());
    }

    #[test]
    fn saved_configs_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("best.toml");
        let cfg = PostprocConfig { min_size: [1, 51, 76], ..PostprocConfig::default() };
        cfg.save(&path, "tuned\nCV 0.3").unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("# tuned\n# CV 0.3\n"));
        assert_eq!(PostprocConfig::load(&path).unwrap(), cfg);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err =
            parse_toml::<PostprocConfig>("mask_treshold = [0.5, 0.5, 0.5]", "p.toml").unwrap_err();
        assert!(err.to_string().contains("mask_treshold"), "{err}");
        let cfg: PostprocConfig =
            parse_toml("confidence_threshold = [0.3, 1.4, 0.7]", "p.toml").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("confidence_threshold[1] (astro)") && err.contains("1.4"), "{err}");
        let cfg: PostprocConfig = parse_toml("small_masks = \"min_area\"", "p.toml").unwrap();
        assert_eq!(cfg.small_masks, SmallMaskRule::MinArea);
        assert_eq!(cfg.params(CellType::Cort).confidence_threshold, 0.7);
    }
}
