"""The seed's threshold tweaking (TheoViel/kaggle_sartorius, inference/tweaking.py::tweak_thresholds),
re-written from its documented semantics (SEED.md §4.7, §5, §6) with numpy + pycocotools + opencv on
full-image masks as the seed holds them, plus the inputs it is checked on.

Usage:
  tweak_seed.py gen REALDATA OUT_DIR [--images N] [--seed S]
      Predictions made from the real Sartorius ground truth (train_subset.csv first, then COCO images
      of each type): every truth cell jittered (shifted, eroded or dilated, blurred into a soft uint8
      mask), sometimes twice, random scores, mostly-correct labels, plus extra false positives (shifted
      copies, fragments, blobs). Writes OUT_DIR/truth.csv (train.csv layout) and OUT_DIR/oof.bin in the
      cellseg OOF format v1 (written here independently of the Rust writer, from its documentation).
  tweak_seed.py tweak OOF TRUTH_CSV GRID_TOML OUT_JSON [--images N]
      The seed's tweak on those files: per image the score at every grid point, per predicted cell type
      the mean and its argmax, and the CV weighted by image counts. Scores are written as the hex of
      their IEEE-754 bits (exact), with the time spent.

It is the independent reference of cellseg_postproc::tweak (crates/cellseg-postproc/tests/it) and the
Python baseline of tools/bench_tweak.sh. Not used at run time.
"""

import csv
import json
import os
import struct
import sys
import time
import tomllib

import cv2
import numpy as np
from pycocotools import mask as mask_util

TYPES = ["shsy5y", "astro", "cort"]
H, W = 520, 704
MAGIC = b"CSEG-OOF"


# ----------------------------------------------------------------------------------------------
# The OOF format (crates/cellseg-postproc/src/oof.rs documents it).

def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def write_oof(path, images):
    """images: list of (id, height, width, boxes [n,4] f32, scores [n] f32, labels [n], soft masks as
    (top, left, uint8 [h, w]))."""
    tmp = path + ".tmp-py"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<II", 1, 0))
        for image_id, h, w, boxes, scores, labels, softs in images:
            rec = bytearray(b"I")
            idb = image_id.encode()
            rec += struct.pack("<I", len(idb)) + idb + struct.pack("<III", h, w, len(scores))
            for b, s, lab, (top, left, m) in zip(boxes, scores, labels, softs):
                rec += struct.pack("<5f", *[float(x) for x in b], float(s))
                rec += struct.pack("<5I", int(lab), top, left, m.shape[0], m.shape[1])
                rec += np.ascontiguousarray(m, dtype=np.uint8).tobytes()
            rec += struct.pack("<Q", fnv1a(rec))
            f.write(rec)
        end = b"E" + struct.pack("<Q", len(images))
        f.write(end + struct.pack("<Q", fnv1a(end)))
    os.replace(tmp, path)


def read_oof(path):
    """-> list of (id, height, width, scores f32 [n], labels [n], soft uint8 [n, H, W])."""
    data = open(path, "rb").read()
    assert data[:8] == MAGIC, "not an OOF file"
    version, flags = struct.unpack_from("<II", data, 8)
    assert version == 1 and flags == 0
    pos, out = 16, []
    while True:
        tag = data[pos:pos + 1]
        if tag == b"E":
            break
        assert tag == b"I", "bad record tag at %d" % pos
        (n_id,) = struct.unpack_from("<I", data, pos + 1)
        image_id = data[pos + 5:pos + 5 + n_id].decode()
        p = pos + 5 + n_id
        h, w, n = struct.unpack_from("<III", data, p)
        p += 12
        scores, labels = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.int64)
        soft = np.zeros((n, h, w), dtype=np.uint8)
        for k in range(n):
            vals = struct.unpack_from("<5f5I", data, p)
            scores[k], labels[k] = vals[4], vals[5]
            top, left, mh, mw = vals[6:10]
            p += 40
            soft[k, top:top + mh, left:left + mw] = np.frombuffer(data, np.uint8, mh * mw, p).reshape(mh, mw)
            p += mh * mw
        p += 8  # checksum (the Rust reader checks it)
        out.append((image_id, h, w, scores, labels, soft))
        pos = p
    return out


# ----------------------------------------------------------------------------------------------
# RLE helpers.

