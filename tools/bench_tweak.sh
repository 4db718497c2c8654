#!/usr/bin/env bash
# Benchmark of threshold tweaking: cellseg_postproc::tweak (criterion, one thread and all threads)
# against the seed's tweak_thresholds re-written in numpy + pycocotools + opencv
# (tools/tweak_seed.py, one thread) on the same OOF predictions made from real Sartorius truth
# (IMAGES images, default 108), over the seed's grid (1 mask x 3 NMS x 5 sizes x 13 confidences).
# Checks that both give the same CV, prints both timings and the ratios. Needs .venv and ../shared/realdata.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
REALDATA=${REALDATA:-../shared/realdata}
TARGET=${CARGO_TARGET_DIR:-target}
OUT="$TARGET/tweak-bench"
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
# Criterion writes its estimates here, fresh for this run (see tools/bench_postproc.sh).
export CRITERION_HOME="$OUT/criterion"
rm -rf "$CRITERION_HOME"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores" >&2

echo "== generating ${IMAGES:-108} images from $REALDATA" >&2
"$PY" tools/tweak_seed.py gen "$REALDATA" "$OUT/input" --images "${IMAGES:-108}"

echo "== Rust: cargo bench -p cellseg-postproc --bench tweak" >&2
CELLSEG_TWEAK_BENCH_DIR="$OUT/input" cargo bench -p cellseg-postproc --bench tweak -- --noplot >&2

echo "== Python baseline (the seed's tweak_thresholds, one thread)" >&2
"$PY" tools/tweak_seed.py tweak "$OUT/input/oof.bin" "$OUT/input/truth.csv" configs/tweak.toml "$OUT/python.json"

echo "== the same CV from the release binary" >&2
cargo run --release -q -p cellseg-postproc --example tweak_thresholds -- \
  --oof "$OUT/input/oof.bin" --truth "$OUT/input/truth.csv" --out "$OUT/best.toml" --json > "$OUT/rust.json"

"$PY" - "$CRITERION_HOME/tweak" "$OUT/python.json" "$OUT/rust.json" <<'PYEOF'
import glob, json, os, sys
crit, py, rust = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
assert abs(py["cv"] - rust["cv"]) < 1e-12, (py["cv"], rust["cv"])
n, pts = len(py["images"]), py["points"]
print(f"{n} images x {pts} grid points, CV {py['cv']:.6f} (Python) = {rust['cv']:.6f} (Rust)")
print(f"{'run':<28}{'seconds':>10}{'ratio':>10}")
print(f"{'python seed tweak, 1 thread':<28}{py['seconds']:>10.3f}{'1.0x':>10}")
for name in ["1_thread", "all_threads"]:
    found = [f for f in glob.glob(os.path.join(crit, "**", "new", "estimates.json"), recursive=True)
             if name in f]
    est = json.load(open(found[0]))
    s = est["median"]["point_estimate"] / 1e9
    print(f"{'rust tweak, ' + name.replace('_', ' '):<28}{s:>10.3f}{py['seconds'] / s:>9.0f}x")
PYEOF
