//! Training augmentations, configured in TOML (`configs/augment.toml`).
//!
//! Order (the seed's `config_aug_extra.py` plus the additions): random crop → flip → rot90 →
//! FlipPaste → brightness → contrast → gamma → blur → noise. Every step maps the image, the boxes
//! and the masks consistently; after the pipeline every box is non-empty and inside the image.
//!
//! **The seed's flips never ran** (`SEED.md` §9.1: its dataset pre-sets `results["flip"] = None`,
//! so mmdet's `RandomFlip` skipped sampling). cellseg applies them for real by default, with the
//! seed's *intended* probabilities P(h) = P(v) = 0.25; set `flip.horizontal = 0` and
//! `flip.vertical = 0` to reproduce what the seed actually trained with. The photometric
//! augmentations and rot90 are cellseg additions, off by default (the seed had none).

pub mod crop;
pub mod flip_paste;
pub mod geometry;
pub mod photometric;

use cellseg_core::ImageSize;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::sample::Sample;
use crate::{Error, Result};
pub use geometry::Flip;

/// All augmentation parameters. Missing keys take the defaults documented on each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// File format version (1).
    pub version: u32,
    /// Random crop (seed: 256×256, mmdet `RandomCrop`).
    pub crop: CropConfig,
    /// Random flips (seed intent: 0.25 / 0.25 / 0).
    pub flip: FlipConfig,
    /// Random quarter turns (cellseg addition, off).
    pub rot90: Rot90Config,
    /// FlipPaste on cort crops (seed `config_aug_extra.py`: p = 0.3).
    pub flip_paste: FlipPasteConfig,
    /// Additive brightness (off).
    pub brightness: BrightnessConfig,
    /// Contrast around the mean (off).
    pub contrast: ContrastConfig,
    /// Gamma curve (off).
    pub gamma: GammaConfig,
    /// Gaussian blur (off).
    pub blur: BlurConfig,
    /// Additive Gaussian noise (off).
    pub noise: NoiseConfig,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            version: 1,
            crop: CropConfig::default(),
            flip: FlipConfig::default(),
            rot90: Rot90Config::default(),
            flip_paste: FlipPasteConfig::default(),
            brightness: BrightnessConfig::default(),
            contrast: ContrastConfig::default(),
            gamma: GammaConfig::default(),
            blur: BlurConfig::default(),
            noise: NoiseConfig::default(),
        }
    }
}

/// Random crop (mmdet 2.x `RandomCrop`, `crop_type='absolute'`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CropConfig {
    /// Crop at all (default true).
    pub enabled: bool,
    /// Crop height (seed `SIZE = 256`).
    pub height: usize,
    /// Crop width (seed `SIZE = 256`).
    pub width: usize,
    /// Windows drawn before giving up when no box survives (default 100; the seed retries forever).
    pub max_tries: usize,
    /// Replace each clipped box by the tight box of its cropped mask and drop instances whose
    /// cropped mask is empty (mmdet `recompute_bbox`; default false as in the seed).
    pub recompute_boxes: bool,
}

impl Default for CropConfig {
    fn default() -> Self {
        Self { enabled: true, height: 256, width: 256, max_tries: 100, recompute_boxes: false }
    }
}

/// Flip probabilities; one draw picks at most one flip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlipConfig {
    /// P(left–right flip) (seed intent 0.25).
    pub horizontal: f64,
    /// P(top–bottom flip) (seed intent 0.25).
    pub vertical: f64,
    /// P(both axes) (0).
    pub diagonal: f64,
}

impl Default for FlipConfig {
    fn default() -> Self {
        Self { horizontal: 0.25, vertical: 0.25, diagonal: 0.0 }
    }
}

/// Random rotation by 90°, 180° or 270° (uniform), with probability `p`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rot90Config {
    /// Probability (default 0).
    pub p: f64,
}

/// The seed's FlipPaste.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlipPasteConfig {
    /// Probability (seed 0.3).
    pub p: f64,
    /// Applies only when the smallest label of the crop is this one (seed: cort = 2).
    pub label: usize,
}

impl Default for FlipPasteConfig {
    fn default() -> Self {
        Self { p: 0.3, label: 2 }
    }
}

/// Additive brightness: `v + U(-max_delta, max_delta) · 255`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrightnessConfig {
    /// Probability (default 0).
    pub p: f64,
    /// Largest shift as a fraction of 255 (default 0.1).
    pub max_delta: f32,
}

impl Default for BrightnessConfig {
    fn default() -> Self {
        Self { p: 0.0, max_delta: 0.1 }
    }
}

