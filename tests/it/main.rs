//! Integration tests of the `cellseg` package (its examples' set-up and the whole inference
//! path), in one binary (each test binary links libtorch).
//!
//! Every test that seeds libtorch's process-wide generator or runs a model holds
//! [`cellseg::core::testing::torch_lock`].

// The training examples' run (crate cellseg-cli), by the names the tests use.
use cellseg_cli as support;
use cellseg_cli::train::{self as run, setup};

mod experiments;
mod infer_ensemble;
mod pretrain_livecell;
mod tch_smoke;
mod train_maskrcnn;

/// Copies the folder `from` to `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let q = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &q) } else { std::fs::copy(&p, &q).map(|_| ()).unwrap() }
    }
}

/// `tools/backbones_fixtures.py pth-formats dir`: torch.save files of several kinds (see there).
fn support_pth_formats(dir: &std::path::Path) {
    cellseg::core::testing::run_tool(
        "backbones_fixtures.py",
        &["pth-formats", dir.to_str().unwrap()],
    );
}
