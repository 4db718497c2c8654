//! Locating the repository, the real data and the Python of `.venv`, and running a tools/ script.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// `<repo>/../shared/realdata`, or `None` (with the skip reason printed) when absent.
pub fn realdata() -> Option<PathBuf> {
    let p = repo().join("../shared/realdata");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} is absent (real data is only on developer and CI machines)",
            p.display()
        );
        None
    }
}

pub fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run `make test` (it creates .venv with pycocotools)",
        py.display()
    );
    py
}

/// Runs `tools/<script> args…` with the venv's Python; panics with its stderr on failure.
pub fn run_tool(script: &str, args: &[&Path]) {
    let out = Command::new(python())
        .arg(repo().join("tools").join(script))
        .args(args)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "tools/{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[allow(dead_code)]
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
