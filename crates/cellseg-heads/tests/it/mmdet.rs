//! What the mmdet 2.17 parity tests share: the fixtures of `tools/mmdet_fixtures.py`, the table
//! of compared quantities, and the comparisons (one-to-one boxes with tie-canonical order, pasted
//! uint8 masks).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cellseg_core::{BitMask, BoxXyxy, ImageSize, Instances};
use cellseg_heads::ops::paste::paste_soft;
use cellseg_heads::{Features, TwoStageDetector};
use tch::{Device, Kind, Tensor};

/// The sampler size of the fixture (every candidate is sampled, in index order).
pub const HUGE: usize = 10_000_000;

/// One compared quantity.
pub struct Row {
    name: String,
    abs: f64,
    rel: f64,
    tol: String,
    ok: bool,
}

/// Rows of one run, printed as a table; [`Table::finish`] fails on any row over tolerance.
#[derive(Default)]
pub struct Table(Vec<Row>);

impl Table {
    pub fn push(&mut self, name: &str, abs: f64, rel: f64, tol: String, ok: bool) {
        println!("{name:<44} abs {abs:>10.3e}  rel {rel:>10.3e}  tol {tol:<18} {}", ok_str(ok));
        self.0.push(Row { name: name.into(), abs, rel, tol, ok });
    }

    /// `got` vs `want` (same shape): passes when max |got - want| <= `abs_tol` or
    /// <= `rel_tol` * max |want|.
    pub fn close(&mut self, name: &str, got: &Tensor, want: &Tensor, abs_tol: f64, rel_tol: f64) {
        let (abs, rel) = diff(got, want);
        let ok = abs <= abs_tol || rel <= rel_tol;
        self.push(name, abs, rel, format!("{abs_tol:.0e} / rel {rel_tol:.0e}"), ok);
    }

    /// An exact count (`got == want`), e.g. a number of boxes or of mismatching entries.
    pub fn count(&mut self, name: &str, got: i64, want: i64) {
        let d = (got - want).abs() as f64;
        self.push(
            &format!("{name} ({got} vs {want})"),
            d,
            d / (want.max(1) as f64),
            "exact".into(),
            got == want,
        );
    }

    pub fn finish(self, what: &str) {
        let bad: Vec<String> = self
            .0
            .iter()
            .filter(|r| !r.ok)
            .map(|r| format!("{} (abs {:.3e}, rel {:.3e}, tol {})", r.name, r.abs, r.rel, r.tol))
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: {} quantities differ from mmdet:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }
}

pub fn ok_str(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAIL" }
}

/// (max |a - b|, that / max |b|). Shapes must agree.
pub fn diff(a: &Tensor, b: &Tensor) -> (f64, f64) {
    assert_eq!(a.size(), b.size(), "shapes differ");
    if a.numel() == 0 {
        return (0.0, 0.0);
    }
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let abs = f64::try_from((&a - &b).abs().max()).unwrap();
    let scale = f64::try_from(b.abs().max()).unwrap();
    (abs, if scale > 0.0 { abs / scale } else { abs })
}

/// Number of entries where the int / bool tensors differ.
pub fn mismatches(a: &Tensor, b: &Tensor) -> i64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    a.to_kind(Kind::Int64).ne_tensor(&b.to_kind(Kind::Int64)).sum(Kind::Int64).int64_value(&[])
}

/// Sets libtorch's intra-op thread count to one per core, libtorch's default, with which every
/// parity tolerance was measured. Each parity test calls it after taking
/// [`torch_lock`](cellseg_core::testing::torch_lock): other tests of the binary set one thread
/// (for bit-exact runs), and a convolution summed in another order moves proposal scores enough
/// to reorder near-ties.
pub fn default_threads() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    tch::set_num_threads(i32::try_from(cores).unwrap_or(i32::MAX));
}

