//! The detectors, assembled from backbone + FPN + RPN + RoI head, and the one interface that
//! everything above them drives: [`TwoStageDetector`].
//!
//! The trainer adapter, the validator and the ensemble know nothing architecture-specific: they
//! call the stages of the interface — features, RPN outputs, proposals with a caller's
//! [`ProposalConfig`], class probabilities and decoded boxes of given RoIs ([`BoxScores`]), mask
//! probabilities of given boxes, losses, and the provided [`TwoStageDetector::detect`] /
//! [`TwoStageDetector::predict`] built on them. A [`DetectorConfig`] (`arch = "mask_rcnn" |
//! "cascade" | "htc"`) builds any of them: [`mask_rcnn::MaskRcnn`] or
//! [`cascade::CascadeRcnn`] (Cascade Mask R-CNN and HTC).
//!
//! # Example
//! ```
//! use cellseg_core::ImageSize;
//! use cellseg_heads::detectors::{Arch, DetectorConfig, Trunk};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! let mut cfg = DetectorConfig { arch: Arch::MaskRcnn, trunk: Trunk::Tiny, ..Default::default() };
//! cfg.neck.out_channels = 16;
//! cfg.heads.num_classes = 3;
//! cfg.heads.rpn.feat_channels = 16;
//! cfg.heads.bbox_head.fc_channels = 32;
//! cfg.heads.mask_head.conv_channels = 16;
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = cfg.build(&vs.root())?;
//! let images = Tensor::randn([1, 3, 64, 64], (Kind::Float, Device::Cpu));
//! // Soft masks: binarisation is cellseg-postproc's job.
//! let dets = model.predict(&images, &[ImageSize::new(64, 64)])?;
//! assert_eq!(dets.len(), 1);
//! # Ok::<(), cellseg_heads::Error>(())
//! ```

pub mod cascade;
pub mod config;
pub mod mask_rcnn;
pub(crate) mod two_stage;

use cellseg_core::{ImageSize, Instances};
use cellseg_postproc::SoftDetections;
use tch::{Device, Kind, Tensor};

pub use config::{Arch, DetectorConfig, Trunk};

use crate::Result;
use crate::convert::to_soft_detections;
use crate::heads::rpn::{ProposalConfig, Proposals, RpnHead, RpnOutputs};
use crate::libtorch::guarded;
use crate::ops::paste::paste_soft;
use crate::roi_heads::{RawDetections, RcnnTestConfig, multiclass_nms};
use two_stage::{check_images, check_sizes};

/// The features a detector computes once per image and view: the FPN levels (high → low
/// resolution) and, for HTC, the semantic head's feature map.
#[derive(Debug)]
pub struct Features {
    /// `[B, C, H_l, W_l]` per FPN level.
    pub levels: Vec<Tensor>,
    /// `[B, C, H_1, W_1]` semantic features (HTC's `semantic_feat`), `None` for other detectors.
    pub semantic: Option<Tensor>,
}

impl Features {
    /// The same features on `device` (the ensemble parks them on the CPU between stages).
    pub fn to_device(&self, device: Device) -> Self {
        Self {
            levels: self.levels.iter().map(|l| l.to_device(device)).collect(),
            semantic: self.semantic.as_ref().map(|s| s.to_device(device)),
        }
    }

    /// The device of the features.
    pub fn device(&self) -> Device {
        self.levels.first().map_or(Device::Cpu, Tensor::device)
    }

    /// The first level (what an error about these features describes).
    pub(crate) fn first_level(&self) -> Tensor {
        self.levels.first().map_or_else(Tensor::new, Tensor::shallow_clone)
    }
}

/// Class probabilities and decoded boxes of a set of RoIs (rows concatenated in image order).
#[derive(Debug)]
pub struct BoxScores {
    /// `[R, C + 1]` softmax probabilities, background last (a cascade: softmax of the stages'
    /// mean logits).
    pub scores: Tensor,
    /// `[R, C, 4]` box of every class, decoded from the RoI and clipped to its image (a
    /// class-agnostic head repeats its box for every class).
    pub boxes: Tensor,
}

/// Named training losses in mmdet's names (`loss_rpn_cls`, `loss_rpn_bbox`, `loss_cls`,
/// `loss_bbox`, `loss_mask`, `s{i}.loss_*` for cascade stages, HTC's `loss_semantic_seg`), in the
/// order the detector computed them; a loss that mmdet returns as a list (the RPN's levels) is
/// pushed as the sum of the per-level means, as mmdet's `_parse_losses` does.
///
/// The one type for the detectors and the training engine (`cellseg_train` re-exports it): any
/// model the engine trains returns these.
#[derive(Debug, Default)]
pub struct Losses {
    entries: Vec<(String, Tensor)>,
}

impl Losses {
    /// No losses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends loss `name`.
    ///
    /// # Shapes
    /// `value`: any shape; its mean is the loss (a scalar `[]` in practice).
    pub fn push(&mut self, name: impl Into<String>, value: Tensor) {
        self.entries.push((name.into(), value));
    }

