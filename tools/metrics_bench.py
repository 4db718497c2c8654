#!/usr/bin/env python3
"""Python baselines of the cellseg-metrics benches (run by tools/bench_rle_metrics.sh).

usage: metrics_bench.py REALDATA_DIR OUT_DIR

Inputs written to OUT_DIR (read by the Rust bench through CELLSEG_BENCH_DIR):
  competition.json  every image of the 8 Sartorius COCO files (first file wins for duplicated ids): truth
                    counts strings and predictions = truth masks moved by 0-2 rows and 0-1 columns (done on the
                    counts: exact except for pixels wrapping at the bottom edge), every 10th mask dropped.
  cocoeval_<name>/gt.json, results.json  for p890040_val_cort_3 (maxDets 1,10,100) and livecell val
                    (maxDets 100,500,2000): results = the shifted masks with seeded random scores.
Seconds written to OUT_DIR/metrics_python.json:
  competition_all   the competition metric over all images: pycocotools iou + numpy matching per image
  cocoeval_<name>   COCOeval evaluate + accumulate + summarize (segm), loading excluded
"""
import contextlib
import glob
import io
import json
import os
import sys
import time

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def shifted(counts, h, w, k):
    """The mask moved down by k % 3 rows and right by k % 2 columns, on uncompressed counts."""
    d = (k % 3) + (k % 2) * h
    if d == 0 or len(counts) < 2 or counts[-1] < d or len(counts) % 2 == 0:
        return None
    c = list(counts)
    c[0] += d
    c[-1] -= d
    return c


def to_counts(rle):
    return [int(x) for x in rle_counts(rle)]


def rle_counts(rle):
    # decode the compressed string into counts with pycocotools' own reader (frPyObjects of the dict is
    # the compressed form; reading back counts needs the string codec, done here in Python)
    s = rle["counts"]
    s = s.decode("ascii") if isinstance(s, bytes) else s
    cnts, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = c & 0x20
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    return cnts


def compress(counts, h, w):
    r = mask_util.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return r["counts"].decode("ascii")


def precision_at(t, iou):
    matches = iou > t
    hits = matches.sum(axis=1)
    tp = int((hits == 1).sum())
    fn = int((hits == 0).sum())
    fp = int((matches.sum(axis=0) == 0).sum()) + int((hits > 1).sum())
    return tp, fp, fn


def image_score(truth, pred):
    if len(truth) == 0 or len(pred) == 0:
        iou = np.zeros((len(truth), len(pred)))
    else:
        iou = np.asarray(mask_util.iou(truth, pred, [0] * len(pred)))
    ps = []
    for t in THRESHOLDS:
        tp, fp, fn = precision_at(t, iou)
        ps.append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
    return float(np.mean(ps))


def quiet():
    return contextlib.redirect_stdout(io.StringIO())


def main():
    realdata, out_dir = sys.argv[1:3]
    rng = np.random.default_rng(0)
    times = {}
    # ---- competition metric over every Sartorius COCO image
    images = {}
    for path in sorted(glob.glob(os.path.join(realdata, "sartorius/annotations/coco/*.json"))):
        with quiet():
            coco = COCO(path)
        for img_id in coco.getImgIds():
            if img_id in images:
                continue
            info = coco.imgs[img_id]
            h, w = info["height"], info["width"]
            truth, pred = [], []
            for k, a in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))):
                rle = coco.annToRLE(a)
                counts = to_counts(rle)
                truth.append(compress(counts, h, w))
                s = shifted(counts, h, w, k)
                if k % 10 != 9 and s is not None:
                    pred.append(compress(s, h, w))
            images[img_id] = {"height": h, "width": w, "truth": truth, "pred": pred}
    with open(os.path.join(out_dir, "competition.json"), "w") as f:
        json.dump(images, f)
    dicts = [([{"size": [v["height"], v["width"]], "counts": s} for s in v["truth"]],
              [{"size": [v["height"], v["width"]], "counts": s} for s in v["pred"]]) for v in images.values()]
    t0 = time.perf_counter()
    scores = [image_score(t, p) for t, p in dicts]
    times["competition_all"] = time.perf_counter() - t0
    times["competition_images"] = len(dicts)
    times["competition_mean"] = float(np.mean(scores))
    # ---- COCOeval
    for name, path, max_dets in [
        ("p890040_val_cort_3", os.path.join(realdata, "sartorius/annotations/coco/p890040_val_cort_3.json"), [1, 10, 100]),
        ("livecell_val", os.path.join(realdata, "livecell/livecell_coco_val_subset.json"), [100, 500, 2000]),
    ]:
        d = os.path.join(out_dir, f"cocoeval_{name}")
        os.makedirs(d, exist_ok=True)
        with quiet():
            coco = COCO(path)
        res = []
        for img_id in sorted(coco.getImgIds()):
            info = coco.imgs[img_id]
            h, w = info["height"], info["width"]
            for k, a in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))):
                s = shifted(to_counts(coco.annToRLE(a)), h, w, k)
                if k % 10 != 9 and s is not None:
                    res.append({"image_id": img_id, "category_id": a["category_id"], "score": float(rng.random()),
                                "segmentation": {"size": [h, w], "counts": compress(s, h, w)}})
        with open(os.path.join(d, "results.json"), "w") as f:
            json.dump(res, f)
        with open(path) as f, open(os.path.join(d, "gt.json"), "w") as g:
            g.write(f.read())
        with open(os.path.join(d, "max_dets.json"), "w") as f:
            json.dump(max_dets, f)
        with quiet():
            dt = coco.loadRes(os.path.join(d, "results.json"))
            ev = COCOeval(coco, dt, "segm")
            ev.params.maxDets = max_dets
            t0 = time.perf_counter()
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            times[f"cocoeval_{name}"] = time.perf_counter() - t0
        times[f"cocoeval_{name}_ap"] = float(ev.stats[0])
    with open(os.path.join(out_dir, "metrics_python.json"), "w") as f:
        json.dump(times, f)


if __name__ == "__main__":
    main()
