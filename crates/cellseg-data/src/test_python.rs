//! Runs the committed Python reference scripts of `tools/` from the project's `.venv` (tests only).

use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `<repo>/../shared/realdata`, or `None` (with a printed skip reason) when absent.
pub(crate) fn realdata() -> Option<PathBuf> {
    let p = repo_root().join("../shared/realdata");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipped: {} is absent (real data is for developers and CI only)", p.display());
        None
    }
}

/// Runs `tools/<script> args…` with `.venv/bin/python`; panics with stderr when it fails.
pub(crate) fn run_tool(script: &str, args: &[&str]) {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (it creates .venv with numpy, scikit-learn, pycocotools)",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tools").join(script))
        .args(args)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "tools/{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `[area, Σ i, Σ i²]` over the set pixels, `i = row · W + col` (the moments of
/// `tools/data_reference.py`).
pub(crate) fn moments(m: &cellseg_core::CroppedMask) -> [u64; 3] {
    let w = m.image_size().width as u64;
    let (top, left, h, mw) = m.rect();
    let d = m.as_slice();
    let mut out = [0u64; 3];
    for r in 0..h {
        for c in 0..mw {
            if d[r * mw + c] != 0 {
                let i = (top + r) as u64 * w + (left + c) as u64;
                out[0] += 1;
                out[1] = out[1].wrapping_add(i);
                out[2] = out[2].wrapping_add(i.wrapping_mul(i));
            }
        }
    }
    out
}

/// Runs `tools/data_reference.py <kind> <src> <tmp> extra…` and returns its JSON.
pub(crate) fn reference(kind: &str, src: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("ref.json");
    let mut args = vec![kind, src.to_str().expect("utf-8 path"), out.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    run_tool("data_reference.py", &args);
    serde_json::from_str(&std::fs::read_to_string(&out).expect("reference output")).expect("json")
}

/// Compares per-instance moments with the reference list of one image.
pub(crate) fn assert_masks_match(
    what: &str,
    masks: &[cellseg_core::CroppedMask],
    want: &serde_json::Value,
) {
    let want = want.as_array().unwrap_or_else(|| panic!("{what}: no reference"));
    assert_eq!(masks.len(), want.len(), "{what}: instance count");
    for (k, (m, w)) in masks.iter().zip(want).enumerate() {
        let w: Vec<u64> =
            w.as_array().expect("triple").iter().map(|v| v.as_u64().expect("u64")).collect();
        assert_eq!(moments(m).to_vec(), w, "{what}: instance {k}");
    }
}
