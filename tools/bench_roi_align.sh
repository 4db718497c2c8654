#!/usr/bin/env bash
# The multi-level RoI extractor on the CPU, in one command: our RoIAlign kernel, our libtorch-ops
# construction (the path of other devices) and mmdet 2.17's SingleRoIExtractor over
# torchvision.ops.roi_align, on the same RoIs and threads; forward (no grad) and forward +
# backward, then the ratios (ours / theirs: below 1 is faster). The cases are described in
# crates/cellseg-heads/examples/bench_roi_align.rs.
# Env: ITERS (5), WARMUP (1), THREADS (2), PROFILE (dev|release), PYTHON (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
export ITERS="${ITERS:-5}" WARMUP="${WARMUP:-1}" THREADS="${THREADS:-2}"
PROFILE="${PROFILE:-dev}"
PY="${PYTHON:-.venv/bin/python}"
command -v "$PY" >/dev/null || { echo "missing $PY: run make test first" >&2; exit 1; }
cargo build -q --profile "$PROFILE" -p cellseg-heads --example bench_roi_align
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
ours=$("${CARGO_TARGET_DIR:-target}/$dir/examples/bench_roi_align")
theirs=$("$PY" tools/roi_align_bench.py)
echo "threads $THREADS, medians of $ITERS"
printf '%-11s %-16s %10s %10s %10s %12s %12s\n' case phase kernel_ms ops_ms tv_ms kernel/tv ops/tv
for case in box_train mask_train box_infer mask_infer; do
  o=$(grep "case=$case " <<<"$ours")
  t=$(grep "case=$case " <<<"$theirs")
  val() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<"$1"; }
  for phase in forward train; do
    k=$(val "$o" "${phase}_ms"); op=$(val "$o" "${phase}_ops_ms"); tv=$(val "$t" "${phase}_ms")
    label=$([ "$phase" = forward ] && echo "forward" || echo "forward+backward")
    awk -v c="$case" -v p="$label" -v k="$k" -v o="$op" -v t="$tv" \
      'BEGIN { printf "%-11s %-16s %10.1f %10.1f %10.1f %12.2f %12.2f\n", c, p, k, o, t, k / t, o / t }'
  done
done
