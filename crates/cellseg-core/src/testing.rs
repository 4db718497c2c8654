//! Test support shared by every crate's parity tests (feature `testing`): where the repository, the
//! real data and the project's Python are, and running a committed `tools/` script.
//!
//! Parity tests compare our numbers with independent references (pycocotools, torchvision, opencv,
//! …) computed at test time by the Python of `.venv`, which `make test` creates.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// The repository root (this crate lives in `<root>/crates/cellseg-core`).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    here.canonicalize().unwrap_or(here)
}

/// `<root>/../shared/realdata`, or `None` after printing why the caller skips, when it is absent
/// (the real data is on developer and CI machines, not in a user's fresh clone).
pub fn realdata() -> Option<PathBuf> {
    let dir = repo_root().join("../shared/realdata");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: {} is absent (real data is for developers and CI only)", dir.display());
        None
    }
}

/// `<root>/.venv/bin/python`.
///
/// # Panics
/// When `.venv` is missing, with a message saying to run `make test`.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (tools/setup_venv.sh creates .venv with torch, \
         torchvision, pycocotools, opencv, scipy, scikit-learn, timm)",
        python.display()
    );
    python
}

/// Runs `tools/<script> args…` with the Python of `.venv` and returns its standard output.
///
/// # Panics
/// When `.venv` is missing or the script fails (its stdout and stderr are in the message).
pub fn run_tool<S: AsRef<OsStr>>(script: &str, args: &[S]) -> String {
    let out = Command::new(venv_python())
        .arg(repo_root().join("tools").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tools/{script}: {e}"));
    assert!(
        out.status.success(),
        "tools/{script} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
