#!/usr/bin/env bash
# Throughput of cellseg's Mask R-CNN (R50-FPN, stride-1 stem) against torchvision, in one command:
# one training step (batch BATCH of 256x256 crops with ~40 instances) and inference on one 520x704
# image, then the ratios. On CUDA the peak GPU memory of each process is sampled with nvidia-smi
# (the whole process: CUDA context and the caching allocator's reserve included, alike for both).
# Env: BATCH (8), ITERS (3), WARMUP (1), DEVICE (cpu|cuda), AMP (0|1), PROFILE (dev|release),
# BENCH_BIN (a prebuilt bench_heads binary, e.g. on the GPU machine), PYTHON (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
export BATCH="${BATCH:-8}" ITERS="${ITERS:-3}" WARMUP="${WARMUP:-1}" DEVICE="${DEVICE:-cpu}" AMP="${AMP:-0}"
PROFILE="${PROFILE:-dev}"
PY="${PYTHON:-.venv/bin/python}"
command -v "$PY" >/dev/null || { echo "missing $PY: run make test first" >&2; exit 1; }
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# Runs "$@" while sampling the GPU's used memory every 50 ms into $log/$name.mem; prints the peak.
sampled() {
  local name=$1 pid=
  shift
  if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "$log/$name.mem" &
    pid=$!
  fi
  "$@" > "$log/$name"
  if [ -n "$pid" ]; then
    kill "$pid"; wait "$pid" 2>/dev/null || true
    sort -n "$log/$name.mem" | tail -1 | awk -v n="$name" '{ printf "PEAK %s %.2f\n", n, $1 / 1024 }' >> "$log/$name"
  fi
}

if [ -z "${BENCH_BIN:-}" ]; then
  cargo build -q --profile "$PROFILE" -p cellseg-heads --example bench_heads
  dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
  BENCH_BIN="${CARGO_TARGET_DIR:-target}/$dir/examples/bench_heads"
fi
sampled ours "$BENCH_BIN"
cat "$log/ours"
sampled theirs "$PY" tools/heads_bench_tv.py
cat "$log/theirs"
ours=$(grep '^RESULT' "$log/ours")
theirs=$(grep '^RESULT' "$log/theirs")
val() { echo "$1" | sed -n "s/.*$2=\([0-9.]*\).*/\1/p"; }
awk -v a="$(val "$ours" train_ms)" -v b="$(val "$theirs" train_ms)" -v c="$(val "$ours" infer_ms)" -v d="$(val "$theirs" infer_ms)" \
  -v bs="$BATCH" -v dev="$DEVICE" -v amp="$AMP" 'BEGIN {
  printf "device %s, batch %s, amp %s\n", dev, bs, amp
  printf "train step : cellseg %.1f ms, torchvision %.1f ms, speed-up x%.2f\n", a, b, b / a
  printf "inference  : cellseg %.1f ms, torchvision %.1f ms, speed-up x%.2f\n", c, d, d / c }'
if grep -q '^PEAK' "$log/ours"; then
  awk '/^PEAK/ { m[$2] = $3 } END {
    printf "peak GPU memory (nvidia-smi, whole process): cellseg %.2f GiB, torchvision %.2f GiB, ratio x%.2f\n",
      m["ours"], m["theirs"], m["ours"] / m["theirs"] }' "$log/ours" "$log/theirs"
fi
