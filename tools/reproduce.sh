#!/usr/bin/env bash
# `make reproduce`: the seed's whole workflow (SEED.md §3, §4.1, §4.7) on the CPU, on a generated
# Sartorius-layout data set, every figure of the closing table read from the files the commands
# wrote:
#   1. synthetic_sartorius: 60 annotated 256x256 images of the three cell types with plate/well
#      sample ids (train.csv + train/), 6 held-back test images (test/ + test_truth.csv)
#   2. train_maskrcnn --all-folds and train_cascade --all-folds: two experiments of 5 folds
#   3. cross_validate each experiment alone and both together (identity + horizontal flip,
#      configs/reproduce_ensemble.toml): one OOF over all 60 images
#   4. tweak_thresholds on the ensemble's OOF with the full train.csv
#   5. cross_validate again with the tuned post-processing (= the tuned CV tweak_thresholds prints)
#   6. infer_ensemble of all 10 fold models on the test images -> submission.csv, the test metric
# Run again, it reuses the data and the finished folds (delete runs/reproduce to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
out=runs/reproduce
data=$out/data
bin=target/release/examples
cargo build --release --example train_maskrcnn --example train_cascade --example cross_validate \
  --example infer_ensemble
cargo build --release -p cellseg-postproc --example tweak_thresholds
cargo build --release -p cellseg-data --example synthetic_sartorius
mkdir -p "$out"
[ -f "$data/train.csv" ] || "$bin/synthetic_sartorius" --out "$data" --images 60 --test-images 6 \
  --height 256 --width 256 --seed 0

t=$(date +%s)
"$bin/train_maskrcnn" --config configs/demo.toml --config configs/reproduce.toml --data "$data" \
  --all-folds | tee "$out/train_maskrcnn.txt"
"$bin/train_cascade" --config configs/demo.toml --config configs/reproduce.toml \
  --config configs/reproduce_cascade.toml --data "$data" --all-folds | tee "$out/train_cascade.txt"
train_s=$(( $(date +%s) - t ))

cv() { # cv <name> <cross_validate args...>: report in $out/cv_<name>.txt
  local name=$1; shift
  echo "== cross_validate $name"
  "$bin/cross_validate" --data "$data" --ensemble configs/reproduce_ensemble.toml "$@" \
    | tee "$out/cv_$name.txt"
}
t=$(date +%s)
cv maskrcnn --experiment $out/maskrcnn --postproc configs/demo_postproc.toml
cv cascade --experiment $out/cascade --postproc configs/demo_postproc.toml
cv ensemble --experiment $out/maskrcnn --experiment $out/cascade \
  --postproc configs/demo_postproc.toml --oof $out/oof.bin --out $out/oof_submission.csv
echo "== tweak_thresholds"
target/release/examples/tweak_thresholds --oof $out/oof.bin --truth "$data/train.csv" \
  --postproc configs/demo_postproc.toml --out $out/postproc_tuned.toml | tee "$out/tweak.txt"
cv tuned --experiment $out/maskrcnn --experiment $out/cascade --postproc $out/postproc_tuned.toml
echo "== infer_ensemble on the held-back test images"
"$bin/infer_ensemble" --model $out/maskrcnn --model $out/cascade --images "$data/test" \
  --truth "$data/test_truth.csv" --ensemble configs/reproduce_ensemble.toml \
  --postproc $out/postproc_tuned.toml --out $out/submission.csv | tee "$out/test.txt"
infer_s=$(( $(date +%s) - t ))

overall() { awk '/^overall/ { print $3 }' "$1"; }
echo
echo "reproduction on $data (60 training images in 5 GroupKFold folds, 6 test images):"
printf '%-44s %s\n' "what" "metric"
printf '%-44s %s\n' "CV, Mask R-CNN experiment (5 folds)" "$(overall $out/cv_maskrcnn.txt)"
printf '%-44s %s\n' "CV, Cascade experiment (5 folds)" "$(overall $out/cv_cascade.txt)"
printf '%-44s %s\n' "CV, ensemble of both (2-view flip TTA)" "$(overall $out/cv_ensemble.txt)"
printf '%-44s %s\n' "CV after tweak_thresholds (its own figure)" "$(awk '/^CV after tuning/ { print $4 }' $out/tweak.txt)"
printf '%-44s %s\n' "CV after tweak_thresholds (cross_validate)" "$(overall $out/cv_tuned.txt)"
printf '%-44s %s\n' "test metric, 10 fold models, tuned" "$(overall $out/test.txt)"
echo "training ${train_s} s, cross-validation + tweaking + test ${infer_s} s, whole run $(( $(date +%s) - start )) s"
echo "submission: $out/submission.csv   OOF: $out/oof.bin   tuned post-processing: $out/postproc_tuned.toml"
