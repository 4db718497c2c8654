#!/usr/bin/env python
"""Python baseline for the loader benchmark: the seed's training pipeline re-done with numpy/cv2
(mmdet is not installed): cv2.imread of each real PNG, precomputed full-image uint8 masks
(SartoriusDataset(precompute_masks=True)), RandomCrop 256 with retry (boxes shifted, clipped,
kept iff x2>x1 & y2>y1, masks cropped), a random h/v flip, FlipPaste on cort, Normalize with the
mmdet mean/std and BGR->RGB, stacking into a [B,3,256,256] float32 batch. One process, as the seed
(NUM_WORKERS=0). Prints PY_CROPS_PER_S=<best of 3 epochs of 64 crops> and PY_CROPS_PER_CPU_S.

Usage: data_bench_baseline.py REALDATA_SARTORIUS_DIR
"""
import csv
import sys
import time
from collections import defaultdict

import cv2
import numpy as np

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def rle_decode(rle, shape):
    s = rle.split()
    starts = np.asarray(s[0::2], dtype=int) - 1
    lengths = np.asarray(s[1::2], dtype=int)
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, n in zip(starts, lengths):
        img[lo:lo + n] = 1
    return img.reshape(shape)


def load(root):
    rows = defaultdict(list)
    for r in csv.DictReader(open(f"{root}/train_subset.csv")):
        rows[r["id"]].append(r)
    items = []
    for i, rs in sorted(rows.items()):
        masks = np.stack([rle_decode(r["annotation"], (520, 704)) for r in rs])
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        label = ["shsy5y", "astro", "cort"].index(rs[0]["cell_type"])
        items.append((f"{root}/train_images/{i}.png", masks, np.array(boxes, np.float32), label))
    return items


def sample(item, rng):
    path, masks, boxes, label = item
    img = cv2.imread(path)
    while True:
        oh, ow = rng.integers(0, 520 - 256 + 1), rng.integers(0, 704 - 256 + 1)
        b = boxes - np.array([ow, oh, ow, oh], np.float32)
        b = np.clip(b, 0, 256)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        if keep.any():
            break
    crop = img[oh:oh + 256, ow:ow + 256]
    m = masks[keep][:, oh:oh + 256, ow:ow + 256]
    b = b[keep]
    u = rng.random()
    if u < 0.25:
        crop, m = crop[:, ::-1], m[:, :, ::-1]
        b = np.stack([256 - b[:, 2], b[:, 1], 256 - b[:, 0], b[:, 3]], 1)
    elif u < 0.5:
        crop, m = crop[::-1], m[:, ::-1]
        b = np.stack([b[:, 0], 256 - b[:, 3], b[:, 2], 256 - b[:, 1]], 1)
    if label == 2 and rng.random() < 0.5:
        f = crop[:, ::-1]
        crop = (0.5 * crop + 0.5 * f).astype(np.uint8)
        m = np.concatenate([m, m[:, :, ::-1]])
        b = np.concatenate([b, np.stack([256 - b[:, 2], b[:, 1], 256 - b[:, 0], b[:, 3]], 1)])
    x = (cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_BGR2RGB).astype(np.float32) - MEAN) / STD
    return x.transpose(2, 0, 1), b, np.ascontiguousarray(m)


def main():
    items = load(sys.argv[1])
    rng = np.random.default_rng(0)
    best = 0.0
    cpu0 = time.process_time()
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(8):
            batch = [sample(items[rng.integers(len(items))], rng) for _ in range(8)]
            np.stack([b[0] for b in batch])
        best = max(best, 64 / (time.perf_counter() - t))
    print(f"PY_CROPS_PER_S={best:.1f}")
    print(f"PY_CROPS_PER_CPU_S={3 * 64 / (time.process_time() - cpu0):.1f}")


if __name__ == "__main__":
    main()