    /// The loss called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// `(name, loss)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of named losses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no loss.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names, comma-separated (for error messages).
    pub fn names(&self) -> String {
        self.entries.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Sum of all losses (mmdet `_parse_losses`).
    ///
    /// # Panics
    /// When there is no loss.
    pub fn total(&self) -> Tensor {
        let mut it = self.entries.iter().map(|(_, t)| t);
        let first = it.next().expect("a detector returns at least one loss").shallow_clone();
        it.fold(first, |acc, t| acc + t)
    }

    /// `(name, mean value)` pairs as plain numbers, for logging, read in ONE device-to-host copy
    /// (one synchronisation, not one per loss); an empty or undefined entry reads as NaN.
    pub fn values(&self) -> Vec<(String, f64)> {
        let v = read_means(self.entries.iter().map(|(_, t)| t));
        self.entries.iter().zip(v).map(|((n, _), v)| (n.clone(), v)).collect()
    }
}

impl FromIterator<(String, Tensor)> for Losses {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        Self { entries: iter.into_iter().collect() }
    }
}

/// The mean of each of `tensors` as f64, read in one device-to-host copy; NaN for an empty or
/// undefined tensor.
pub fn read_means<'a>(tensors: impl Iterator<Item = &'a Tensor>) -> Vec<f64> {
    let usable = |t: &Tensor| t.defined() && t.numel() > 0;
    let tensors: Vec<&Tensor> = tensors.collect();
    let parts: Vec<Tensor> = tensors
        .iter()
        .filter(|t| usable(t))
        .map(|t| t.detach().mean(None).to_kind(Kind::Double).reshape([1]))
        .collect();
    let mut host = if parts.is_empty() {
        Vec::new()
    } else {
        Vec::<f64>::try_from(crate::transfers::download(&Tensor::cat(&parts, 0)))
            .unwrap_or_default()
    }
    .into_iter();
    tensors
        .iter()
        .map(|t| if usable(t) { host.next().unwrap_or(f64::NAN) } else { f64::NAN })
        .collect()
}

/// The stages of a two-stage instance segmenter (Mask R-CNN, Cascade Mask R-CNN, HTC).
///
/// Every input image batch is normalised and padded `[B, 3, H, W]`; `image_sizes[b] = (h, w)` is
/// image b's unpadded size, to which boxes are clipped. Boxes per image are `[N_b, 4]` xyxy
/// float32 in input pixels; outputs over several images are concatenated in image order.
pub trait TwoStageDetector: std::fmt::Debug + Send {
    /// Which architecture this is.
    fn arch(&self) -> Arch;

    /// Foreground classes (background index = `num_classes`).
    fn num_classes(&self) -> i64;

    /// Whether training needs instance masks with pixels on every image that has ground truths
    /// (HTC builds its semantic target from their union); other detectors train on any data.
    fn needs_instance_masks(&self) -> bool {
        false
    }

    /// The device of the model's weights; inputs must be on it.
    fn device(&self) -> Device {
        self.rpn_head().device()
    }

    /// The dtype of the model's weights; input images must have it (under mixed precision the
    /// weights and the images stay float32 and autocast lowers the operations).
    fn weight_kind(&self) -> Kind {
        self.rpn_head().weight_kind()
    }

    /// Checks a normalised, padded image batch `[B, 3, H, W]` (`B, H, W > 0`) against the model
    /// before any tensor work: the weights' dtype, the weights' device. Every entry point of the
    /// detector runs it, and so do callers that drive the stages themselves (the ensemble).
    ///
    /// # Errors
    /// [`crate::Error::Shape`] / [`crate::Error::Input`] naming the shape, dtype and devices.
    fn check_input(&self, images: &Tensor) -> Result<()> {
        check_images(images, self.device(), self.weight_kind())
    }

    /// The RPN head (its anchors decode merged RPN outputs, as the seed's ensemble does with
    /// its first model's head).
    fn rpn_head(&self) -> &RpnHead;

    /// The detector's own test-time proposal settings (`test_cfg.rpn`).
    fn test_proposals(&self) -> &ProposalConfig;

    /// The detector's own test-time box settings (`test_cfg.rcnn`).
    fn rcnn_test(&self) -> &RcnnTestConfig;

    /// Features in inference mode (frozen BN statistics) of a batch checked by
    /// [`Self::check_input`].
    ///
    /// Every stage below returns libtorch's failures as [`crate::Error::OutOfMemory`] /
    /// [`crate::Error::Libtorch`] naming the stage and its input, as [`Self::predict`] does.
    ///
    /// # Errors
    /// [`Self::check_input`]'s; libtorch's.
    fn features(&self, images: &Tensor) -> Result<Features>;

