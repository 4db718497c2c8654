"""Reference numbers for cellseg-postproc's parity tests, from real ground truth.

Usage: postproc_reference.py REALDATA_DIR OUT_JSON [--bench N]

Reads Sartorius (train_subset.csv, COCO annotations) and LIVECell ground truth, turns the instances into
predictions (each instance copied, shifted by a few pixels, blurred into a soft uint8 mask, given a
random score and a mostly-correct cell-type label), runs the seed's post-processing
(tools/postproc_seed.py: numpy + pycocotools + opencv + torch) and writes inputs and expected outputs.
Also writes, for many real (and some random) binary masks, OpenCV's contours, the astro corruption
(findContours + fillConvexPoly) and scipy's binary_fill_holes.

Masks are exchanged as Kaggle RLE strings (row-major, 1-based) of the full image; soft masks as the
hex bytes of their non-zero rectangle.
"""

import ast
import csv
import json
import os
import sys

import cv2
import numpy as np
from pycocotools import mask as mask_util

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import postproc_seed as seed  # noqa: E402

H, W = 520, 704
TYPES = ["shsy5y", "astro", "cort"]


def sartorius_images(root):
    by_id = {}
    with open(os.path.join(root, "sartorius", "train_subset.csv")) as f:
        for row in csv.DictReader(f):
            by_id.setdefault(row["id"], (row["cell_type"], []))[1].append(row["annotation"])
    out = []
    for image_id, (cell, rles) in sorted(by_id.items()):
        masks = [seed.kaggle_decode(r, (H, W)).astype(bool) for r in rles]
        out.append((image_id, TYPES.index(cell), masks))
    return out


def coco_astro_images(root, count):
    path = os.path.join(root, "sartorius", "annotations", "coco", "p890040_val_astro_2.json")
    with open(path) as f:
        d = json.load(f)
    by_image = {}
    for a in d["annotations"]:
        seg = a["segmentation"]
        if isinstance(seg, str):
            seg = ast.literal_eval(seg)
        if isinstance(seg["counts"], str):
            seg = {"size": seg["size"], "counts": seg["counts"].encode()}
        by_image.setdefault(a["image_id"], []).append(mask_util.decode(seg).astype(bool))
    ids = sorted(by_image)[:count]
    return [("astro_" + i, 1, by_image[i]) for i in ids]


def livecell_images(root, count):
    path = os.path.join(root, "livecell", "livecell_coco_val_subset.json")
    with open(path) as f:
        d = json.load(f)
    by_image = {}
    for a in d["annotations"]:
        rles = mask_util.frPyObjects(a["segmentation"], H, W)
        by_image.setdefault(a["image_id"], []).append(mask_util.decode(mask_util.merge(rles)).astype(bool))
    ids = sorted(by_image)[:count]
    # LIVECell lines are not Sartorius types; give each image a type so every branch is exercised.
    return [("livecell_%d" % i, k % 3, by_image[i]) for k, i in enumerate(ids)]


def shifted(mask, dy, dx):
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    ys, xs = ys + dy, xs + dx
    ok = (ys >= 0) & (ys < mask.shape[0]) & (xs >= 0) & (xs < mask.shape[1])
    out[ys[ok], xs[ok]] = True
    return out


def predictions(masks, cell, rng, copies):
    """Soft uint8 masks [n, H, W], boxes [n, 6] from ground-truth masks."""
    soft, boxes = [], []
    for m in masks:
        if not m.any():
            continue
        ys, xs = np.nonzero(m)
        t, l = max(ys.min() - 16, 0), max(xs.min() - 16, 0)
        b, r = min(ys.max() + 17, m.shape[0]), min(xs.max() + 17, m.shape[1])
        crop = m[t:b, l:r]
        for _ in range(copies):
            dy, dx = rng.integers(-3, 4, size=2)
            s = shifted(crop, int(dy), int(dx)).astype(np.float32)
            sigma = float(rng.uniform(0.6, 1.8))
            p = cv2.GaussianBlur(s, (0, 0), sigma) * float(rng.uniform(0.85, 1.0))
            u8 = np.zeros(m.shape, dtype=np.uint8)
            u8[t:b, l:r] = np.floor(np.clip(p, 0, 1) * 255).astype(np.uint8)
            ys, xs = np.nonzero(u8)
            if len(ys) == 0:
                continue
            label = cell if rng.random() < 0.8 else int(rng.integers(0, 3))
            score = float(np.float32(rng.uniform(0.05, 1.0)))
            soft.append(u8)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, score, label])
    return np.array(soft, dtype=np.uint8).reshape(-1, H, W), np.array(boxes, dtype=np.float64).reshape(-1, 6)


