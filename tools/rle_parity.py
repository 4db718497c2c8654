#!/usr/bin/env python3
"""Reference values for the cellseg-rle parity tests, computed with pycocotools and numpy.

usage: rle_parity.py REALDATA_DIR REPO_DIR OUT_DIR

Writes OUT_DIR/coco_<file>.json for every COCO file under REALDATA_DIR (sartorius/annotations/coco/*.json,
livecell/*.json): for each annotation the pycocotools `annToRLE` counts string, `area` and `toBbox`; for a
few images per file the `iou` matrix of all its annotations against themselves with mixed iscrowd flags.
Writes OUT_DIR/dsb.json (numpy column-major decode of the DSB CSV re-encoded row-major) and
OUT_DIR/kaggle.json (numpy row-major decode of sartorius/train_subset.csv encoded by pycocotools).
"""
import csv
import glob
import json
import os
import sys

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

IOU_IMAGES_PER_FILE = 4


def kaggle_encode(img):
    """Row-major, 1-based 'start length' (the seed's rle_encode)."""
    pixels = np.concatenate([[0], img.flatten(order="C"), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def decode_start_length(s, h, w, order):
    flat = np.zeros(h * w, dtype=np.uint8)
    v = np.asarray(s.split(), dtype=np.int64)
    for a, n in zip(v[0::2] - 1, v[1::2]):
        flat[a:a + n] = 1
    return flat.reshape((h, w), order=order)


def as_str(counts):
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def coco_file(path, out_dir):
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    anns = []
    for img_id in sorted(coco.getImgIds()):
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])):
            rle = coco.annToRLE(ann)
            anns.append({
                "id": ann["id"],
                "counts": as_str(rle["counts"]),
                "area": int(mask_util.area(rle)),
                "bbox": [float(x) for x in mask_util.toBbox(rle)],
            })
    ious = []
    for img_id in sorted(coco.getImgIds())[:IOU_IMAGES_PER_FILE]:
        ids = coco.getAnnIds(imgIds=[img_id])
        rles = [coco.annToRLE(a) for a in coco.loadAnns(ids)]
        if not rles:
            continue
        crowd = [int(i % 3 == 0) for i in range(len(rles))]
        m = mask_util.iou(rles, rles, crowd)
        ious.append({"image_id": img_id, "ann_ids": ids, "iscrowd": crowd,
                     "iou": np.asarray(m, dtype=np.float64).reshape(-1).tolist()})
    # merge (union and intersection) of the first masks of the first image
    first = [coco.annToRLE(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=[sorted(coco.getImgIds())[0]]))[:6]]
    merges = {
        "ann_ids": coco.getAnnIds(imgIds=[sorted(coco.getImgIds())[0]])[:6],
        "union": as_str(mask_util.merge(first, intersect=False)["counts"]),
        "intersection": as_str(mask_util.merge(first[:2], intersect=True)["counts"]),
    }
    name = os.path.splitext(os.path.basename(path))[0]
    with open(os.path.join(out_dir, f"coco_{name}.json"), "w") as f:
        json.dump({"file": path, "annotations": anns, "ious": ious, "merges": merges}, f)


def main():
    realdata, repo, out_dir = sys.argv[1:4]
    files = sorted(glob.glob(os.path.join(realdata, "sartorius/annotations/coco/*.json")))
    files += sorted(glob.glob(os.path.join(realdata, "livecell/*.json")))
    for path in files:
        coco_file(path, out_dir)

    rows = []
    with open(os.path.join(repo, "tests/data/dsb2018_stage1_test/stage1_solution_subset.csv")) as f:
        for r in csv.DictReader(f):
            h, w = int(r["Height"]), int(r["Width"])
            m = decode_start_length(r["EncodedPixels"], h, w, order="F")
            rows.append({"id": r["ImageId"], "kaggle": kaggle_encode(m), "area": int(m.sum())})
    with open(os.path.join(out_dir, "dsb.json"), "w") as f:
        json.dump(rows, f)

    rows = []
    with open(os.path.join(realdata, "sartorius/train_subset.csv")) as f:
        for r in csv.DictReader(f):
            h, w = int(r["height"]), int(r["width"])
            m = decode_start_length(r["annotation"], h, w, order="C")
            rle = mask_util.encode(np.asfortranarray(m))
            rows.append({"id": r["id"], "coco": rle["counts"].decode("ascii"), "area": int(m.sum()),
                         "kaggle": kaggle_encode(m)})
    with open(os.path.join(out_dir, "kaggle.json"), "w") as f:
        json.dump(rows, f)
    print(f"wrote {len(files)} COCO references to {out_dir}")


if __name__ == "__main__":
    main()