def kaggle_rle(mask):
    pixels = np.concatenate([[0], mask.reshape(-1).astype(np.uint8), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def kaggle_decode(rle, shape):
    s = rle.split()
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, ln in zip(np.asarray(s[0::2], dtype=int) - 1, np.asarray(s[1::2], dtype=int)):
        img[lo:lo + ln] = 1
    return img.reshape(shape)


def encode(masks):
    return [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


# ----------------------------------------------------------------------------------------------
# The seed's functions (SEED.md §4.7, §5, §6), on full-image masks.

def mask_nms_multithresh(ious, thresholds):
    """Greedy mask NMS at every threshold: take the first remaining mask; when some IoU of its row
    is > thr (itself, unless empty) keep it and drop every mask of IoU > thr, else drop it."""
    picks = []
    for thr in thresholds:
        remaining, kept = list(range(len(ious))), []
        while remaining:
            idx = remaining[0]
            overlapping = set(np.where(ious[idx] > thr)[0].tolist())
            if overlapping:
                kept.append(idx)
                remaining = [i for i in remaining if i not in overlapping]
            else:
                remaining = remaining[1:]
        picks.append(kept)
    return picks


def remove_small_masks_multisize(masks, min_sizes):
    """Per size the indices with area > size; when none survives, index 0."""
    areas = masks.reshape(len(masks), -1).sum(-1)
    out = []
    for s in min_sizes:
        keep = np.where(areas > s)[0]
        out.append(keep if len(keep) else np.array([0]))
    return out


def corrupt_mask(mask):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    canvas = np.zeros((mask.shape[0], mask.shape[1], 3), dtype=np.uint8)
    for c in contours:
        canvas = cv2.fillConvexPoly(canvas, points=c, color=(1, 1, 1))
    return canvas[:, :, 0].astype(bool)


def remove_overlap_naive(masks, ious):
    """masks sorted by confidence, ious their (pre-computed) pairwise IoUs: the masks with a non-zero
    IoU with another one lose the pixels of the original masks of that set before them (a running
    union instead of the seed's re-reduction on the GPU: the same result)."""
    ious = ious.copy()
    np.fill_diagonal(ious, 0)
    to_process = np.where(ious.sum(0) > 0)[0]
    if len(to_process) < 2:
        return masks
    masks = masks.copy()
    union = np.zeros(masks.shape[1:], dtype=bool)
    for i in to_process:
        original = masks[i].copy()
        masks[i] &= ~union
        union |= original
    return masks


def precision_at(threshold, iou):
    matches = iou > threshold
    true_positives = np.sum(matches, axis=1) == 1
    false_positives = np.sum(matches, axis=0) == 0
    false_negatives = np.sum(matches, axis=1) == 0
    multi = np.sum(matches, axis=1) > 1
    return np.sum(true_positives), np.sum(false_positives) + np.sum(multi), np.sum(false_negatives)


def iou_map_one(iou):
    """The seed's iou_map on one image's [n_truth, n_pred] IoU matrix."""
    prec = []
    for t in np.arange(0.5, 1.0, 0.05):
        tp, fp, fn = precision_at(t, iou)
        prec.append(tp / (tp + fp + fn) if tp else 0.0)
    return float(np.mean(prec))


def tweak_image(scores, labels, soft, truth_rles, grid):
    """Scores [mask][nms][size][conf] of one image (flattened) and its predicted cell type."""
    cell = int(np.argmax(np.bincount(labels)))
    n_truth = len(truth_rles)
    out = []
    for thr_mask in grid["mask_thresholds"]:
        order = np.argsort(-scores.astype(np.float64), kind="stable")
        masks = soft[order] > (thr_mask * 255)
        sc = scores[order].astype(np.float64)
        rles = encode(masks)
        ious = np.asarray(mask_util.iou(rles, rles, [0] * len(rles))).reshape(len(rles), len(rles))
        picks_nms = mask_nms_multithresh(ious, grid["nms_thresholds"])
        picks_size = remove_small_masks_multisize(masks, grid["min_sizes"])
        for p_nms in picks_nms:
            for p_size in picks_size:
                picks = sorted(set(p_nms) & set(int(i) for i in p_size))
                ms = masks[picks]
                if grid["corrupt_astro"] and cell == 1:
                    ms = np.array([corrupt_mask(m) for m in ms]).reshape(ms.shape)
                if grid["remove_overlap"] and len(picks):
                    ms = remove_overlap_naive(ms, ious[picks][:, picks])
                if len(picks):
                    iou = np.asarray(mask_util.iou(truth_rles, encode(ms), [0] * len(picks)))
                    iou = iou.reshape(n_truth, len(picks))
                else:
                    iou = np.zeros((n_truth, 0))
                for thr_conf in grid["confidence_thresholds"]:
                    last = int(np.sum(sc[picks] >= thr_conf))
                    out.append(iou_map_one(iou[:, :last]))
    return out, cell


def hexbits(x):
    return struct.pack("<d", x)[::-1].hex()


def tweak(oof_path, truth_path, grid_path, out_path, limit=None):
    grid = dict(mask_thresholds=[0.45], nms_thresholds=[0.05, 0.1, 0.15],
                confidence_thresholds=[0.2 + 0.05 * i for i in range(13)], min_sizes=[0, 50, 75, 100, 150],
                corrupt_astro=True, remove_overlap=True)
    with open(grid_path, "rb") as f:
        grid.update(tomllib.load(f))
    truth = {}
    with open(truth_path) as f:
        for row in csv.DictReader(f):
            truth.setdefault(row["id"], []).append(row["annotation"])
    images = read_oof(oof_path)[:limit]
    start = time.perf_counter()
    per_image = []
    for image_id, h, w, scores, labels, soft in images:
        truth_rles = encode([kaggle_decode(r, (h, w)) for r in truth[image_id]])
        s, cell = tweak_image(scores, labels, soft, truth_rles, grid)
        per_image.append((image_id, cell, s))
    seconds = time.perf_counter() - start
    # [image][point] -> per predicted type: the mean over its images, its argmax; CV weighted by counts.
    scores = np.array([s for _, _, s in per_image])
    cells = np.array([c for _, c, _ in per_image])
    best, total, weight = {}, 0.0, 0
    for c in range(3):
        if not np.any(cells == c):
            continue
        mean = scores[cells == c].mean(0)
        k = int(np.argmax(mean))
        best[TYPES[c]] = {"index": k, "score": float(mean[k]), "images": int(np.sum(cells == c))}
        total += mean[k] * np.sum(cells == c)
        weight += int(np.sum(cells == c))
    result = {
        "seconds": seconds,
        "images": [{"id": i, "cell": c, "scores": [hexbits(x) for x in s]} for i, c, s in per_image],
        "best": best,
        "cv": float(total / weight),
        "points": int(scores.shape[1]),
    }
    with open(out_path, "w") as f:
        json.dump(result, f)
    print("python seed tweak: %d images, %d points each, %.2f s, CV %.6f"
          % (len(per_image), scores.shape[1], seconds, result["cv"]), file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Inputs made from real ground truth.

def truth_images(root, count):
    """(id, type, [full masks]) from train_subset.csv, then COCO images round-robin over the types."""
    out, seen = [], set()
    by_id = {}
    with open(os.path.join(root, "sartorius", "train_subset.csv")) as f:
        for row in csv.DictReader(f):
            by_id.setdefault(row["id"], (row["cell_type"], []))[1].append(row["annotation"])
    for image_id, (cell, rles) in sorted(by_id.items()):
        out.append((image_id, TYPES.index(cell), [kaggle_decode(r, (H, W)).astype(bool) for r in rles]))
        seen.add(image_id)
    coco_dir = os.path.join(root, "sartorius", "annotations", "coco")
    queues = []
    for name, cell in [("p890040_val_shsy5y_1.json", 0), ("p890040_val_astro_2.json", 1),
                       ("p890040_val_cort_3.json", 2), ("p890040_train_astro_2.json", 1),
                       ("p890040_train_cort_3.json", 2)]:
        with open(os.path.join(coco_dir, name)) as f:
            d = json.load(f)
        anns = {}
        for a in d["annotations"]:
            anns.setdefault(a["image_id"], []).append(a["segmentation"])
        queues.append([(i, cell, anns[i]) for i in sorted(anns)])
    # Round-robin over shsy5y, astro, cort (the train_* files extend astro and cort).
    order = [0, 1, 2, 1, 2, 3, 4] * 1000
    pos = [0] * len(queues)
    for q in order:
        if len(out) >= count:
            break
        while pos[q] < len(queues[q]) and queues[q][pos[q]][0] in seen:
            pos[q] += 1
        if pos[q] >= len(queues[q]):
            continue
        image_id, cell, segs = queues[q][pos[q]]
        pos[q] += 1
        seen.add(image_id)
        masks = []
        for seg in segs:
            seg = {"size": seg["size"], "counts": seg["counts"].encode()}
            masks.append(mask_util.decode(seg).astype(bool))
        out.append((image_id, cell, masks))
    return out[:count]


def soft_of(mask, rng):
    """A jittered soft uint8 mask of a binary mask, cropped: (top, left, uint8 [h, w]) or None."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    t, l = max(ys.min() - 12, 0), max(xs.min() - 12, 0)
    b, r = min(ys.max() + 13, H), min(xs.max() + 13, W)
    crop = mask[t:b, l:r].astype(np.uint8)
    dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
    crop = np.roll(crop, (dy, dx), axis=(0, 1))
    k = rng.random()
    if k < 0.25:
        crop = cv2.erode(crop, np.ones((3, 3), np.uint8))
    elif k < 0.5:
        crop = cv2.dilate(crop, np.ones((3, 3), np.uint8))
    p = cv2.GaussianBlur(crop.astype(np.float32), (0, 0), float(rng.uniform(0.6, 1.8)))
    u8 = np.floor(np.clip(p * float(rng.uniform(0.85, 1.0)), 0, 1) * 255).astype(np.uint8)
    ys, xs = np.nonzero(u8)
    if len(ys) == 0:
        return None
    # The soft mask cropped to its non-zero rectangle, as the ensemble pastes it into its box.
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return t + y0, l + x0, u8[y0:y1, x0:x1].copy()


def predictions(masks, cell, rng):
    # Scores: informative but noisy (cells high, duplicates lower, false positives low), so that the
    # best confidence threshold lies inside the grid.
    softs, kinds = [], []
    for m in masks:
        for copy in range(1 if rng.random() < 0.8 else 2):
            s = soft_of(m, rng)
            if s is not None:
                softs.append(s)
                kinds.append(copy)
    # Extra false positives: copies moved far away, fragments (small), random blobs.
    n_fp = int(len(masks) * rng.uniform(0.1, 0.3)) + 2
    for _ in range(n_fp):
        kind = rng.random()
        m = np.zeros((H, W), dtype=bool)
        if kind < 0.4 and masks:
            src = masks[int(rng.integers(len(masks)))]
            m = np.roll(src, (int(rng.integers(-80, 81)), int(rng.integers(-80, 81))), axis=(0, 1))
        elif kind < 0.7 and masks:
            src = masks[int(rng.integers(len(masks)))]
            ys, xs = np.nonzero(src)
            if len(ys):
                cy, cx = int(np.median(ys)), int(np.median(xs))
                m[cy - 6:cy + 6, cx - 5:cx + 5] = src[cy - 6:cy + 6, cx - 5:cx + 5]
        else:
            size = int(rng.integers(6, 30))
            y, x = int(rng.integers(0, H - size)), int(rng.integers(0, W - size))
            m[y:y + size, x:x + size] = rng.random((size, size)) < 0.7
            m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)
        s = soft_of(m, rng)
        if s is not None:
            softs.append(s)
            kinds.append(2)
    order = rng.permutation(len(softs))
    boxes, scores, labels = [], [], []
    for i in order:
        top, left, u8 = softs[i]
        h, w = u8.shape
        boxes.append([left, top, left + w, top + h])
        a, b = [(5.0, 2.0), (2.5, 3.0), (1.5, 4.0)][kinds[i]]
        scores.append(np.float32(0.05 + 0.95 * rng.beta(a, b)))
        labels.append(cell if rng.random() < 0.85 else int(rng.integers(0, 3)))
    softs = [softs[i] for i in order]
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), labels, softs


def gen(root, out_dir, count, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    images, rows = [], []
    for image_id, cell, masks in truth_images(root, count):
        for m in masks:
            rows.append([image_id, kaggle_rle(m), W, H, TYPES[cell], "", "", "", ""])
        boxes, scores, labels, softs = predictions(masks, cell, rng)
        images.append((image_id, H, W, boxes, scores, labels, softs))
    with open(os.path.join(out_dir, "truth.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "annotation", "width", "height", "cell_type", "plate_time", "sample_date",
                    "sample_id", "elapsed_timedelta"])
        w.writerows(rows)
    write_oof(os.path.join(out_dir, "oof.bin"), images)
    n_det = sum(len(i[4]) for i in images)
    print("wrote %d images, %d truths, %d detections to %s" % (len(images), len(rows), n_det, out_dir),
          file=sys.stderr)


def main():
    args = sys.argv[1:]

    def opt(name, default):
        if name in args:
            i = args.index(name)
            v = args[i + 1]
            del args[i:i + 2]
            return int(v)
        return default

    if args[0] == "gen":
        count, seed = opt("--images", 10), opt("--seed", 0)
        gen(args[1], args[2], count, seed)
    elif args[0] == "tweak":
        limit = opt("--images", None)
        tweak(args[1], args[2], args[3], args[4], limit)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
