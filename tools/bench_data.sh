#!/usr/bin/env bash
# Loader throughput of cellseg-data vs a seed-like numpy/cv2 pipeline, in the same command.
# Usage: tools/bench_data.sh   (from the repository root; needs .venv and ../shared/realdata)
set -euo pipefail
cd "$(dirname "$0")/.."
REAL=../shared/realdata/sartorius
[ -d "$REAL" ] || { echo "needs $REAL"; exit 1; }
echo "cores: $(nproc), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
RUST_OUT=$(cargo bench -p cellseg-data --bench loader -- --noplot 2>&1)
echo "$RUST_OUT" | grep -v '^ *Compiling' || true
PY_OUT=$(.venv/bin/python tools/data_bench_baseline.py "$REAL")
echo "$PY_OUT"
R=$(echo "$RUST_OUT" | sed -n 's/^RUST_CROPS_PER_S=//p')
RC=$(echo "$RUST_OUT" | sed -n 's/^RUST_CROPS_PER_CPU_S=//p')
RP=$(echo "$RUST_OUT" | sed -n 's/^RUST_PRELOADED_CROPS_PER_S=//p')
RPC=$(echo "$RUST_OUT" | sed -n 's/^RUST_PRELOADED_CROPS_PER_CPU_S=//p')
P=$(echo "$PY_OUT" | sed -n 's/^PY_CROPS_PER_S=//p')
PC=$(echo "$PY_OUT" | sed -n 's/^PY_CROPS_PER_CPU_S=//p')
echo "rust loader, PNG decoded per crop (2 threads, all augmentations): $R crops/s wall, $RC crops per CPU-second"
echo "rust loader, preloaded images     (2 threads, all augmentations): $RP crops/s wall, $RPC crops per CPU-second"
echo "python seed-like pipeline (1 process):                            $P crops/s wall, $PC crops per CPU-second"
echo "ratio rust/python (wall): $(.venv/bin/python -c "print(f'{$R / $P:.2f}')")   (per CPU-second): $(.venv/bin/python -c "print(f'{$RC / $PC:.2f}')")"
