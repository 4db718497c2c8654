//! Locating the real data and running a tools/ script with the Python of `.venv`: the shared support
//! of `cellseg_core::testing`, plus JSON reading.

use std::path::Path;

pub use cellseg_core::testing::realdata;

/// Runs `tools/<script> args…` with the venv's Python; panics with its output on failure.
pub fn run_tool(script: &str, args: &[&Path]) {
    cellseg_core::testing::run_tool(script, args);
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
