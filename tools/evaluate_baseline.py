"""Whole-process baselines of the `evaluate` example (timed by tools/bench_evaluate.py).

usage: evaluate_baseline.py pycocotools|faster GT_JSON RESULTS_JSON IOU_TYPE MAX_DETS
           COCOeval (pycocotools, or faster-coco-eval's COCOeval_faster) evaluate + accumulate + summarize;
           prints the 12 stats as JSON on the last line.
       evaluate_baseline.py competition TRUTH_CSV SUBMISSION_CSV
           the competition metric (pycocotools iou + numpy matching per image, mean over images, as
           SEED.md §6 describes it); prints the overall score as JSON on the last line.
"""
import contextlib
import csv
import io
import json
import sys

import numpy as np


def coco(lib, gt, res, iou_type, max_dets):
    if lib == "faster":
        from faster_coco_eval import COCO, COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(gt)
        d = g.loadRes(res)
        ev = COCOeval(g, d, iou_type)
        ev.params.maxDets = [int(x) for x in max_dets.split(",")]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    print(json.dumps([float(x) for x in ev.stats]))


def kaggle_to_coco(s, h, w):
    from pycocotools import mask as mask_util
    img = np.zeros(h * w, dtype=np.uint8)
    v = s.split()
    for lo, ln in zip(np.asarray(v[0::2], dtype=int) - 1, np.asarray(v[1::2], dtype=int)):
        img[lo:lo + ln] = 1
    return mask_util.encode(np.asfortranarray(img.reshape(h, w)))


def competition(truth_csv, sub_csv):
    from pycocotools import mask as mask_util
    truth, sizes = {}, {}
    with open(truth_csv) as f:
        for r in csv.DictReader(f):
            sizes[r["id"]] = (int(r["height"]), int(r["width"]))
            truth.setdefault(r["id"], []).append(r["annotation"])
    pred = {k: [] for k in truth}
    with open(sub_csv) as f:
        for r in csv.DictReader(f):
            if r["predicted"]:
                pred[r["id"]].append(r["predicted"])
    scores = []
    for k, rles in truth.items():
        h, w = sizes[k]
        t = [kaggle_to_coco(s, h, w) for s in rles]
        p = [kaggle_to_coco(s, h, w) for s in pred[k]]
        iou = np.asarray(mask_util.iou(t, p, [0] * len(p))).reshape(len(t), len(p)) if p else np.zeros((len(t), 0))
        prec = []
        for th in np.arange(0.5, 1.0, 0.05):
            m = iou > th
            tp = np.sum(m.sum(1) == 1)
            fp = np.sum(m.sum(0) == 0) + np.sum(m.sum(1) > 1)
            fn = np.sum(m.sum(1) == 0)
            prec.append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
        scores.append(np.mean(prec))
    print(json.dumps(float(np.mean(scores))))


if __name__ == "__main__":
    if sys.argv[1] == "competition":
        competition(*sys.argv[2:4])
    else:
        coco(*sys.argv[1:6])
