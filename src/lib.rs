//! cellseg: two-stage instance segmentation of cells (Mask R-CNN, Cascade Mask R-CNN, HTC) in Rust
//! on libtorch.
//!
//! This facade re-exports every crate of the workspace under a short name. Users who need one piece
//! (the metric, RLE, mask NMS) depend on that crate alone; the crates below the tch line never build
//! libtorch.
//!
//! | module | crate | libtorch |
//! |---|---|---|
//! | [`core`] | `cellseg-core`: boxes, masks, instances, detections, cell types | no |
//! | [`rle`] | `cellseg-rle`: Kaggle / DSB / COCO run-length encodings | no |
//! | [`metrics`] | `cellseg-metrics`: competition metric, COCO AP | no |
//! | [`postproc`] | `cellseg-postproc`: NMS, overlap removal, writers | no |
//! | [`data`] | `cellseg-data`: readers, folds, augmentation, loader, synthetic cells | no |
//! | [`backbones`] | `cellseg-backbones`: ResNet / ResNeXt / EfficientNet, FPN | yes |
//! | [`heads`] | `cellseg-heads`: RPN, RoI heads, detectors | yes |
//! | [`ensemble`] | `cellseg-ensemble`: multi-model × TTA merging | yes |
//! | [`train`] | `cellseg-train`: training engine | yes |
//! | [`cross_validation`] | this crate: experiments → one OOF over every training image, the CV | yes |
//! | [`experiment`] | this crate: k-fold experiment folders (`folds.csv` + one run per fold) | yes |
//! | [`inference`] | this crate: run folders + images → ensemble → submission, COCO, OOF | yes |
//!
//! # Example
//! ```no_run
//! let report = cellseg::libtorch_report();
//! println!("{report}");
//! ```
#![deny(missing_docs)]

pub use cellseg_backbones as backbones;
pub use cellseg_core as core;
pub use cellseg_data as data;
pub use cellseg_dist as dist;
pub use cellseg_ensemble as ensemble;
pub use cellseg_heads as heads;
pub use cellseg_metrics as metrics;
pub use cellseg_postproc as postproc;
pub use cellseg_rle as rle;
pub use cellseg_train as train;

pub mod cross_validation;
pub mod experiment;
pub mod inference;

/// One line describing the libtorch this binary runs on: version, threads, CUDA devices.
pub fn libtorch_report() -> String {
    let cuda = if tch::Cuda::is_available() {
        format!(
            "CUDA available, {} device(s), cuDNN {}",
            tch::Cuda::device_count(),
            tch::Cuda::cudnn_is_available()
        )
    } else {
        "CUDA not available (CPU only)".to_string()
    };
    format!("libtorch {}, {} CPU threads, {cuda}", tch_version(), tch::get_num_threads())
}

/// The libtorch version tch was built for.
fn tch_version() -> &'static str {
    "2.11.0"
}

/// The text a binary prints for an error: its message, then each cause on a line of its own,
/// leaving out a cause whose text the line before already contains. The workspace's errors put
/// their I/O or parse cause in their own message (`cannot read a.csv: No such file or directory`)
/// and also return it as their `source`, so a plain report of the chain (anyhow's) would print
/// that cause twice.
///
/// ```
/// let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
/// let err = anyhow::Error::new(cellseg::core::Error::ConfigIo { path: "a.toml".into(), source: io })
///     .context("loading the config");
/// assert_eq!(
///     cellseg::error_report(err.as_ref()),
///     "loading the config\n  caused by: cannot read config a.toml: No such file"
/// );
/// ```
pub use cellseg_core::exit::{error_report, exit_code};

/// The best device here: the first CUDA GPU when there is one, else the CPU.
pub fn best_device() -> tch::Device {
    tch::Device::cuda_if_available()
}
