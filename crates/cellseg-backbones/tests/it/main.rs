//! Integration tests of cellseg-backbones (one binary: every test binary links libtorch).

mod configs;
mod export;
mod keys;
mod parity;
mod pth;

pub use cellseg_core::testing::repo_root as repo;

/// Runs `tools/backbones_fixtures.py` with `args` under the project's `.venv`.
///
/// # Panics
/// If `.venv` is missing (run `make test`) or the script fails.
pub fn run_fixture_script(args: &[&str]) {
    cellseg_core::testing::run_tool("backbones_fixtures.py", args);
}
