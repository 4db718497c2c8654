#!/usr/bin/env bash
# `make reproduce`: the seed's whole workflow (SEED.md §3, §4.1, §4.7) on the CPU, on a generated
# Sartorius-layout data set, every figure of the closing table read from the files the commands
# wrote:
#   1. synthetic_sartorius: 60 annotated 256x256 images of the three cell types with plate/well
#      sample ids (train.csv + train/), 6 held-back test images (test/ + test_truth.csv); with
#      DSB=1 also 8 real DSB2018 nuclei images of tests/data as a fourth plate (labelled shsy5y).
#      DSB=1 is off by default: fluorescence nuclei (mean gray ~15) beside the phase-contrast-like
#      synthetic cells (~127) cost these small models most of their CV (fold 0 of the Mask R-CNN
#      experiment: 0.432 without them, 0.119 with them, 2026-12-03).
#   2. (PRETRAIN=1 only) pretrain_livecell of both architectures on the real LIVECell images of
#      $LIVECELL (default ../shared/realdata/livecell), the seed's optional first stage
#   3. train_maskrcnn --all-folds and train_cascade --all-folds: two experiments of 5 folds
#      (from the pretrained weights with PRETRAIN=1)
#   4. cross_validate each experiment alone and both together (identity + horizontal flip,
#      configs/reproduce_ensemble.toml): one OOF over all training images
#   5. tweak_thresholds on the ensemble's OOF with the full train.csv
#   6. cross_validate again with the tuned post-processing (= the tuned CV tweak_thresholds prints)
#   7. infer_ensemble of all 10 fold models on the test images -> submission.csv, the test metric
# Everything goes to runs/reproduce (runs/reproduce_pretrained with PRETRAIN=1, a further _dsb with
# DSB=1). Run again, it reuses the data, the finished pretraining and the finished folds (delete the
# folder to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
pretrain=${PRETRAIN:-0}
dsb=${DSB:-0}
out=runs/reproduce
for v in "PRETRAIN=$pretrain" "DSB=$dsb"; do
  case ${v#*=} in
    0|1) ;;
    *) echo "${v%%=*} must be 0 or 1, not '${v#*=}'" >&2; exit 2 ;;
  esac
done
[ "$pretrain" = 1 ] && out+=_pretrained
[ "$dsb" = 1 ] && out+=_dsb
dsb_args=()
[ "$dsb" = 1 ] && dsb_args=(--dsb tests/data/dsb2018_stage1_test --dsb-images 8)
livecell=${LIVECELL:-../shared/realdata/livecell}
if [ "$pretrain" = 1 ] && [ ! -f "$livecell/livecell_coco_test_subset.json" ]; then
  echo "PRETRAIN=1 needs the LIVECell subset (livecell_coco_{test,val}_subset.json + images/) in" \
    "$livecell; set LIVECELL=<folder>" >&2
  exit 2
fi
data=$out/data
bin=target/release/examples
cargo build --release --example train_maskrcnn --example train_cascade --example cross_validate \
  --example infer_ensemble --example pretrain_livecell
cargo build --release -p cellseg-postproc --example tweak_thresholds
cargo build --release -p cellseg-data --example synthetic_sartorius
mkdir -p "$out"
[ -f "$data/train.csv" ] || "$bin/synthetic_sartorius" --out "$data" --images 60 --test-images 6 \
  --height 256 --width 256 --seed 0 "${dsb_args[@]}"

t=$(date +%s)
from=() # the --pretrained flag of each architecture
if [ "$pretrain" = 1 ]; then
  for arch in mask_rcnn cascade; do
    dir=$out/pretrain_$arch
    # a finished run is reused by pretrain_livecell itself; an interrupted one resumes
    resume=()
    [ -e "$dir/latest.json" ] && [ ! -e "$dir/finished.json" ] && resume=(--resume)
    echo "== pretrain_livecell --arch $arch on $livecell"
    "$bin/pretrain_livecell" --config configs/pretrain_livecell.toml \
      --config configs/pretrain_livecell_tiny.toml --config configs/pretrain_livecell_subset.toml \
      --config configs/reproduce_pretrain.toml \
      --train-json "$livecell/livecell_coco_test_subset.json" \
      --val-json "$livecell/livecell_coco_val_subset.json" --arch $arch --run-dir "$dir" \
      "${resume[@]}" | tee -a "$out/pretrain_$arch.txt"
  done
fi
pretrain_s=$(( $(date +%s) - t ))
pretrained() { [ "$pretrain" = 1 ] && echo "--pretrained $out/pretrain_$1"; true; }

t=$(date +%s)
"$bin/train_maskrcnn" --config configs/demo.toml --config configs/reproduce.toml --data "$data" \
  --run-dir $out/maskrcnn --all-folds $(pretrained mask_rcnn) | tee "$out/train_maskrcnn.txt"
"$bin/train_cascade" --config configs/demo.toml --config configs/reproduce.toml \
  --config configs/reproduce_cascade.toml --data "$data" --run-dir $out/cascade --all-folds \
  $(pretrained cascade) | tee "$out/train_cascade.txt"
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
echo "reproduction on $data ($(( $(cut -d, -f1 "$data/train.csv" | sort -u | wc -l) - 1 )) training images in 5 GroupKFold folds, 6 test images):"
printf '%-44s %s\n' "what" "metric"
[ "$pretrain" = 1 ] && printf '%-44s %s\n' "pretraining (LIVECell, 8 cell lines)" "$livecell"
printf '%-44s %s\n' "CV, Mask R-CNN experiment (5 folds)" "$(overall $out/cv_maskrcnn.txt)"
printf '%-44s %s\n' "CV, Cascade experiment (5 folds)" "$(overall $out/cv_cascade.txt)"
printf '%-44s %s\n' "CV, ensemble of both (2-view flip TTA)" "$(overall $out/cv_ensemble.txt)"
printf '%-44s %s\n' "CV after tweak_thresholds (its own figure)" "$(awk '/^CV after tuning/ { print $4 }' $out/tweak.txt)"
printf '%-44s %s\n' "CV after tweak_thresholds (cross_validate)" "$(overall $out/cv_tuned.txt)"
printf '%-44s %s\n' "test metric, 10 fold models, tuned" "$(overall $out/test.txt)"
echo "pretraining ${pretrain_s} s, training ${train_s} s, cross-validation + tweaking + test ${infer_s} s, whole run $(( $(date +%s) - start )) s"
echo "submission: $out/submission.csv   OOF: $out/oof.bin   tuned post-processing: $out/postproc_tuned.toml"
