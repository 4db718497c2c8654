#!/usr/bin/env python3
"""Reference numbers for the cellseg-metrics parity tests (pycocotools COCOeval and an independent
numpy + pycocotools implementation of the competition metric).

usage: metrics_parity.py REALDATA_DIR OUT_DIR

COCOeval part, for every COCO file under REALDATA_DIR (sartorius/annotations/coco/*.json, livecell/*.json):
  * OUT_DIR/<name>/gt.json       the file restricted to a few images (all of its categories kept)
  * OUT_DIR/<name>/segm.json     perturbed masks as results: compressed RLE, no bbox (loadRes segm branch)
  * OUT_DIR/<name>/bbox.json     perturbed boxes as results, no segmentation (loadRes bbox branch)
  * OUT_DIR/<name>/both.json     masks and boxes (bbox branch: areas are box areas, also for segm);
                                 evaluated for the files in BOTH_FILES only (Python time)
  * OUT_DIR/<name>/expected.json COCOeval stats, precision and recall for (segm, segm.json),
                                 (bbox, bbox.json), (segm, both.json); maxDets [100, 500, 2000] for LIVECell,
                                 the default [1, 10, 100] for Sartorius.
Perturbations (seeded): masks dropped, shifted, eroded, dilated, false positives added (copies moved
elsewhere), scores random with ties (rounded to 0.05).

Competition part:
  * OUT_DIR/competition/truth.csv   train_subset.csv plus images of p890040_val_3.json in train.csv layout
  * OUT_DIR/competition/submission.csv  perturbed predictions (id,predicted), one image with no mask
  * OUT_DIR/competition/expected.json   per-image scores, overall mean, per cell type
"""
import contextlib
import csv
import io
import json
import os
import sys

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

IMAGES_PER_FILE = {"livecell": 1, "sartorius": 2}
# The (segm, both.json) run is costly in Python; it runs on these files only.
BOTH_FILES = {"p890040_val_3", "livecell_coco_val_subset"}
THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def quiet():
    return contextlib.redirect_stdout(io.StringIO())


def shift(m, dy, dx):
    out = np.zeros_like(m)
    h, w = m.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = m[ys, xs]
    return out


def erode(m):
    e = m.copy()
    e[1:, :] &= m[:-1, :]
    e[:-1, :] &= m[1:, :]
    e[:, 1:] &= m[:, :-1]
    e[:, :-1] &= m[:, 1:]
    return e


def dilate(m):
    d = m.copy()
    d[1:, :] |= m[:-1, :]
    d[:-1, :] |= m[1:, :]
    d[:, 1:] |= m[:, :-1]
    d[:, :-1] |= m[:, 1:]
    return d


def perturb(masks, rng):
    """Returns a list of perturbed masks (drops, shifts, erosions, dilations, added false positives)."""
    out = []
    for m in masks:
        u = rng.random()
        if u < 0.1:
            continue
        if u < 0.4:
            m = shift(m, int(rng.integers(-3, 4)), int(rng.integers(-3, 4)))
        elif u < 0.6:
            m = erode(m)
        elif u < 0.7:
            m = dilate(m)
        if m.any():
            out.append(m)
    for m in masks[: max(1, len(masks) // 10)]:
        fp = shift(m, int(rng.integers(-60, 61)), int(rng.integers(-60, 61)))
        if fp.any():
            out.append(fp)
    return out


def as_str(c):
    return c.decode("ascii") if isinstance(c, bytes) else c


def coco_part(path, kind, out_root, rng):
    name = os.path.splitext(os.path.basename(path))[0]
    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    with open(path) as f:
        data = json.load(f)
    with quiet():
        coco = COCO(path)
    img_ids = sorted(coco.getImgIds())
    step = max(1, len(img_ids) // IMAGES_PER_FILE[kind])
    keep = set(img_ids[::step][: IMAGES_PER_FILE[kind]])
    gt = dict(data)
    gt["images"] = [im for im in data["images"] if im["id"] in keep]
    gt["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    gt_path = os.path.join(out_dir, "gt.json")
    with open(gt_path, "w") as f:
        json.dump(gt, f)
    segm, bbox, both = [], [], []
    for img_id in sorted(keep):
        info = coco.imgs[img_id]
        for cat in sorted(coco.getCatIds()):
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], catIds=[cat]))
            masks = [coco.annToMask(a).astype(bool) for a in anns]
            for m in perturb(masks, rng):
                rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
                score = float(np.round(rng.random() * 20) / 20)
                counts = as_str(rle["counts"])
                box = [float(x) for x in mask_util.toBbox(rle)]
                jitter = [box[0] + float(rng.normal(0, 1)), box[1] + float(rng.normal(0, 1)),
                          max(1.0, box[2] + float(rng.normal(0, 1.5))), max(1.0, box[3] + float(rng.normal(0, 1.5)))]
                seg = {"size": [info["height"], info["width"]], "counts": counts}
                segm.append({"image_id": img_id, "category_id": cat, "segmentation": seg, "score": score})
                bbox.append({"image_id": img_id, "category_id": cat, "bbox": jitter, "score": score})
                both.append({"image_id": img_id, "category_id": cat, "segmentation": seg, "bbox": box, "score": score})
    max_dets = [100, 500, 2000] if kind == "livecell" else [1, 10, 100]
    expected = {"max_dets": max_dets, "runs": []}
    runs = [("segm", segm), ("bbox", bbox)] + ([("segm", both)] if name in BOTH_FILES else [])
    for iou_type, res in runs:
        res_name = {id(segm): "segm.json", id(bbox): "bbox.json", id(both): "both.json"}[id(res)]
        res_path = os.path.join(out_dir, res_name)
        with open(res_path, "w") as f:
            json.dump(res, f)
        with quiet():
            cgt = COCO(gt_path)
            cdt = cgt.loadRes(res_path)
            ev = COCOeval(cgt, cdt, iou_type)
            ev.params.maxDets = max_dets
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        expected["runs"].append({
            "iou_type": iou_type, "results": res_name,
            "stats": [float(x) for x in ev.stats],
            "precision": ev.eval["precision"].reshape(-1).tolist(),
            "recall": ev.eval["recall"].reshape(-1).tolist(),
        })
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f)