def soft_json(u8):
    ys, xs = np.nonzero(u8)
    t, l, b, r = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    return {"rect": [int(t), int(l), int(b - t), int(r - l)], "hex": u8[t:b, l:r].tobytes().hex()}


def box_nms(boxes, thr):
    """torchvision's greedy NMS (IoU > thr suppresses), single-class and per label."""
    import torch
    from torchvision.ops import boxes as tvb

    b = torch.tensor(boxes[:, :4], dtype=torch.float32)
    s = torch.tensor(boxes[:, 4], dtype=torch.float32)
    labels = torch.tensor(boxes[:, 5].astype(np.int64))
    return {
        "threshold": thr,
        "single": tvb.nms(b, s, thr).tolist(),
        "batched": tvb._batched_nms_vanilla(b, s, labels, thr).tolist(),
    }


def image_case(name, cell, masks, rng, copies):
    soft, boxes = predictions(masks, cell, rng, copies)
    idx, out, voted = seed.process_image(boxes, soft, seed.SEED_CONFIG)
    return {
        "box_nms": [box_nms(boxes, t) for t in (0.3, 0.5, 0.7)],
        "id": name,
        "height": H,
        "width": W,
        "boxes": boxes[:, :4].tolist(),
        "scores": [float(s) for s in boxes[:, 4]],
        "labels": [int(v) for v in boxes[:, 5]],
        "soft": [soft_json(u) for u in soft],
        "expected": {
            "cell": voted,
            "indices": [int(i) for i in idx],
            "rles": [seed.kaggle_rle(m) for m in out],
        },
    }


def shape_case(mask):
    mask = mask.astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    every, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return {
        "contours_none": [c.reshape(-1).tolist() for c in every],
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "mask": seed.kaggle_rle(mask),
        "corrupt": seed.kaggle_rle(seed.corrupt_mask(mask)),
        "filled": seed.kaggle_rle(seed.fill_holes(mask)),
        "contours": [c.reshape(-1).tolist() for c in contours],
    }


def random_shapes(rng, n):
    out = []
    for k in range(n):
        m = np.zeros((H, W), dtype=bool)
        size = int(rng.integers(8, 48))
        p = float(rng.uniform(0.3, 0.8))
        blob = rng.random((size, size)) < p
        if k % 3 == 0:  # smoother blobs with holes
            blob = cv2.GaussianBlur(blob.astype(np.float32), (0, 0), 1.0) > 0.5
        # Some touch the image border.
        t = 0 if k % 5 == 0 else int(rng.integers(0, H - size))
        l = W - size if k % 7 == 0 else int(rng.integers(0, W - size))
        m[t:t + size, l:l + size] = blob
        out.append(m)
    return out


def main():
    root, out_path = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    sart = sartorius_images(root)
    astro = coco_astro_images(root, 2)
    live = livecell_images(root, 2)

    images = [image_case(n, c, m, rng, 2) for n, c, m in sart + astro + live]

    shapes = []
    for _, _, masks in sart + astro[:1] + live[:1]:
        shapes.extend(shape_case(m) for m in masks)
    # Binarised predictions: rougher outlines than the annotations.
    soft, _ = predictions(astro[1][2][:60], 1, rng, 1)
    shapes.extend(shape_case(s > 0.45 * 255) for s in soft)
    shapes.extend(shape_case(m) for m in random_shapes(rng, 60))

    with open(out_path, "w") as f:
        json.dump({"images": images, "shapes": shapes}, f)
    print(f"wrote {len(images)} images, {len(shapes)} shapes to {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