/// Contrast: `mean + f · (v - mean)`, `f ~ U(1 - max_delta, 1 + max_delta)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContrastConfig {
    /// Probability (default 0).
    pub p: f64,
    /// Largest relative change (default 0.2).
    pub max_delta: f32,
}

impl Default for ContrastConfig {
    fn default() -> Self {
        Self { p: 0.0, max_delta: 0.2 }
    }
}

/// Gamma: `255 · (v/255)^g`, `g ~ U(min, max)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GammaConfig {
    /// Probability (default 0).
    pub p: f64,
    /// Smallest gamma (default 0.8).
    pub min: f32,
    /// Largest gamma (default 1.25).
    pub max: f32,
}

impl Default for GammaConfig {
    fn default() -> Self {
        Self { p: 0.0, min: 0.8, max: 1.25 }
    }
}

/// Gaussian blur with `sigma ~ U(min_sigma, max_sigma)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlurConfig {
    /// Probability (default 0).
    pub p: f64,
    /// Smallest sigma in pixels (default 0.3).
    pub min_sigma: f32,
    /// Largest sigma in pixels (default 1.0).
    pub max_sigma: f32,
}

impl Default for BlurConfig {
    fn default() -> Self {
        Self { p: 0.0, min_sigma: 0.3, max_sigma: 1.0 }
    }
}

/// Additive Gaussian noise with `sigma ~ U(0, max_sigma)` gray levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseConfig {
    /// Probability (default 0).
    pub p: f64,
    /// Largest sigma in gray levels (default 5).
    pub max_sigma: f32,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        Self { p: 0.0, max_sigma: 5.0 }
    }
}

impl AugmentConfig {
    /// Loads and validates a TOML file.
    ///
    /// # Errors
    /// [`Error::Core`] naming the file and key for unknown keys or wrong types,
    /// [`Error::InvalidConfig`] for values out of range.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let cfg: Self = cellseg_core::config::load_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every augmentation on (for benchmarks and tests): flips, rot90, FlipPaste and all
    /// photometric steps with probability 0.5.
    pub fn all_on() -> Self {
        let mut c = Self::default();
        c.rot90.p = 0.5;
        c.flip_paste.p = 0.5;
        c.brightness.p = 0.5;
        c.contrast.p = 0.5;
        c.gamma.p = 0.5;
        c.blur.p = 0.5;
        c.noise.p = 0.5;
        c
    }

    /// Checks ranges: probabilities in [0, 1], flip probabilities sum to at most 1, crop size > 0,
    /// ordered ranges.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the key.
    pub fn validate(&self) -> Result<()> {
        let prob = |key: &'static str, v: f64| -> Result<()> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::InvalidConfig { key, value: v.to_string(), reason: "must be in [0, 1]" })
            }
        };
        prob("flip.horizontal", self.flip.horizontal)?;
        prob("flip.vertical", self.flip.vertical)?;
        prob("flip.diagonal", self.flip.diagonal)?;
        prob("flip (sum)", self.flip.horizontal + self.flip.vertical + self.flip.diagonal)?;
        prob("rot90.p", self.rot90.p)?;
        prob("flip_paste.p", self.flip_paste.p)?;
        prob("brightness.p", self.brightness.p)?;
        prob("contrast.p", self.contrast.p)?;
        prob("gamma.p", self.gamma.p)?;
        prob("blur.p", self.blur.p)?;
        prob("noise.p", self.noise.p)?;
        let bad = |key: &'static str, value: String, reason: &'static str| {
            Err(Error::InvalidConfig { key, value, reason })
        };
        if self.crop.enabled && (self.crop.height == 0 || self.crop.width == 0) {
            return bad(
                "crop.height/width",
                format!("{}x{}", self.crop.height, self.crop.width),
                "must be > 0",
            );
        }
        if self.crop.enabled && self.crop.max_tries == 0 {
            return bad("crop.max_tries", "0".into(), "must be > 0");
        }
        if !(0.0..=1.0).contains(&self.brightness.max_delta) {
            return bad(
                "brightness.max_delta",
                self.brightness.max_delta.to_string(),
                "must be in [0, 1]",
            );
        }
        if !(0.0..1.0).contains(&self.contrast.max_delta) {
            return bad(
                "contrast.max_delta",
                self.contrast.max_delta.to_string(),
                "must be in [0, 1)",
            );
        }
        // Finite too: `inf` is valid TOML, and a float past f32 (`1e39`) reads as `inf`; a range
        // with an infinite end cannot be sampled.
        if !(self.gamma.min > 0.0 && self.gamma.min <= self.gamma.max && self.gamma.max.is_finite())
        {
            return bad(
                "gamma.min/max",
                format!("{}..{}", self.gamma.min, self.gamma.max),
                "need 0 < min <= max < inf",
            );
        }
        if !(self.blur.min_sigma >= 0.0
            && self.blur.min_sigma <= self.blur.max_sigma
            && self.blur.max_sigma <= 10.0)
        {
            return bad(
                "blur.min_sigma/max_sigma",
                format!("{}..{}", self.blur.min_sigma, self.blur.max_sigma),
                "need 0 <= min <= max <= 10",
            );
        }
        if !(self.noise.max_sigma >= 0.0 && self.noise.max_sigma.is_finite()) {
            return bad(
                "noise.max_sigma",
                self.noise.max_sigma.to_string(),
                "must be >= 0, finite",
            );
        }
        Ok(())
    }
}

