//! Integration tests of cellseg-backbones (one binary: every test binary links libtorch).

mod configs;
mod export;
mod keys;
mod parity;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `tools/backbones_fixtures.py` with `args` under the project's `.venv`.
///
/// # Panics
/// If `.venv` is missing (run `make test`) or the script fails.
pub fn run_fixture_script(args: &[&str]) {
    let script = repo().join("tools/backbones_fixtures.py");
    let mut all = vec![script.to_str().unwrap()];
    all.extend_from_slice(args);
    run_python(&all);
}

/// Runs the project's `.venv` Python with `args`.
///
/// # Panics
/// If `.venv` is missing (run `make test`) or the command fails.
pub fn run_python(args: &[&str]) {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (tools/setup_venv.sh) to create the virtualenv",
        python.display()
    );
    let out = Command::new(&python)
        .args(args)
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
