//! Trains a Hybrid Task Cascade (HTC) and reports the competition metric before and after
//! training.
//!
//! The same run as `train_maskrcnn` (`cellseg_cli::train`: the same embedded synthetic default
//! of `configs/demo.toml`, `--data` / `--csv` / `--images`, `--pretrained`, `--resume`), with the
//! Mask R-CNN `[model]` of a config converted to the seed's HTC (`DetectorConfig::to_arch`: the
//! cascade stages plus the fused semantic head on the stride-4 level, interleaved training, mask
//! information flow, RPN `allowed_border = 0`) in the run folder `<run_dir>_htc`; a config whose
//! `[model]` already says `arch = "htc"` is used as it is. Training images need instance masks
//! (the semantic target is their union).
//!
//! ```text
//! cargo run --release --example train_htc
//! cargo run --release --example train_htc -- --config configs/train_maskrcnn.toml \
//!     --config configs/train_htc.toml --data <folder with train.csv and train/>
//! ```

use cellseg::train::detector::Arch;

fn main() -> std::process::ExitCode {
    cellseg::exit_code(cellseg_cli::train::run(Arch::Htc))
}
