#!/usr/bin/env bash
# Loader throughput of cellseg-data vs a seed-like numpy/cv2 pipeline, in the same command.
# Usage: tools/bench_data.sh   (from the repository root; needs .venv and ../shared/realdata)
set -euo pipefail
cd "$(dirname "$0")/.."
REAL=../shared/realdata/sartorius
[ -d "$REAL" ] || { echo "needs $REAL"; exit 1; }
echo "cores: $(nproc)"
RUST_OUT=$(cargo bench -p cellseg-data --bench loader -- --noplot 2>&1 | tee /dev/stderr)
PY_OUT=$(.venv/bin/python tools/data_bench_baseline.py "$REAL" | tee /dev/stderr)
R=$(echo "$RUST_OUT" | sed -n 's/^RUST_CROPS_PER_S=//p')
P=$(echo "$PY_OUT" | sed -n 's/^PY_CROPS_PER_S=//p')
echo "rust loader (2 threads, all augmentations): $R crops/s"
echo "python seed-like pipeline (1 process):      $P crops/s"
echo "ratio rust/python: $(.venv/bin/python -c "print(f'{$R / $P:.2f}')")"
