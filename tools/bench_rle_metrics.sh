#!/usr/bin/env bash
# Benchmarks of cellseg-rle and cellseg-metrics against their Python baselines, in one command:
# writes the inputs and times numpy / pycocotools (tools/rle_bench.py, tools/metrics_bench.py), runs the
# criterion benches on the same inputs, and prints both timings and the ratio Python / Rust.
# Needs .venv (make test) and ../shared/realdata. Release build (cargo bench).
set -euo pipefail
cd "$(dirname "$0")/.."
REAL=${REALDATA:-../shared/realdata}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# Criterion's estimates go to a fresh folder of this run, read back below. (Left to itself, criterion
# resolves a relative CARGO_TARGET_DIR from the bench crate's folder, and the table read stale files.)
export CRITERION_HOME="$OUT/criterion"
echo "== load average at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)" >&2
echo "== Python baselines (numpy, pycocotools $(.venv/bin/python -c 'import pycocotools; print(getattr(pycocotools, "__version__", "2.x"))'))" >&2
.venv/bin/python tools/rle_bench.py "$REAL" "$OUT"
.venv/bin/python tools/metrics_bench.py "$REAL" "$OUT"
echo "== criterion" >&2
CELLSEG_BENCH_DIR="$OUT" cargo bench -p cellseg-rle --bench rle -- --noplot >&2
CELLSEG_BENCH_DIR="$OUT" cargo bench -p cellseg-metrics --bench metrics -- --noplot >&2
.venv/bin/python - "$OUT" "$CRITERION_HOME" <<'PY'
import json, os, sys
out, crit = sys.argv[1:3]
py = json.load(open(os.path.join(out, "rle_python.json")))
py.update(json.load(open(os.path.join(out, "metrics_python.json"))))
n = py["n_masks"]
m = py["competition_images"]
def rust(path):
    est = json.load(open(os.path.join(crit, path, "new", "estimates.json")))
    return est["mean"]["point_estimate"] * 1e-9
rows = [
    ("Kaggle RLE decode+encode, %d masks (full bitmaps)" % n, f"kaggle_decode_encode/full/{n}", "kaggle_decode_encode", "numpy (seed rle_decode/rle_encode)"),
    ("Kaggle RLE decode+encode, %d masks (cropped)" % n, f"kaggle_decode_encode/cropped/{n}", "kaggle_decode_encode", "numpy (seed rle_decode/rle_encode)"),
    ("COCO RLE encode, %d full masks" % n, f"coco_encode/full/{n}", "coco_encode", "pycocotools encode"),
    ("COCO RLE encode, %d cropped masks" % n, f"coco_encode/cropped/{n}", "coco_encode", "pycocotools encode"),
    ("COCO RLE decode, %d masks to full bitmaps" % n, f"coco_decode/full/{n}", "coco_decode", "pycocotools decode"),
    ("COCO RLE decode, %d masks to cropped masks" % n, f"coco_decode/cropped/{n}", "coco_decode", "pycocotools decode"),
    ("COCO RLE IoU %dx%d, from counts strings (CocoBatch)" % (n, n), f"coco_iou/from_strings/{n}", "coco_iou", "pycocotools iou"),
    ("COCO RLE IoU %dx%d, strings via CocoRle" % (n, n), f"coco_iou/from_strings_cocorle/{n}", "coco_iou", "pycocotools iou"),
    ("COCO RLE IoU %dx%d, parsed counts" % (n, n), f"coco_iou/parsed/{n}", "coco_iou", "pycocotools iou"),
    ("competition metric, %d Sartorius images (1 thread)" % m, f"competition/all_images/{m}", "competition_all", "pycocotools iou + numpy"),
    ("competition metric, %d images, rayon (all cores)" % m, f"competition/all_images_rayon/{m}", "competition_all", "pycocotools iou + numpy (1 thread)"),
    ("competition metric, %d images, full IoU matrix" % m, f"competition/all_images_full_matrix/{m}", "competition_all", "pycocotools iou + numpy"),
    ("competition metric, %d images, via CocoRle values" % m, f"competition/all_images_cocorle/{m}", "competition_all", "pycocotools iou + numpy"),
    ("COCOeval segm, p890040_val_cort_3 (40 images)", "cocoeval/segm/p890040_val_cort_3", "cocoeval_p890040_val_cort_3", "pycocotools COCOeval"),
    ("COCOeval segm, LIVECell val (5 images, maxDets 2000)", "cocoeval/segm/livecell_val", "cocoeval_livecell_val", "pycocotools COCOeval"),
]
print(f"{'operation':<52} {'Rust':>10} {'Python':>10} {'ratio':>8}  baseline")
for name, rpath, pkey, base in rows:
    r, p = rust(rpath), py[pkey]
    print(f"{name:<52} {r*1e3:>8.3f}ms {p*1e3:>8.2f}ms {p/r:>7.1f}x  {base}")
print("load average at end: " + " ".join(open("/proc/loadavg").read().split()[:3]))
print(f"(Python competition mean {py['competition_mean']:.6f}; COCOeval AP {py['cocoeval_p890040_val_cort_3_ap']:.6f} / {py['cocoeval_livecell_val_ap']:.6f})")
PY
