#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded synthetic default, on CPU.
#   1. train a small Mask R-CNN (configs/demo.toml)             -> runs/demo
#   2. train a small Cascade Mask R-CNN (+ demo_cascade.toml)    -> runs/demo_cascade
#   3. infer_ensemble with flip TTA on the held-out images each training run wrote
#      (runs/demo/heldout: synthetic cells; heldout_dsb: real DSB2018 nuclei), for each member alone
#      and for the ensemble of both: submission.csv, overlays, the competition metric.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bin=target/release/examples
cargo build --release --example train_maskrcnn --example train_cascade --example infer_ensemble
"$bin/train_maskrcnn" --config configs/demo.toml
"$bin/train_cascade" --config configs/demo.toml --config configs/demo_cascade.toml

summary=()
for set in heldout heldout_dsb; do
  for members in "runs/demo" "runs/demo_cascade" "runs/demo runs/demo_cascade"; do
    name=$(echo "$members" | sed 's#runs/##g; s# #+#')
    out="runs/demo_ensemble/$set/$name"
    mkdir -p "$out"
    args=()
    for m in $members; do args+=(--model "$m"); done
    echo "== infer_ensemble ${args[*]} on runs/demo/$set"
    "$bin/infer_ensemble" "${args[@]}" --images "runs/demo/$set/images" \
      --truth "runs/demo/$set/truth.csv" --ensemble configs/demo_ensemble.toml \
      --postproc configs/demo_postproc.toml --out "$out/submission.csv" --overlays "$out/overlays" \
      | tee "$out/report.txt"
    summary+=("$(printf '%-12s %-28s %s' "$set" "$name" "$(awk '/^overall/ { print $3 }' "$out/report.txt")")")
  done
done
echo
echo "competition metric (4-view flip TTA, the seed's ensemble settings of configs/demo_ensemble.toml):"
printf '%-12s %-28s %s\n' "images" "members" "metric"
printf '%s\n' "${summary[@]}"
echo "submissions and overlays: runs/demo_ensemble/<images>/<members>/   ($(( $(date +%s) - start )) s)"
