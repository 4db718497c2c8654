#!/usr/bin/env python3
"""Python baselines of the cellseg-rle benches (run by tools/bench_rle_metrics.sh).

usage: rle_bench.py REALDATA_DIR OUT_DIR

Writes the bench inputs (the 395 real masks of Sartorius image 0030fd0e6378) to OUT_DIR/rle_inputs.json and the
seconds per operation to OUT_DIR/rle_python.json:
  kaggle_decode_encode  numpy rle_decode + rle_encode of the seed (src/utils/rle.py), all masks of the image
  coco_encode           pycocotools encode of the H x W x n Fortran array
  coco_decode           pycocotools decode of the n RLE dicts
  coco_iou              pycocotools iou(rles, rles, [0] * n) on the compressed dicts
"""
import csv
import json
import os
import sys
import time

import numpy as np
from pycocotools import mask as mask_util

IMAGE = "0030fd0e6378"


def rle_decode(mask_rle, shape):
    s = mask_rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends):
        img[lo:hi] = 1
    return img.reshape(shape)


def rle_encode(img):
    pixels = img.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    realdata, out_dir = sys.argv[1:3]
    strings, h, w = [], 0, 0
    with open(os.path.join(realdata, "sartorius/train_subset.csv")) as f:
        for r in csv.DictReader(f):
            if r["id"] == IMAGE:
                strings.append(r["annotation"])
                h, w = int(r["height"]), int(r["width"])
    masks = np.stack([rle_decode(s, (h, w)) for s in strings], axis=2)
    fortran = np.asfortranarray(masks)
    rles = mask_util.encode(fortran)
    with open(os.path.join(out_dir, "rle_inputs.json"), "w") as f:
        json.dump({"height": h, "width": w, "kaggle": strings,
                   "coco": [r["counts"].decode("ascii") for r in rles]}, f)
    times = {
        "kaggle_decode_encode": best_of(lambda: [rle_encode(rle_decode(s, (h, w))) for s in strings], 3),
        "coco_encode": best_of(lambda: mask_util.encode(fortran), 5),
        "coco_decode": best_of(lambda: mask_util.decode(rles), 5),
        "coco_iou": best_of(lambda: mask_util.iou(rles, rles, [0] * len(rles)), 5),
    }
    times["n_masks"] = len(strings)
    with open(os.path.join(out_dir, "rle_python.json"), "w") as f:
        json.dump(times, f)


if __name__ == "__main__":
    main()
