#!/usr/bin/env python
"""Reference mask decodes for cellseg-data's reader tests (run from .venv at test time).

Each instance mask is summarised by exact integer moments of its set pixels, with the row-major
pixel index i = row * W + col: [area, sum(i), sum(i*i)] (uint64, exact for these sizes). The Rust
test computes the same numbers from its own decode and compares them.

  data_reference.py sartorius CSV OUT [--fill]      numpy row-major decode (seed rle_decode),
                                                    optional scipy binary_fill_holes; per id, sorted
  data_reference.py coco JSON OUT [--max-images N]  pycocotools COCO.annToMask per annotation
  data_reference.py coco-list LIST OUT [--max-images N]  the same for each JSON path listed in LIST
                                                    (one per line); OUT is {path: {image: [...]}}
  data_reference.py dsb CSV OUT                     numpy column-major decode (Fortran order)
  data_reference.py labels TIF OUT                  tifffile label image, one mask per non-zero id
OUT is JSON: {image_key: [[area, s1, s2], ...]} in the annotation order of the source file.
"""
import csv
import json
import sys
from collections import OrderedDict, defaultdict

import numpy as np


def moments(mask: np.ndarray) -> list:
    idx = np.flatnonzero(mask.reshape(-1)).astype(np.uint64)  # C order: row * W + col
    return [int(idx.size), int(idx.sum(dtype=np.uint64)), int((idx * idx).sum(dtype=np.uint64))]


def rle_decode(rle: str, shape, order: str) -> np.ndarray:
    s = rle.split()
    starts = np.asarray(s[0::2], dtype=int) - 1
    lengths = np.asarray(s[1::2], dtype=int)
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, n in zip(starts, lengths):
        flat[lo:lo + n] = 1
    return flat.reshape(shape, order=order)


def sartorius(path: str, fill: bool) -> dict:
    from scipy.ndimage import binary_fill_holes

    rows = defaultdict(list)
    for r in csv.DictReader(open(path)):
        rows[r["id"]].append(r)
    out = OrderedDict()
    for image_id in sorted(rows):
        ms = []
        for r in rows[image_id]:
            m = rle_decode(r["annotation"], (int(r["height"]), int(r["width"])), "C")
            if fill:
                m = binary_fill_holes(m).astype(np.uint8)
            ms.append(moments(m))
        out[image_id] = ms
    return out


def dsb(path: str) -> dict:
    rows = defaultdict(list)
    for r in csv.DictReader(open(path)):
        rows[r["ImageId"]].append(r)
    return OrderedDict(
        (image_id, [moments(rle_decode(r["EncodedPixels"], (int(r["Height"]), int(r["Width"])), "F"))
                    for r in rows[image_id]])
        for image_id in sorted(rows)
    )


def coco(path: str, max_images: int) -> dict:
    from pycocotools.coco import COCO

    d = json.load(open(path))
    if isinstance(d.get("annotations"), dict):  # LIVECell quirk
        d["annotations"] = list(d["annotations"].values())
    c = COCO()
    c.dataset = d
    c.createIndex()
    out = OrderedDict()
    by_image = defaultdict(list)
    for a in d["annotations"]:
        by_image[a["image_id"]].append(a)
    for im in d["images"][:max_images]:
        out[str(im["id"])] = [moments(c.annToMask(a)) for a in by_image[im["id"]]]
    return out


def labels(path: str) -> dict:
    import tifffile

    lab = tifffile.imread(path)
    ids = [int(v) for v in np.unique(lab) if v != 0]
    return OrderedDict([("ids", [[i] for i in ids]), ("masks", [moments(lab == i) for i in ids])])


def main() -> None:
    kind, src, dst = sys.argv[1:4]
    rest = sys.argv[4:]
    if kind == "sartorius":
        out = sartorius(src, "--fill" in rest)
    elif kind == "dsb":
        out = dsb(src)
    elif kind == "coco":
        n = int(rest[rest.index("--max-images") + 1]) if "--max-images" in rest else 1 << 30
        out = coco(src, n)
    elif kind == "coco-list":
        n = int(rest[rest.index("--max-images") + 1]) if "--max-images" in rest else 1 << 30
        out = {p: coco(p, n) for p in open(src).read().splitlines() if p}
    elif kind == "labels":
        out = labels(src)
    else:
        raise SystemExit(f"unknown kind {kind}")
    with open(dst, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
