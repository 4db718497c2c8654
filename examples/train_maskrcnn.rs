//! Trains a Mask R-CNN and reports the competition metric before and after training.
//!
//! With no `--data`, it trains on synthetic cells of the three types (cellseg-data `synthetic`)
//! plus the real DSB2018 nuclei of `tests/data` (labelled as class 0), and evaluates on held-out
//! synthetic images and, separately, held-out DSB images; with `--data <dir>` it reads the Sartorius layout
//! (`train.csv`, `train/`; or any CSV + image folder with `--csv` / `--images`) and holds out one
//! fold of the seed's GroupKFold on plate_well (`[data]` in the config). With `--all-folds` (or
//! `--fold K`) the run folder is an experiment: `folds.csv` records the split once (checked on
//! every later run) and each fold trains in `fold<K>/`; run again, finished folds are skipped and
//! an interrupted one resumes. `cross_validate` then predicts every image with its fold's model.
//!
//! ```text
//! cargo run --release --example train_maskrcnn -- --config configs/train_maskrcnn.toml \
//!     --data <folder with train.csv and train/> --run-dir runs/maskrcnn_r50 --all-folds
//! cargo run --release --example train_maskrcnn -- --config configs/demo.toml
//! cargo run --release --example train_maskrcnn -- --config configs/train_maskrcnn.toml \
//!     --csv ../shared/realdata/sartorius/train_subset.csv \
//!     --images ../shared/realdata/sartorius/train_images
//! ```
//!
//! `train_cascade` and `train_htc` are the same run for the other two architectures
//! (`cellseg_cli::train`).

use cellseg::train::detector::Arch;

fn main() -> std::process::ExitCode {
    cellseg::exit_code(cellseg_cli::train::run(Arch::MaskRcnn))
}
