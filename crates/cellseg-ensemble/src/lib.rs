//! Multi-model, flip-TTA merging of proposals, boxes and masks: the seed's `EnsembleModel`
//! (SEED.md §4.2), over any mix of Mask R-CNN, Cascade Mask R-CNN and HTC members driven only
//! through [`cellseg_heads::TwoStageDetector`].
//!
//! Per image: every member computes its features of every [`View`] (identity, horizontal,
//! vertical, diagonal flips); then the three merge points, one module each —
//! - [`proposals`]: the members' raw RPN logits and deltas on the identity view averaged per
//!   level, the RPN cell-type heuristic, one decoding with that cell type's settings;
//! - [`boxes`]: every member × view on the shared proposals, mapped back, boxes and class
//!   probabilities averaged, class-agnostic NMS and a score threshold per cell type;
//! - [`masks`]: every member × view on the final boxes, `28 × 28` probabilities flipped back and
//!   averaged, pasted once into the box windows as soft `u8` masks.
//!
//! With `usage` (SEED.md §4.4), classifier members first vote the image's cell type, which picks
//! the members and box settings of that type. [`EnsembleConfig`] holds the seed's values
//! (`configs/ensemble.toml`); binarisation and the rest of the post-processing are
//! cellseg-postproc's.
//!
//! # Example
//! ```
//! use cellseg_core::ImageSize;
//! use cellseg_ensemble::{Ensemble, EnsembleConfig, Member};
//! use cellseg_heads::detectors::{Arch, DetectorConfig, Trunk};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! let mut cfg = DetectorConfig { arch: Arch::MaskRcnn, trunk: Trunk::Tiny, ..Default::default() };
//! cfg.neck.out_channels = 16;
//! cfg.heads.num_classes = 3;
//! cfg.heads.rpn.feat_channels = 16;
//! cfg.heads.bbox_head.fc_channels = 32;
//! cfg.heads.mask_head.conv_channels = 16;
//! let (a, b) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
//! let (ma, mb) = (cfg.build(&a.root())?, cfg.to_arch(Arch::Cascade)?.build(&b.root())?);
//! let members = vec![
//!     Member { name: "mask_rcnn", model: ma.as_ref() },
//!     Member { name: "cascade", model: mb.as_ref() },
//! ];
//! // The seed's ENS settings, with no proposal score threshold for these untrained models.
//! let mut config = EnsembleConfig::default();
//! config.proposals.score_thr = [-1.0; 3];
//! let ensemble = Ensemble::new(members, config)?;
//! let image = Tensor::randn([1, 3, 64, 64], (Kind::Float, Device::Cpu));
//! let pred = ensemble.predict(&image, ImageSize::new(60, 64))?;
//! assert_eq!(pred.soft.boxes.len(), pred.soft.masks.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod boxes;
pub mod config;
mod ensemble;
pub mod error;
pub mod masks;
pub mod proposals;
pub mod views;

pub use config::{BoxNms, BoxSettings, EnsembleConfig, ProposalSettings, Usage};
pub use ensemble::{Ensemble, Member, Prediction};
pub use error::{Error, Result};
pub use proposals::{CellTypeGuess, CellTypeHeuristic};
pub use views::View;
