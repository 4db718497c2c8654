#!/usr/bin/env bash
# Forward time of cellseg-backbones trunks + FPN next to PyTorch (torchvision / timm + torchvision
# FPN) for the same module, input and thread count, in one command; prints both and the ratio.
#
#   tools/bench_backbones.sh [--rounds 2] [--size 256] [--iters 5] [--threads 2] [--stem-stride 1] [--cuda] [NAME...]
#
# NAME: resnet50 resnet101 resnext101_32x4d resnext101_64x4d resnext101_32x8d tf_efficientnet_b3..b7
# (default: resnet50 tf_efficientnet_b4). Batch 1, eval mode, no grad, random weights.
# Each round runs the Rust bench then the Python baseline (alternating, so that load changes on a
# shared machine hit both); per backbone the best median and the best minimum over rounds are kept.
# Set CARGO_PROFILE=dev to skip the release build (our glue at opt-level 1; libtorch is the same).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ -x .venv/bin/python ] || { echo "missing .venv: run make test" >&2; exit 1; }
rounds=2
if [ "${1:-}" = --rounds ]; then rounds=$2; shift 2; fi
profile=()
[ "${CARGO_PROFILE:-}" = dev ] && profile=(--profile dev)
device="cpu ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
[[ " $* " == *" --cuda "* ]] && device="cuda ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
echo "# device: $device; rounds: $rounds; args: $*"
cargo bench -q -p cellseg-backbones --bench backbones "${profile[@]}" --no-run
rust=""; py=""
for _ in $(seq "$rounds"); do
  rust+=$(cargo bench -q -p cellseg-backbones --bench backbones "${profile[@]}" -- "$@")$'\n'
  py+=$(.venv/bin/python tools/backbones_bench.py "$@" 2>/dev/null)$'\n'
done
best() { awk -F'\t' 'NF==3 { if (!($1 in m) || $2 < m[$1]) m[$1] = $2; if (!($1 in n) || $3 < n[$1]) n[$1] = $3 }
  END { for (k in m) printf "%s\t%s\t%s\n", k, m[k], n[k] }' | sort; }
printf '%-20s %14s %14s %8s %14s %14s %8s\n' backbone rust_median_ms torch_median_ms ratio rust_min_ms torch_min_ms ratio
join -t $'\t' <(echo "$rust" | best) <(echo "$py" | best) |
  awk -F'\t' '{ printf "%-20s %14.1f %14.1f %8.2f %14.1f %14.1f %8.2f\n", $1, $2, $4, $2 / $4, $3, $5, $3 / $5 }'
echo "# ratio = rust / pytorch forward time (backbone + FPN, batch 1, eval, no grad); < 1 means cellseg is faster"
