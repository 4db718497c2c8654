#!/usr/bin/env bash
# Whole-process timing of the `evaluate` example (pure Rust, no libtorch) against pycocotools and
# faster-coco-eval on the same real files: the 8 Sartorius COCO files and the 2 LIVECell subsets
# (maxDets 100/500/2000) with perturbed predictions, and the competition metric on Sartorius CSVs
# (inputs written by tools/metrics_parity.py). Single-threaded; prints medians and ratios, and how far
# the stats are from pycocotools'. Needs .venv (with faster-coco-eval) and ../shared/realdata.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
REALDATA=${REALDATA:-../shared/realdata}
TARGET=${CARGO_TARGET_DIR:-target}
OUT="$TARGET/evaluate-bench"
rm -rf "$OUT"
mkdir -p "$OUT"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores" >&2
"$PY" tools/metrics_parity.py "$REALDATA" "$OUT/data" >&2
cargo build --release -q -p cellseg-metrics --example evaluate
BIN="$TARGET/release/examples/evaluate"
if ldd "$BIN" | grep -q torch; then echo "error: $BIN links libtorch" >&2; exit 1; fi
"$PY" tools/bench_evaluate.py "$BIN" "$PY" "$OUT/data" "${RUNS:-5}"
