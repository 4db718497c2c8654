//! The tweaking grid: which thresholds to try, read from TOML (`configs/tweak.toml`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the grid is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TweakOrder {
    /// The seed's `tweak_thresholds` order, incrementally: per image and mask threshold, the
    /// pairwise mask IoUs once, mask NMS at every threshold in one pass, the small-mask sets, then
    /// per (NMS, size) pick the astro corruption, the overlap removal and the truth IoUs, and the
    /// metric at every confidence cut from the one score-sorted list.
    Incremental,
    /// The seed's `process_results` order, one [`crate::Pipeline`] run per grid point:
    /// confidence cut → mask NMS → small masks → corruption → overlap removal (IoUs recomputed
    /// after corruption) → metric. Slow; the reference that [`TweakOrder::Incremental`] with
    /// `overlap_ious = "after_corruption"` and `keep_first_when_all_small = false` must equal.
    ProcessResults,
}

/// Which masks overlap removal touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapIous {
    /// The seed's tweak: `remove_overlap_naive` gets the IoUs computed **before** the astro
    /// corruption, so only masks that overlapped another kept mask before corruption are
    /// processed (overlaps created by the corruption stay).
    BeforeCorruption,
    /// `process_results`: IoUs recomputed after corruption (every overlap is removed).
    AfterCorruption,
}

/// The grid of post-processing settings to score, per predicted cell type.
///
/// Defaults are the seed's (`SEED.md` §4.7, `inference/tweaking.py::tweak_thresholds` as called in
/// its Inference notebook): `thresholds_mask = [0.45]`, `thresholds_nms = [0.05, 0.1, 0.15]`,
/// `thresholds_conf = [0.20, 0.25, …, 0.80]`, `min_sizes = [0, 50, 75, 100, 150]`, astro
/// corruption and overlap removal on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TweakGrid {
    /// File format version (1).
    pub version: u32,
    /// Soft-mask binarisation thresholds (`byte > thr · 255`), each in `[0, 1]`. Seed: `[0.45]`.
    pub mask_thresholds: Vec<f64>,
    /// Mask-NMS IoU thresholds (suppress when IoU `>` thr), each in `(0, 1)`.
    /// Seed: `[0.05, 0.1, 0.15]`.
    pub nms_thresholds: Vec<f64>,
    /// Confidence thresholds (keep `score ≥ thr`), each in `[0, 1]`. Seed: `0.20, 0.25, …, 0.80`.
    pub confidence_thresholds: Vec<f64>,
    /// Minimum sizes: masks with area `≤ min_size` are removed (the tuner's
    /// `remove_small_masks_multisize`). Seed: `[0, 50, 75, 100, 150]`.
    pub min_sizes: Vec<usize>,
    /// Re-corrupt astro masks before overlap removal. Seed: `true`.
    pub corrupt_astro: bool,
    /// Remove overlaps (higher confidence wins). Seed: `true`.
    pub remove_overlap: bool,
    /// How the grid is computed. Default `incremental`.
    pub order: TweakOrder,
    /// Which IoUs overlap removal uses. Seed's tweak: `before_corruption`.
    pub overlap_ious: OverlapIous,
    /// The seed tuner's fallback when no mask of an image is larger than `min_size`: keep the
    /// most confident one (index 0). Seed: `true`.
    pub keep_first_when_all_small: bool,
}

impl Default for TweakGrid {
    fn default() -> Self {
        Self {
            version: 1,
            mask_thresholds: vec![0.45],
            nms_thresholds: vec![0.05, 0.1, 0.15],
            confidence_thresholds: vec![
                0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
            ],
            min_sizes: vec![0, 50, 75, 100, 150],
            corrupt_astro: true,
            remove_overlap: true,
            order: TweakOrder::Incremental,
            overlap_ious: OverlapIous::BeforeCorruption,
            keep_first_when_all_small: true,
        }
    }
}

