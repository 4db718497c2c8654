#!/usr/bin/env bash
# Benchmark of the ensemble's merge points on the CPU, one thread: cellseg-ensemble (criterion,
# benches/ensemble_merge.rs) against the seed's PyTorch / numpy merging (tools/ensemble_bench.py:
# mmdet merge_aug_masks + get_seg_masks' CPU paste; bbox_mapping_back + mean + mmcv nms) on the
# same inputs: 6 members x 4 flip views = 24 passes of a 520x704 image, 300 final masks of 28x28,
# 3000 proposals of 3 classes. Prints both timings and the ratio. Needs .venv (make test).
#
#   REPEATS=5 tools/bench_ensemble.sh
#
# Caveat, and the point of the comparison: the seed pastes every mask into a zeroed whole-image
# frame (300 x 520 x 704 bytes), cellseg into its box window only. The seed also merges all 3 class
# channels of the masks (cellseg the label channel) and one box per proposal (cellseg also the
# [N,3,4] class boxes).
# Both sides print their counts (non-zero mask bytes, boxes kept) on the same input: they agree.
# On the CPU cellseg's class-agnostic NMS (cellseg_heads::ops::nms, a dense N x N IoU bitmask shaped
# for the GPU) dominates box_merge and is slower than torchvision's scalar CPU NMS at N = 3000.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
TARGET=${CARGO_TARGET_DIR:-target}
OUT="$TARGET/ensemble-bench"
mkdir -p "$OUT"
# Criterion writes its estimates here, fresh for this run (see tools/bench_postproc.sh).
export CRITERION_HOME
CRITERION_HOME="$(realpath "$OUT")/criterion"
rm -rf "$CRITERION_HOME"
INPUT="$OUT/input.safetensors"

echo "== generating the input" >&2
"$PY" tools/ensemble_bench.py gen "$INPUT"

echo "== Rust: cargo bench --bench ensemble_merge" >&2
CELLSEG_ENSEMBLE_BENCH_INPUT="$(realpath "$INPUT")" \
  cargo bench -p cellseg --bench ensemble_merge -- --noplot >&2

echo "== Python baseline (seed algorithm)" >&2
"$PY" tools/ensemble_bench.py time "$INPUT" "${REPEATS:-5}" > "$OUT/python.json"

"$PY" - "$CRITERION_HOME" "$OUT/python.json" <<'PYEOF'
import glob, json, os, sys
crit, py = sys.argv[1], json.load(open(sys.argv[2]))
print(f"{'bench':<22}{'python ms':>11}{'rust ms':>10}{'ratio':>9}")
for name, p in py.items():
    est = glob.glob(os.path.join(crit, name, "*", "new", "estimates.json"))
    rust_ms = json.load(open(est[0]))["median"]["point_estimate"] / 1e6
    bench = f"{name}/{os.path.basename(os.path.dirname(os.path.dirname(est[0])))}"
    print(f"{bench:<22}{p['median_ms']:>11.1f}{rust_ms:>10.2f}{p['median_ms'] / rust_ms:>8.2f}x")
print("# ratio = python / rust median time (one thread, CPU); > 1 means cellseg is faster")
PYEOF
