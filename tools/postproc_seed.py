"""The seed's post-processing (TheoViel/kaggle_sartorius, src/inference/post_process.py), re-written
from its documented semantics (SEED.md §5) with numpy + pycocotools + opencv + torch (CPU), on
full-image masks exactly as the seed holds them. It is the independent reference of the Rust crate
cellseg-postproc (tools/postproc_reference.py) and the Python baseline of tools/bench_postproc.sh.

Not imported at run time by anything in Rust; run by tests and benches from .venv.
"""

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_util
from scipy.ndimage import binary_fill_holes


def _coco(masks):
    return [mask_util.encode(np.asarray(m, dtype=np.uint8, order="F")) for m in masks]


def mask_nms(masks, scores, threshold):
    """Greedy NMS on pycocotools mask IoU; returns kept positions (masks sorted by score)."""
    rles = _coco(masks)
    ious = mask_util.iou(rles, rles, [0] * len(rles)) if len(rles) else np.zeros((0, 0))
    picks = []
    remaining = list(range(len(masks)))
    while remaining:
        idx = remaining[0]
        overlapping = set(np.where(ious[idx] > threshold)[0].tolist())
        if overlapping:
            picks.append(idx)
            remaining = [i for i in remaining if i not in overlapping]
        else:
            remaining = remaining[1:]
    return picks


def remove_small_masks(masks, min_size):
    """The seed's rule: drop only the mask(s) tied at the smallest area, if it is <= min_size."""
    keep = np.arange(len(masks))
    if min_size == 0 or len(masks) == 0:
        return keep
    sizes = masks.reshape(len(masks), -1).sum(-1)
    if (sizes > min_size).all():
        return keep
    return keep[sizes > sizes.min()]


def corrupt_mask(mask):
    """findContours(RETR_TREE, CHAIN_APPROX_SIMPLE) then fillConvexPoly on every contour."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    canvas = np.zeros((mask.shape[0], mask.shape[1], 3), dtype=np.uint8)
    for c in contours:
        canvas = cv2.fillConvexPoly(canvas, points=c, color=(1, 1, 1))
    return canvas[:, :, 0].astype(mask.dtype)


def fill_holes(mask):
    """scipy's binary_fill_holes, run on the mask's bounding box framed by 2 background pixels
    (everything outside the box is background connected to the image border, so this is the same
    as running it on the whole image, and 100x faster)."""
    ys, xs = np.nonzero(mask)
    out = np.zeros(mask.shape, dtype=bool)
    if len(ys) == 0:
        return out
    t, l = max(ys.min() - 2, 0), max(xs.min() - 2, 0)
    b, r = min(ys.max() + 3, mask.shape[0]), min(xs.max() + 3, mask.shape[1])
    out[t:b, l:r] = binary_fill_holes(mask[t:b, l:r])
    return out


def remove_overlap(masks):
    """Mask i loses the pixels of the original masks j < i that overlap it (torch, CPU).

    The seed finds the masks with a non-zero pycocotools IoU, then for each of them re-reduces
    `originals[:k].max(0)` on the GPU. On the CPU that loop is quadratic in the number of masks, so
    this keeps a running union of the originals instead: the same result, O(n) full-image passes."""
    if len(masks) == 0:
        return masks
    rles = _coco(masks)
    ious = mask_util.iou(rles, rles, [0] * len(rles))
    np.fill_diagonal(ious, 0)
    to_process = np.where(ious.sum(0) > 0)[0]
    if not len(to_process):
        return masks
    t = torch.from_numpy(np.ascontiguousarray(masks))
    union = torch.zeros(t.shape[1:], dtype=torch.bool)
    for i in to_process:
        original = t[i].clone()
        t[i] &= ~union
        union |= original
    return t.numpy()


def process_image(boxes, soft_masks, cfg):
    """One image. boxes: [n, 6] (x1, y1, x2, y2, score, label); soft_masks: uint8 [n, H, W].

    cfg: dict with per-type lists mask_threshold, mask_nms_threshold, confidence_threshold and
    min_size, and booleans corrupt and remove_overlap. Returns (kept input indices, masks, cell)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=int), soft_masks.astype(bool), None
    cell = int(np.argmax(np.bincount(boxes[:, 5].astype(int))))
    thr_mask = cfg["mask_threshold"][cell]
    thr_nms = cfg["mask_nms_threshold"][cell]
    thr_conf = cfg["confidence_threshold"][cell]
    min_size = cfg["min_size"][cell]

    masks = soft_masks > (thr_mask * 255)
    # Stable descending order (ties keep input order, as the Rust crate documents).
    order = np.argsort(-boxes[:, 4], kind="stable")
    masks, boxes, idx = masks[order], boxes[order], order
    last = np.argmax(boxes[:, 4] < thr_conf) if np.min(boxes[:, 4]) < thr_conf else len(boxes)
    masks, boxes, idx = masks[:last], boxes[:last], idx[:last]
    if thr_nms > 0:
        picks = mask_nms(masks, boxes[:, 4], thr_nms)
        masks, boxes, idx = masks[picks], boxes[picks], idx[picks]
    keep = remove_small_masks(masks, min_size)
    masks, boxes, idx = masks[keep], boxes[keep], idx[keep]
    if cfg["corrupt"] and cell == 1:
        masks = np.array([corrupt_mask(m) for m in masks]).reshape(masks.shape).astype(bool)
    if cfg["remove_overlap"]:
        masks = remove_overlap(masks)
    return idx, masks, cell


SEED_CONFIG = {
    "mask_threshold": [0.45, 0.45, 0.45],
    "mask_nms_threshold": [0.1, 0.1, 0.05],
    "confidence_threshold": [0.3, 0.4, 0.7],
    "min_size": [70, 70, 70],
    "corrupt": True,
    "remove_overlap": True,
}


def kaggle_rle(mask):
    """Row-major, 1-based 'start length' pairs."""
    pixels = np.concatenate([[0], mask.reshape(-1).astype(np.uint8), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def kaggle_decode(rle, shape):
    s = rle.split()
    starts = np.asarray(s[0::2], dtype=int) - 1
    lengths = np.asarray(s[1::2], dtype=int)
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, ln in zip(starts, lengths):
        img[lo:lo + ln] = 1
    return img.reshape(shape)
