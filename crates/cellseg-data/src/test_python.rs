//! Runs the committed Python reference scripts of `tools/` from the project's `.venv` (tests only).

pub(crate) use cellseg_core::testing::{realdata, repo_root, run_tool};

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
