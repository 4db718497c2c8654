//! LIVECell pretraining (SEED.md §3.6): a Mask R-CNN (or with `--arch cascade | htc` a Cascade
//! Mask R-CNN or an HTC) with the 8 LIVECell classes (one per cell line, the seed's
//! `LIVECELL_CLASSES` order) trained on COCO-json + TIFF data, validated with the competition
//! metric overall and per cell line; its final checkpoint is what `train_maskrcnn` (or
//! `train_cascade` / `train_htc`) finetunes from (the class heads `fc_cls`, `fc_reg`,
//! `conv_logits` of every stage are then re-initialised, `cellseg_train::pretrained`).
//!
//! With no data path it runs on the embedded default: synthetic cells (cellseg-data `synthetic`)
//! whose Sartorius types are written as LIVECell cell lines the way `synthetic::generate_livecell`
//! does (shsy5y → SHSY5Y = 7, astro → A172 = 1, cort → Huh7 = 2).
//!
//! ```text
//! cargo run --release --example pretrain_livecell                     # synthetic, a few minutes
//! cargo run --release --example pretrain_livecell -- --arch cascade    # the same, Cascade
//! # the seed's recipe (R50 stride 1; GPU) on LIVECell
//! cargo run --release --example pretrain_livecell -- --config configs/pretrain_livecell.toml \
//!     --train-json <livecell>/annotations/LIVECell/livecell_coco_train.json \
//!     --val-json <livecell>/annotations/LIVECell/livecell_coco_val.json --images <livecell>/images
//! ```
//! `--config` may be repeated: later files override the keys they set. The default is
//! `configs/pretrain_livecell.toml` (the seed's recipe) + `configs/pretrain_livecell_tiny.toml`
//! (CPU sizes); `configs/pretrain_livecell_subset.toml` layers on both for the 16-image real
//! subset. `--images` is the folder holding `livecell_train_val_images/` and `livecell_test_images/`
//! (default: `images/` next to the training json); each json's images are looked up in the
//! folder its name selects (`test` in the name → `livecell_test_images`).

fn main() -> std::process::ExitCode {
    cellseg::exit_code(cellseg_cli::pretrain::run_from(None))
}