    /// RPN logits and deltas of every FPN level.
    ///
    /// # Errors
    /// libtorch's, naming the features.
    fn rpn_outputs(&self, feats: &Features) -> Result<RpnOutputs> {
        guarded("rpn", &feats.first_level(), || Ok(self.rpn_head().forward(&feats.levels)))
    }

    /// Proposals of every image from (possibly merged) RPN outputs with `cfg` (which may carry a
    /// score threshold).
    ///
    /// # Errors
    /// libtorch's, naming the first level's logits.
    fn proposals(
        &self,
        out: &RpnOutputs,
        image_sizes: &[(i64, i64)],
        cfg: &ProposalConfig,
    ) -> Result<Vec<Proposals>> {
        let first = out.cls.first().map_or_else(Tensor::new, Tensor::shallow_clone);
        guarded("proposals", &first, || Ok(self.rpn_head().proposals(out, image_sizes, cfg)))
    }

    /// Class probabilities and decoded boxes of `boxes[b]` (a cascade runs its stage loop and
    /// averages the stages' logits).
    ///
    /// # Errors
    /// libtorch's, naming the features.
    fn box_scores(
        &self,
        feats: &Features,
        boxes: &[Tensor],
        image_sizes: &[(i64, i64)],
    ) -> Result<BoxScores>;

    /// Mask probabilities `[K, M, M]` of `boxes[b]` for the classes `labels[b]` `[N_b]` (a
    /// cascade / HTC averages its stages' sigmoids).
    ///
    /// # Errors
    /// libtorch's, naming the features.
    fn mask_probs(&self, feats: &Features, boxes: &[Tensor], labels: &[Tensor]) -> Result<Tensor>;

    /// Training losses of a batch with one [`Instances`] per image (its `image_size` is the
    /// unpadded size).
    ///
    /// # Errors
    /// When the batch and the targets disagree.
    fn losses(&self, images: &Tensor, targets: &[Instances]) -> Result<Losses>;

    /// Test-time detections of every image with the detector's own settings (mmdet
    /// `simple_test` before the masks): proposals → [`Self::box_scores`] → [`multiclass_nms`].
    ///
    /// # Errors
    /// libtorch's, naming the stage and the features.
    fn detect(&self, feats: &Features, image_sizes: &[(i64, i64)]) -> Result<Vec<RawDetections>> {
        let _g = tch::no_grad_guard();
        let out = self.rpn_outputs(feats)?;
        let props = self.proposals(&out, image_sizes, self.test_proposals())?;
        let boxes: Vec<Tensor> = props.into_iter().map(|p| p.boxes).collect();
        let s = self.box_scores(feats, &boxes, image_sizes)?;
        let c = self.num_classes();
        guarded("detection NMS", &s.scores, || {
            let mut start = 0;
            Ok(boxes
                .iter()
                .map(|b| {
                    let n = b.size()[0];
                    let scores = s.scores.narrow(0, start, n).narrow(1, 0, c);
                    let dets =
                        multiclass_nms(&s.boxes.narrow(0, start, n), &scores, self.rcnn_test());
                    start += n;
                    dets
                })
                .collect())
        })
    }

    /// Detections with soft masks (`floor(prob · 255)` bytes pasted into the box window) of
    /// normalised, padded `images`; `sizes[b]` is image b's unpadded size. Binarisation is
    /// cellseg-postproc's (`mask_threshold`, seed 0.45).
    ///
    /// # Errors
    /// [`crate::Error::Shape`] / [`crate::Error::Input`] for a batch that is not `[B, 3, H, W]`
    /// floating point on the model's device, [`crate::Error::Mismatch`] when `sizes` and the
    /// batch differ, [`crate::Error::OutOfMemory`] / [`crate::Error::Libtorch`] naming the
    /// batch when libtorch fails.
    fn predict(&self, images: &Tensor, sizes: &[ImageSize]) -> Result<Vec<SoftDetections>> {
        let _g = tch::no_grad_guard();
        self.check_input(images)?;
        let hw: Vec<(i64, i64)> = sizes.iter().map(|s| (s.height as i64, s.width as i64)).collect();
        check_sizes(images, &hw, "images vs sizes")?;
        guarded("predict", images, || {
            let feats = self.features(images)?;
            let dets = self.detect(&feats, &hw)?;
            let boxes: Vec<Tensor> = dets.iter().map(|d| d.boxes.shallow_clone()).collect();
            let labels: Vec<Tensor> = dets.iter().map(|d| d.labels.shallow_clone()).collect();
            let probs = self.mask_probs(&feats, &boxes, &labels)?;
            let mut start = 0;
            dets.iter()
                .zip(sizes)
                .map(|(d, &size)| {
                    let k = d.boxes.size()[0];
                    let p = probs.narrow(0, start, k).to_kind(Kind::Float);
                    start += k;
                    let pasted = paste_soft(&p, &d.boxes, size);
                    to_soft_detections(d, pasted, size)
                })
                .collect()
        })
    }
}