impl TweakGrid {
    /// Reads `path` (strict TOML: unknown keys are errors naming the key and line) and validates it.
    ///
    /// # Errors
    /// [`Error::Core`] for unreadable or invalid TOML, [`Error::Grid`] for invalid values.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let grid: Self = cellseg_core::config::load_toml(path.as_ref())?;
        grid.validate(path.as_ref())?;
        Ok(grid)
    }

    /// Number of grid points per image: masks × NMS × sizes × confidences.
    pub fn len(&self) -> usize {
        self.mask_thresholds.len()
            * self.nms_thresholds.len()
            * self.min_sizes.len()
            * self.confidence_thresholds.len()
    }

    /// True when some list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the version, that no list is empty or has a value twice, the ranges, and that
    /// `order = "process_results"` comes with its own semantics. `path` names the file in errors.
    ///
    /// # Errors
    /// [`Error::Grid`] naming the key and value.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let err = |key: &str, value: String, reason: &str| Error::Grid {
            path: PathBuf::from(path),
            key: key.to_string(),
            value,
            reason: reason.to_string(),
        };
        if self.version != 1 {
            return Err(err("version", self.version.to_string(), "only version 1 is known"));
        }
        let lists: [(&str, &[f64], f64, f64, bool); 3] = [
            ("mask_thresholds", &self.mask_thresholds, 0.0, 1.0, true),
            ("nms_thresholds", &self.nms_thresholds, 0.0, 1.0, false),
            ("confidence_thresholds", &self.confidence_thresholds, 0.0, 1.0, true),
        ];
        for (key, list, lo, hi, closed) in lists {
            if list.is_empty() {
                return Err(err(key, "[]".into(), "the list is empty"));
            }
            for (i, &v) in list.iter().enumerate() {
                let ok = if closed { v >= lo && v <= hi } else { v > lo && v < hi };
                if !ok {
                    let range =
                        if closed { format!("[{lo}, {hi}]") } else { format!("({lo}, {hi})") };
                    return Err(err(
                        &format!("{key}[{i}]"),
                        v.to_string(),
                        &format!("must lie in {range}"),
                    ));
                }
                if list[..i].contains(&v) {
                    return Err(err(
                        &format!("{key}[{i}]"),
                        v.to_string(),
                        "the value is listed twice",
                    ));
                }
            }
        }
        if self.min_sizes.is_empty() {
            return Err(err("min_sizes", "[]".into(), "the list is empty"));
        }
        for (i, &v) in self.min_sizes.iter().enumerate() {
            if self.min_sizes[..i].contains(&v) {
                return Err(err(
                    &format!("min_sizes[{i}]"),
                    v.to_string(),
                    "the value is listed twice",
                ));
            }
        }
        if self.order == TweakOrder::ProcessResults
            && (self.overlap_ious != OverlapIous::AfterCorruption || self.keep_first_when_all_small)
        {
            return Err(err(
                "order",
                "\"process_results\"".into(),
                "process_results recomputes overlaps after corruption and has no keep-first \
                 fallback: set overlap_ious = \"after_corruption\" and \
                 keep_first_when_all_small = false",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellseg_core::config::parse_toml;

    #[test]
    fn the_committed_grid_equals_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/tweak.toml");
        let grid = TweakGrid::load(path).unwrap();
        assert_eq!(grid, TweakGrid::default());
        assert_eq!(grid.len(), 3 * 13 * 5);
    }

    #[test]
    fn bad_grids_are_named() {
        let p = Path::new("g.toml");
        let e = parse_toml::<TweakGrid>("min_size = [0]", p).unwrap_err().to_string();
        assert!(e.contains("g.toml") && e.contains("min_size"), "{e}");
        let g: TweakGrid = parse_toml("nms_thresholds = []", p).unwrap();
        let e = g.validate(p).unwrap_err().to_string();
        assert!(e.contains("nms_thresholds") && e.contains("empty"), "{e}");
        let g: TweakGrid = parse_toml("confidence_thresholds = [0.3, 1.2]", p).unwrap();
        let e = g.validate(p).unwrap_err().to_string();
        assert!(e.contains("confidence_thresholds[1] = 1.2"), "{e}");
        let g: TweakGrid = parse_toml("nms_thresholds = [0.0]", p).unwrap();
        assert!(g.validate(p).unwrap_err().to_string().contains("(0, 1)"));
        let g: TweakGrid = parse_toml("min_sizes = [0, 50, 0]", p).unwrap();
        assert!(g.validate(p).unwrap_err().to_string().contains("min_sizes[2]"));
        let g: TweakGrid = parse_toml("order = \"process_results\"", p).unwrap();
        assert!(g.validate(p).unwrap_err().to_string().contains("after_corruption"));
        let g: TweakGrid = parse_toml(
            "order = \"process_results\"\noverlap_ious = \"after_corruption\"\nkeep_first_when_all_small = false",
            p,
        )
        .unwrap();
        g.validate(p).unwrap();
    }
}