/// Where the output of `tool` with `args` (`{out}` standing for the folder) is kept:
/// `target/tmp/python-fixtures/<name>-<hash>`, the hash of every `tools/*.py` (the fixture
/// scripts and what they import), of `tool` and `args`, and of the names (with versions) of the
/// packages installed in `.venv`. The Python side takes 15-60 s a fixture; a second local run of
/// the parity tests reuses them, and a changed script or package regenerates them. A fresh clone
/// (CI) generates each once.
pub fn cache_dir(name: &str, tool: &str, args: &[&str]) -> PathBuf {
    let root = cellseg_core::testing::repo_root();
    let mut hash = Fnv::default();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(root.join("tools"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    scripts.sort();
    for script in &scripts {
        hash.write(script.file_name().unwrap().as_encoded_bytes());
        hash.write(&std::fs::read(script).unwrap());
    }
    hash.write(tool.as_bytes());
    for arg in args {
        hash.write(arg.as_bytes());
    }
    for package in venv_packages(&root.join(".venv/lib")) {
        hash.write(package.as_bytes());
    }
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("python-fixtures")
        .join(format!("{name}-{:016x}", hash.0))
}

/// The `*.dist-info` folder names (package and version) of every `site-packages` under `lib`,
/// sorted.
fn venv_packages(lib: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for python in std::fs::read_dir(lib).into_iter().flatten().flatten() {
        let site = python.path().join("site-packages");
        for entry in std::fs::read_dir(site).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".dist-info") {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

/// Runs `tools/<tool> <args>` into a temporary folder beside `dir` and renames it to `dir` when
/// the tool succeeded, so that an interrupted run never leaves a half-written fixture behind.
fn generate(tool: &str, args: &[&str], dir: &Path) {
    let parent = dir.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let tmp = tempfile::Builder::new().prefix(".partial-").tempdir_in(parent).unwrap();
    let out = tmp.path().to_str().unwrap();
    let args: Vec<&str> = args.iter().map(|a| if *a == "{out}" { out } else { a }).collect();
    let t0 = std::time::Instant::now();
    let log = cellseg_core::testing::run_tool(tool, &args);
    println!("{tool} {}: {:.1} s\n{log}", args.join(" "), t0.elapsed().as_secs_f64());
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, dir).is_err() {
        // Made meanwhile by another test process with the same key: keep that one.
        assert!(
            dir.join("stages.safetensors").exists(),
            "cannot move {} to {}",
            tmp.display(),
            dir.display()
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

/// 64-bit FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        // A length prefix keeps ("ab", "c") and ("a", "bc") apart.
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

pub struct Fixture {
    pub t: HashMap<String, Tensor>,
    /// Unpadded (h, w).
    pub hw: (i64, i64),
    /// The fixture's folder in the cache ([`cache_dir`]); read only.
    dir: PathBuf,
    /// A folder of this test's own, for what it writes.
    scratch: tempfile::TempDir,
}

impl Fixture {
    /// Runs `mmdet_fixtures.py <model> <out> --size <size>` and reads its tensors.
    pub fn run(model: &str, size: &str) -> Self {
        Self::run_with(model, size, &[])
    }

    /// [`Self::run`] with `extra` arguments.
    pub fn run_with(model: &str, size: &str, extra: &[&str]) -> Self {
        let mut args = vec![model, "{out}", "--size", size];
        args.extend_from_slice(extra);
        Self::run_tool("mmdet_fixtures.py", &format!("{model}_{size}"), &args)
    }

    /// Runs `tools/<tool> <args>` (`{out}` in `args` stands for the output folder) and reads
    /// the `stages.safetensors` it writes. The output is kept in [`cache_dir`]: a second run
    /// with the same scripts, arguments and `.venv` packages reuses it, and a change to any of
    /// them makes a new one.
    pub fn run_tool(tool: &str, name: &str, args: &[&str]) -> Self {
        let dir = cache_dir(name, tool, args);
        if dir.join("stages.safetensors").exists() {
            println!("reusing the fixture in {}", dir.display());
        } else {
            generate(tool, args, &dir);
        }
        let t: HashMap<String, Tensor> =
            Tensor::read_safetensors(dir.join("stages.safetensors")).unwrap().into_iter().collect();
        let hw = Vec::<i64>::try_from(&t["img_hw"]).unwrap();
        Self { hw: (hw[0], hw[1]), t, dir, scratch: tempfile::tempdir().unwrap() }
    }

    /// A file of the fixture.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A path in the test's own folder (deleted with the fixture), for files the test writes.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    pub fn get(&self, k: &str) -> &Tensor {
        self.t.get(k).unwrap_or_else(|| panic!("fixture has no tensor {k}"))
    }

    pub fn levels(&self, prefix: &str) -> Vec<Tensor> {
        (0..5).map(|i| self.get(&format!("{prefix}_{i}")).shallow_clone()).collect()
    }

    pub fn size(&self) -> ImageSize {
        ImageSize::new(self.hw.0 as usize, self.hw.1 as usize)
    }

    /// The GT cells as [`Instances`] (boxes as given, masks from the bitmaps).
    pub fn targets(&self) -> Instances {
        let size = self.size();
        let b = Vec::<f32>::try_from(self.get("gt_boxes").reshape([-1])).unwrap();
        let boxes: Vec<BoxXyxy> =
            b.chunks(4).map(|c| BoxXyxy::new(c[0], c[1], c[2], c[3])).collect();
        let labels: Vec<usize> = Vec::<i64>::try_from(self.get("gt_labels"))
            .unwrap()
            .into_iter()
            .map(|l| l as usize)
            .collect();
        let m = self.get("gt_masks");
        let masks = (0..m.size()[0])
            .map(|i| {
                let data = Vec::<u8>::try_from(m.get(i).reshape([-1])).unwrap();
                BitMask::from_vec(size, data).unwrap().to_cropped()
            })
            .collect();
        Instances::new(size, boxes, labels, masks).unwrap()
    }
}

/// The permutation that orders rows by score (descending) and, among exactly equal scores, by
/// box (x1, y1, x2, y2 ascending). mmdet orders equal scores by whatever its unstable
/// `sort(descending=True)` does (and torchvision's NMS keeps that order), we by `topk`: neither
/// is specified, so equal-score rows are compared in this canonical order.
pub fn canonical(boxes: &Tensor, scores: &Tensor) -> Tensor {
    let mut perm = Tensor::arange(boxes.size()[0], (Kind::Int64, Device::Cpu));
    for col in (0..4).rev() {
        let key = boxes.select(1, col).index_select(0, &perm);
        perm = perm.index_select(0, &key.sort_stable(true, 0, false).1);
    }
    let key = scores.index_select(0, &perm);
    perm.index_select(0, &key.sort_stable(true, 0, true).1)
}

/// Boxes [N,4] and scores [N] one-to-one in order (equal-score rows in [`canonical`] order):
/// count, max box and score differences, and how many rows only a tie permutation moved.
#[allow(clippy::too_many_arguments)]
pub fn one_to_one(
    tab: &mut Table,
    name: &str,
    boxes: &Tensor,
    scores: &Tensor,
    want_boxes: &Tensor,
    want_scores: &Tensor,
    box_tol: f64,
    score_tol: f64,
) {
    let (n, m) = (boxes.size()[0], want_boxes.size()[0]);
    tab.count(&format!("{name}: count"), n, m);
    let k = n.min(m);
    let (b, s) = (boxes.narrow(0, 0, k), scores.narrow(0, 0, k));
    let (wb, ws) = (want_boxes.narrow(0, 0, k), want_scores.narrow(0, 0, k));
    tab.close(&format!("{name}: scores in order"), &s, &ws, score_tol, 0.0);
    let moved = (&b - &wb).abs().amax(1, false).gt(box_tol).sum(Kind::Int64).int64_value(&[]);
    let (c, wc) = (canonical(&b, &s), canonical(&wb, &ws));
    let (b, wb) = (b.index_select(0, &c), wb.index_select(0, &wc));
    tab.close(&format!("{name}: boxes (ties canonical)"), &b, &wb, box_tol, 0.0);
    let far = (b - wb).abs().amax(1, false).gt(box_tol).nonzero();
    if far.size()[0] > 0 {
        println!(
            "    {name}: first differing row (canonical order): {}",
            far.get(0).int64_value(&[0])
        );
    }
    println!(
        "    {name}: {moved} rows in another order among equal scores (tie order, not asserted)"
    );
}

/// mmdet's pasted uint8 masks (rects + bytes) as one full `[h * w]` buffer per detection.
pub fn mmdet_pasted(fx: &Fixture, key: &str) -> Vec<Vec<u8>> {
    let (h, w) = (fx.hw.0 as usize, fx.hw.1 as usize);
    let rects = Vec::<i64>::try_from(fx.get(&format!("{key}_rects")).reshape([-1])).unwrap();
    let vals = Vec::<u8>::try_from(fx.get(&format!("{key}_values"))).unwrap();
    let mut at = 0;
    rects
        .chunks(4)
        .map(|r| {
            let (t, l, rh, rw) = (r[0] as usize, r[1] as usize, r[2] as usize, r[3] as usize);
            let mut full = vec![0u8; h * w];
            for y in 0..rh {
                full[(t + y) * w + l..(t + y) * w + l + rw].copy_from_slice(&vals[at..at + rw]);
                at += rw;
            }
            full
        })
        .collect()
}

/// Our pasted soft masks as `(prob * 255) as u8` (mmdet's `.to(uint8)` truncation), full image.
pub fn our_pasted(probs: &Tensor, boxes: &Tensor, size: ImageSize) -> Vec<Vec<u8>> {
    paste_soft(probs, boxes, size)
        .into_iter()
        .map(|((t, l, rh, rw), v)| {
            let mut full = vec![0u8; size.pixels()];
            for y in 0..rh {
                for x in 0..rw {
                    full[(t + y) * size.width + l + x] = (v[y * rw + x] * 255.0) as u8;
                }
            }
            full
        })
        .collect()
}

/// Pasted uint8 masks: (pixels differing, max abs difference in uint8 steps).
pub fn paste_diff(ours: &[Vec<u8>], theirs: &[Vec<u8>]) -> (i64, i64) {
    assert_eq!(ours.len(), theirs.len());
    let mut n = 0;
    let mut m = 0;
    for (a, b) in ours.iter().zip(theirs) {
        for (&x, &y) in a.iter().zip(b) {
            let d = (i64::from(x) - i64::from(y)).abs();
            n += i64::from(d > 0);
            m = m.max(d);
        }
    }
    (n, m)
}

/// The whole chain from the image through the detector interface on our own `feats`: proposals
/// and detections one-to-one with mmdet's (detection boxes within `box_tol` px), their labels,
/// and (when the counts agree) the mask probabilities within 1e-4. Returns (detection boxes, mask
/// probabilities) then.
pub fn end_to_end(
    fx: &Fixture,
    model: &dyn TwoStageDetector,
    feats: &Features,
    box_tol: f64,
    tab: &mut Table,
) -> Option<(Tensor, Tensor)> {
    let sizes = [fx.hw];
    let (pb, ps) = (fx.get("proposals"), fx.get("proposal_scores"));
    let (db, ds, dl) = (fx.get("det_boxes"), fx.get("det_scores"), fx.get("det_labels"));
    let out = model.rpn_outputs(feats).unwrap();
    let props = model.proposals(&out, &sizes, model.test_proposals()).unwrap();
    one_to_one(tab, "end-to-end proposals", &props[0].boxes, &props[0].scores, pb, ps, 1e-4, 1e-6);
    let dets = model.detect(feats, &sizes).unwrap();
    one_to_one(
        tab,
        "end-to-end detections",
        &dets[0].boxes,
        &dets[0].scores,
        db,
        ds,
        box_tol,
        1e-5,
    );
    let k = dets[0].labels.size()[0].min(dl.size()[0]);
    tab.count(
        "end-to-end detections: labels differing",
        mismatches(&dets[0].labels.narrow(0, 0, k), &dl.narrow(0, 0, k)),
        0,
    );
    if dets[0].boxes.size()[0] != db.size()[0] {
        return None;
    }
    let probs = model
        .mask_probs(feats, &[dets[0].boxes.shallow_clone()], &[dets[0].labels.shallow_clone()])
        .unwrap();
    // Measured: 4.2e-5 (Mask R-CNN 520x704), 2.0e-5 / 5.8e-6 (Cascade / HTC 256x256).
    tab.close("end-to-end mask probabilities", &probs, fx.get("mask_probs"), 1e-4, 0.0);
    Some((dets[0].boxes.shallow_clone(), probs))
}
