//! Trains a Cascade Mask R-CNN and reports the competition metric before and after training.
//!
//! The same run as `train_maskrcnn` (`cellseg_cli::train`: the same embedded synthetic default
//! of `configs/demo.toml`, `--data` / `--csv` / `--images`, `--pretrained`, `--resume`), with the
//! Mask R-CNN `[model]` of a config converted to the seed's cascade (`DetectorConfig::to_arch`:
//! three class-agnostic SmoothL1 stages at IoU 0.5 / 0.6 / 0.7, loss weights 1 / 0.5 / 0.25) in
//! the run folder `<run_dir>_cascade`; a config whose `[model]` already says `arch = "cascade"`
//! is used as it is.
//!
//! ```text
//! cargo run --release --example train_cascade
//! cargo run --release --example train_cascade -- --config configs/train_maskrcnn.toml \
//!     --config configs/train_cascade.toml --data <folder with train.csv and train/> \
//!     --pretrained runs/pretrain_livecell_cascade
//! ```

use cellseg::train::detector::Arch;

fn main() -> std::process::ExitCode {
    cellseg::exit_code(cellseg_cli::train::run(Arch::Cascade))
}
