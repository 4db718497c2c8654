#!/usr/bin/env bash
# Forward time of cellseg-backbones trunks + FPN next to PyTorch (torchvision / timm + torchvision
# FPN) for the same module, input and thread count, in one command; prints both and the ratio.
#
#   tools/bench_backbones.sh [--size 256] [--iters 5] [--threads 2] [--stem-stride 1] [--cuda] [NAME...]
#
# NAME: resnet50 resnet101 resnext101_32x4d resnext101_64x4d resnext101_32x8d tf_efficientnet_b3..b7
# (default: resnet50 tf_efficientnet_b4). Eval mode, no grad, batch 1, random weights.
# Set CARGO_PROFILE=dev to skip the release build (our glue at opt-level 1, libtorch is the same).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ -x .venv/bin/python ] || { echo "missing .venv: run make test" >&2; exit 1; }
profile=()
[ "${CARGO_PROFILE:-}" = dev ] && profile=(--profile dev)
echo "# device: $( [[ " $* " == *" --cuda "* ]] && echo cuda || echo "cpu ($(nproc) cores)" ); args: $*"
rust=$(cargo bench -q -p cellseg-backbones --bench backbones "${profile[@]}" -- "$@")
py=$(.venv/bin/python tools/backbones_bench.py "$@" 2>/dev/null)
printf '%-20s %14s %14s %8s %14s %14s %8s\n' backbone rust_median_ms torch_median_ms ratio rust_min_ms torch_min_ms ratio
join -t $'\t' <(echo "$rust" | sort) <(echo "$py" | sort) |
  awk -F'\t' '{ printf "%-20s %14.1f %14.1f %8.2f %14.1f %14.1f %8.2f\n", $1, $2, $4, $2 / $4, $3, $5, $3 / $5 }'
echo "# ratio = rust / pytorch forward time (backbone + FPN, batch 1, eval, no grad); < 1 means cellseg is faster"
