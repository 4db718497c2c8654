#!/usr/bin/env python3
"""Inputs and seed baseline of `benches/ensemble_merge.rs` (run both with tools/bench_ensemble.sh).

Usage:
  ensemble_bench.py gen OUT.safetensors
      Deterministic inputs (torch.manual_seed(0)) of a 520x704 image, 6 members x 4 views = 24
      passes, pass p in view p % 4 (identity, horizontal, vertical, diagonal):
        mask_boxes [300,4], mask_scores [300], mask_labels [300] int64: final detections (cells of
            8..64 px sides inside the image);
        mask_probs_{p} [300,3,28,28]: sigmoid probabilities of every class channel, in the view;
        box_{p} [3000,4], class_boxes_{p} [3000,3,4], scores_{p} [3000,3]: one pass of the box
            head over 3000 proposals (jittered copies of 400 cells), in view coordinates; scores
            are the first 3 of a 4-way softmax, box_{p} the class box of the best score.
      benches/ensemble_merge.rs builds the same shapes and distributions itself without a file.
  ensemble_bench.py time IN.safetensors REPEATS
      Times the seed's merging on the CPU, one thread, median over REPEATS, and prints JSON
      {"mask_merge": {"median_ms", "kept", "nonzero"}, "box_merge": {"median_ms", "kept"}}:
        mask_merge: mmdet `merge_aug_masks` (numpy flips + mean of the [300,3,28,28] passes), then
            the seed's `get_seg_masks` on the CPU: a [300,520,704] uint8 frame, the label channel,
            one `_do_paste_mask(skip_empty=True)` per mask (mmdet's CPU chunking), `(x*255)` bytes;
        box_merge: `bbox_mapping_back` per pass, `torch.stack(...).mean(0)` of boxes and scores,
            `torch.max` over classes, `torch.mode`, `mmcv.ops.nms` (torchvision through
            tools/mmdet_shim.py) at the shsy5y IoU 0.7, then `score > 0.2`.

Caveats of the comparison (they are the point of it, not errors of the baseline):
  - the seed pastes each mask into a whole-image frame (300 x 520 x 704 bytes, zeroed); cellseg
    pastes into box windows only (`masks::paste` -> SoftDetections of h x w windows);
  - the seed merges all 3 class channels of the masks; cellseg takes the label channel of each pass
    first (done inside the timed Rust chain);
  - the seed merges one box per proposal; cellseg also merges the [N,3,4] class boxes (extra work
    on the Rust side, kept for its per-class NMS mode).
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmdet_shim  # noqa: E402,F401  (must come before mmcv.ops / mmdet)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from mmcv.ops import nms  # noqa: E402
from mmdet.core import bbox_flip, bbox_mapping_back, merge_aug_masks  # noqa: E402
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask  # noqa: E402

H, W = 520, 704
PASSES, K, N, C, CELLS, M = 24, 300, 3000, 3, 400, 28
VIEWS = [None, "horizontal", "vertical", "diagonal"]
IOU, SCORE_THR = 0.7, 0.2  # the seed's ENS settings for shsy5y


def meta(p):
    d = VIEWS[p % 4]
    return [{"img_shape": (H, W, 3), "scale_factor": np.ones(4, np.float32),
             "flip": d is not None, "flip_direction": d or "horizontal"}]


def gen(out):
    torch.manual_seed(0)
    side = 8 + 56 * torch.rand(CELLS, 2)
    ctr = torch.rand(CELLS, 2) * (torch.tensor([W, H]) - side) + side / 2
    cells = torch.cat([ctr - side / 2, ctr + side / 2], 1)
    cell_cls = torch.randint(0, C, (CELLS,))
    t = {"mask_boxes": cells[:K].clone(), "mask_labels": cell_cls[:K].clone(),
         "mask_scores": 0.2 + 0.8 * torch.rand(K)}
    r = (torch.arange(M) + 0.5) / (M / 2) - 1
    blob = 4 * (0.6 - (r[:, None] ** 2 + r[None, :] ** 2))
    idx = torch.arange(N) % CELLS
    jitter = 0.06 * side[idx].repeat(1, 2)
    base = cells[idx] + jitter * torch.randn(N, 4)
    logits = 1.5 * torch.randn(N, C + 1) + 2.5 * torch.nn.functional.one_hot(cell_cls[idx], C + 1)
    for p in range(PASSES):
        t[f"mask_probs_{p}"] = torch.sigmoid(blob + torch.randn(K, C, M, M))
        cb = base[:, None, :] + 0.5 * jitter[:, None, :] * torch.randn(N, C, 4)
        s = torch.softmax(logits + 0.5 * torch.randn(N, C + 1), 1)[:, :C]
        b = cb[torch.arange(N), s.argmax(1)]
        m = meta(p)[0]
        if m["flip"]:
            d = m["flip_direction"]
            b, cb = bbox_flip(b, (H, W), d), bbox_flip(cb, (H, W), d)
        t[f"box_{p}"], t[f"class_boxes_{p}"], t[f"scores_{p}"] = b, cb, s
    save_file({k: v.contiguous() for k, v in t.items()}, out)


def mask_merge(t):
    metas = [meta(p) for p in range(PASSES)]
    merged = merge_aug_masks([t[f"mask_probs_{p}"] for p in range(PASSES)], metas, None)
    boxes, labels = t["mask_boxes"], t["mask_labels"]
    pred = boxes.new_tensor(merged)
    n = len(pred)
    im_mask = torch.zeros(n, H, W, dtype=torch.uint8)
    pred = pred[range(n), labels][:, None]
    for inds in torch.chunk(torch.arange(n), n):
        chunk, where = _do_paste_mask(pred[inds], boxes[inds], H, W, skip_empty=True)
        im_mask[(inds,) + where] = (chunk * 255).to(dtype=torch.uint8)
    return im_mask


def box_merge(t):
    back = []
    for p in range(PASSES):
        m = meta(p)[0]
        back.append(bbox_mapping_back(t[f"box_{p}"], m["img_shape"], m["scale_factor"], m["flip"],
                                      m["flip_direction"]))
    boxes = torch.stack(back).mean(dim=0)
    scores = torch.stack([t[f"scores_{p}"] for p in range(PASSES)]).mean(dim=0)
    det_scores, det_labels = torch.max(scores, 1)
    torch.mode(det_labels, 0).values.item()  # the seed picks its IoU by the modal class
    dets, inds = nms(boxes.contiguous(), det_scores.contiguous(), IOU)
    keep = dets[:, 4] > SCORE_THR
    return dets[keep], det_labels[inds][keep]


def timed(f, t, repeats):
    out, ms = None, []
    for _ in range(repeats):
        s = time.perf_counter()
        out = f(t)
        ms.append((time.perf_counter() - s) * 1e3)
    return statistics.median(ms), out


def time_all(path, repeats):
    torch.set_num_threads(1)
    t = load_file(path)
    t.update({k: v.numpy() for k, v in t.items() if k.startswith("mask_probs_")})  # the seed's
    with torch.no_grad():
        mm, masks = timed(mask_merge, t, repeats)
        bm, (dets, _) = timed(box_merge, t, repeats)
    nonzero = int((masks > 0).sum())
    print(json.dumps({"mask_merge": {"median_ms": mm, "kept": int(masks.shape[0]),
                                     "nonzero": nonzero},
                      "box_merge": {"median_ms": bm, "kept": int(dets.shape[0])}}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "time":
        time_all(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