# ---------------------------------------------------------------- competition metric (independent)

def kaggle_decode(s, h, w):
    flat = np.zeros(h * w, dtype=np.uint8)
    v = np.asarray(s.split(), dtype=np.int64)
    for a, n in zip(v[0::2] - 1, v[1::2]):
        flat[a:a + n] = 1
    return flat.reshape((h, w))


def kaggle_encode(img):
    pixels = np.concatenate([[0], img.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def precision_at(t, iou):
    """The seed's counting: iou is [truth, pred]; match when iou > t."""
    matches = iou > t
    hits = matches.sum(axis=1)
    tp = int((hits == 1).sum())
    fn = int((hits == 0).sum())
    fp = int((matches.sum(axis=0) == 0).sum()) + int((hits > 1).sum())
    return tp, fp, fn


def image_score(truth_masks, pred_masks):
    if len(truth_masks) == 0 and len(pred_masks) == 0:
        return 1.0
    if len(truth_masks) == 0 or len(pred_masks) == 0:
        iou = np.zeros((len(truth_masks), len(pred_masks)))
    else:
        enc = lambda ms: [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in ms]
        iou = np.asarray(mask_util.iou(enc(truth_masks), enc(pred_masks), [0] * len(pred_masks)))
    ps = []
    for t in THRESHOLDS:
        tp, fp, fn = precision_at(t, iou)
        ps.append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
    return float(np.mean(ps))


def competition_part(realdata, out_root, rng):
    out_dir = os.path.join(out_root, "competition")
    os.makedirs(out_dir, exist_ok=True)
    truth = {}  # id -> (h, w, cell_type, [rle])
    with open(os.path.join(realdata, "sartorius/train_subset.csv")) as f:
        for r in csv.DictReader(f):
            t = truth.setdefault(r["id"], (int(r["height"]), int(r["width"]), r["cell_type"], []))
            t[3].append(r["annotation"])
    with quiet():
        coco = COCO(os.path.join(realdata, "sartorius/annotations/coco/p890040_val_3.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    for img_id in sorted(coco.getImgIds())[::6][:16]:
        if img_id in truth:
            continue
        info = coco.imgs[img_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        rles = [kaggle_encode(coco.annToMask(a)) for a in anns]
        truth[img_id] = (info["height"], info["width"], names[anns[0]["category_id"]], rles)
    with open(os.path.join(out_dir, "truth.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "annotation", "width", "height", "cell_type", "plate_time", "sample_date", "sample_id",
                    "elapsed_timedelta"])
        for img_id, (h, wd, ct, rles) in truth.items():
            for s in rles:
                w.writerow([img_id, s, wd, h, ct, "", "", "", "0 days 00:19:00"])
    expected = {"images": {}, "per_cell_type": {}}
    with open(os.path.join(out_dir, "submission.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "predicted"])
        for k, (img_id, (h, wd, ct, rles)) in enumerate(truth.items()):
            tm = [kaggle_decode(s, h, wd) for s in rles]
            pm = [] if k == 1 else perturb(tm, rng)
            if pm:
                for m in pm:
                    w.writerow([img_id, kaggle_encode(m)])
            else:
                w.writerow([img_id, ""])
            expected["images"][img_id] = {"cell_type": ct, "score": image_score(tm, pm)}
    scores = [v["score"] for v in expected["images"].values()]
    expected["overall"] = float(np.mean(scores))
    for ct in sorted({v["cell_type"] for v in expected["images"].values()}):
        expected["per_cell_type"][ct] = float(np.mean([v["score"] for v in expected["images"].values()
                                                       if v["cell_type"] == ct]))
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f)


def main():
    realdata, out_root = sys.argv[1:3]
    rng = np.random.default_rng(0)
    files = [("sartorius", os.path.join(realdata, "sartorius/annotations/coco", n))
             for n in sorted(os.listdir(os.path.join(realdata, "sartorius/annotations/coco"))) if n.endswith(".json")]
    files += [("livecell", os.path.join(realdata, "livecell", n))
              for n in sorted(os.listdir(os.path.join(realdata, "livecell"))) if n.endswith(".json")]
    only = sys.argv[3:]  # optional subset of file stems (for quick runs)
    for kind, path in files:
        if only and os.path.splitext(os.path.basename(path))[0] not in only:
            continue
        coco_part(path, kind, out_root, rng)
    competition_part(realdata, out_root, rng)
    print(f"wrote COCOeval references of {len(files)} files and the competition reference to {out_root}")


if __name__ == "__main__":
    main()
