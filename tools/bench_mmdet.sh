#!/usr/bin/env bash
# cellseg against real mmdet 2.17 (torchvision kernels, tools/mmdet_shim.py) on the CPU, in one
# command: the seed's Mask R-CNN, Cascade Mask R-CNN and HTC with the same calibrated random
# weights loaded strictly on both sides (tools/mmdet_bench.py writes them), inference on one
# 520x704 image (detections counted on both sides) and one SGD training step on a batch of two
# 256x256 crops with ~40 cells each, medians; then the table, ours / mmdet (below 1 is faster).
# Env: MODELS ("maskrcnn cascade htc"), ITERS (3), WARMUP (1), THREADS (2), PROFILE (dev|release),
# PYTHON (.venv/bin/python), ROI_ALIGN (ops: our side with RoIAlign from libtorch ops), WORK (a
# folder that keeps the weights and inputs, e.g. for `perf record` of bench_mmdet; else a
# temporary one), MALLOC (default: both sides with glibc's allocator as it ships; else both keep
# freed blocks: ours through cellseg_heads::cpu_memory::retain_freed_memory, which every cellseg
# binary calls, mmdet's Python through glibc's equivalent MALLOC_MMAP_THRESHOLD_ /
# MALLOC_TRIM_THRESHOLD_, so that the table compares the detectors, not the allocator).
set -euo pipefail
cd "$(dirname "$0")/.."
export ITERS="${ITERS:-3}" WARMUP="${WARMUP:-1}" THREADS="${THREADS:-2}"
MODELS="${MODELS:-maskrcnn cascade htc}"
PROFILE="${PROFILE:-dev}"
PY="${PYTHON:-.venv/bin/python}"
command -v "$PY" >/dev/null || { echo "missing $PY: run make test first" >&2; exit 1; }
cargo build -q --profile "$PROFILE" -p cellseg-heads --example bench_mmdet
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
bin="${CARGO_TARGET_DIR:-target}/$dir/examples/bench_mmdet"
if [ -n "${WORK:-}" ]; then
  work=$WORK
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
rows=()
for m in $MODELS; do
  if [ "${MALLOC:-}" = default ]; then
    "$PY" tools/mmdet_bench.py "$m" "$work/$m" > "$work/$m.mmdet"
  else
    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647 \
      "$PY" tools/mmdet_bench.py "$m" "$work/$m" > "$work/$m.mmdet"
  fi
  grep -v '^RESULT' "$work/$m.mmdet" || true
  "$bin" "$m" "$work/$m" > "$work/$m.cellseg"
  grep -v '^RESULT' "$work/$m.cellseg" || true
  theirs=$(grep '^RESULT' "$work/$m.mmdet")
  ours=$(grep '^RESULT' "$work/$m.cellseg")
  val() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<"$1"; }
  rows+=("$m $(val "$ours" infer_ms) $(val "$theirs" infer_ms) $(val "$ours" detections) $(val "$theirs" detections) $(val "$ours" train_ms) $(val "$theirs" train_ms)")
done
echo "threads $THREADS, medians of $ITERS (after $WARMUP warm-up), glibc malloc: ${MALLOC:-freed blocks kept on both sides}"
printf '| %-8s | %-26s | %10s | %10s | %14s |\n' model phase cellseg mmdet "cellseg/mmdet"
printf '|----------|----------------------------|------------|------------|----------------|\n'
for r in "${rows[@]}"; do
  read -r m oi ti od td ot tt <<<"$r"
  awk -v m="$m" -v oi="$oi" -v ti="$ti" -v od="$od" -v td="$td" -v ot="$ot" -v tt="$tt" 'BEGIN {
    printf "| %-8s | %-26s | %8.2f s | %8.2f s | %14.2f |\n", m, "inference (" od " / " td " det.)", oi / 1e3, ti / 1e3, oi / ti
    printf "| %-8s | %-26s | %8.2f s | %8.2f s | %14.2f |\n", m, "training step (batch 2)", ot / 1e3, tt / 1e3, ot / tt }'
done
