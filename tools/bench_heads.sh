#!/usr/bin/env bash
# Throughput of cellseg's Mask R-CNN (R50-FPN, stride-1 stem) against torchvision, in one command:
# one training step (batch BATCH of 256x256 crops with ~40 instances) and inference on one 520x704
# image, then the ratios. Env: BATCH (8), ITERS (3), WARMUP (1), DEVICE (cpu|cuda), PROFILE (dev|release).
set -euo pipefail
cd "$(dirname "$0")/.."
export BATCH="${BATCH:-8}" ITERS="${ITERS:-3}" WARMUP="${WARMUP:-1}" DEVICE="${DEVICE:-cpu}"
PROFILE="${PROFILE:-dev}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || { echo "missing $PY: run make test first" >&2; exit 1; }
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
if [ -n "${BENCH_BIN:-}" ]; then
  "$BENCH_BIN" > "$log/ours"
else
  cargo run -q --profile "$PROFILE" -p cellseg-heads --example bench_heads > "$log/ours"
fi
cat "$log/ours"
"$PY" tools/heads_bench_tv.py > "$log/theirs"
cat "$log/theirs"
ours=$(grep '^RESULT' "$log/ours")
theirs=$(grep '^RESULT' "$log/theirs")
val() { echo "$1" | sed -n "s/.*$2=\([0-9.]*\).*/\1/p"; }
awk -v a="$(val "$ours" train_ms)" -v b="$(val "$theirs" train_ms)" -v c="$(val "$ours" infer_ms)" -v d="$(val "$theirs" infer_ms)" \
  -v bs="$BATCH" -v dev="$DEVICE" 'BEGIN {
  printf "device %s, batch %s\n", dev, bs
  printf "train step : cellseg %.1f ms, torchvision %.1f ms, speed-up x%.2f\n", a, b, b / a
  printf "inference  : cellseg %.1f ms, torchvision %.1f ms, speed-up x%.2f\n", c, d, d / c }'