/// A validated augmentation pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Augment {
    config: AugmentConfig,
}

impl Augment {
    /// A pipeline from a config.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (see [`AugmentConfig::validate`]).
    pub fn new(config: AugmentConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The config.
    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    /// Runs the pipeline on `sample` with randomness from `rng`.
    ///
    /// Instances whose box is empty (for example masks emptied by the corrected-mask clip, which
    /// the seed keeps with box `(0,0,0,0)`) never reach the output: the crop drops them, and
    /// without a crop they are dropped at the end.
    ///
    /// # Errors
    /// [`Error::NoInstanceSurvives`] when no crop keeps an instance.
    pub fn apply<R: Rng + ?Sized>(&self, sample: &Sample, rng: &mut R) -> Result<Sample> {
        let c = &self.config;
        let mut s = if c.crop.enabled {
            crop::random_crop(
                sample,
                ImageSize::new(c.crop.height, c.crop.width),
                c.crop.max_tries,
                c.crop.recompute_boxes,
                rng,
            )?
        } else {
            sample.clone()
        };
        let u: f64 = rng.random();
        let flip = if u < c.flip.horizontal {
            Some(Flip::Horizontal)
        } else if u < c.flip.horizontal + c.flip.vertical {
            Some(Flip::Vertical)
        } else if u < c.flip.horizontal + c.flip.vertical + c.flip.diagonal {
            Some(Flip::Diagonal)
        } else {
            None
        };
        if let Some(f) = flip {
            s.image = geometry::flip_image(&s.image, f);
            s.instances = geometry::flip_instances(&s.instances, f);
        }
        if c.rot90.p > 0.0 && rng.random_bool(c.rot90.p) {
            let k = rng.random_range(1..=3u8);
            s.image = geometry::rot90_image(&s.image, k);
            s.instances = geometry::rot90_instances(&s.instances, k);
        }
        if c.flip_paste.p > 0.0
            && flip_paste::applies_to(&s.instances, c.flip_paste.label)
            && rng.random_bool(c.flip_paste.p)
        {
            s = flip_paste::flip_paste(&s);
        }
        if c.brightness.p > 0.0 && rng.random_bool(c.brightness.p) {
            let d = c.brightness.max_delta;
            photometric::brightness(&mut s.image, rng.random_range(-d..=d) * 255.0);
        }
        if c.contrast.p > 0.0 && rng.random_bool(c.contrast.p) {
            let d = c.contrast.max_delta;
            photometric::contrast(&mut s.image, rng.random_range(1.0 - d..=1.0 + d));
        }
        if c.gamma.p > 0.0 && rng.random_bool(c.gamma.p) {
            photometric::gamma(&mut s.image, rng.random_range(c.gamma.min..=c.gamma.max));
        }
        if c.blur.p > 0.0 && rng.random_bool(c.blur.p) {
            let sigma = rng.random_range(c.blur.min_sigma..=c.blur.max_sigma);
            photometric::gaussian_blur(&mut s.image, sigma);
        }
        if c.noise.p > 0.0 && rng.random_bool(c.noise.p) {
            let sigma = rng.random_range(0.0..=c.noise.max_sigma);
            photometric::gaussian_noise(&mut s.image, sigma, rng);
        }
        if !c.crop.enabled {
            let keep: Vec<usize> =
                (0..s.instances.len()).filter(|&i| s.instances.boxes[i].is_nonempty()).collect();
            if keep.len() < s.instances.len() {
                tracing::debug!(
                    id = %s.id,
                    dropped = s.instances.len() - keep.len(),
                    "instances with an empty box dropped"
                );
                s.instances = s.instances.select(&keep);
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
