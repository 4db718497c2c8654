#!/usr/bin/env python3
"""Oracle of the seed's `EnsembleModel` (SEED.md §4.2) over real mmdet 2.17 models.

Usage:
  ensemble_fixtures.py OUT_DIR [--size 256x256] [--seed 0] [--cells 40]

A compact re-implementation, written from the seed's algorithm (`src/model_zoo/ensemble.py`,
`merging.py`, `wrappers.py`, `custom_head_functions.py`), of multi-model x flip-TTA ensembling at
the proposal, box and mask stages, run on three real mmdet members built and calibrated exactly
as `tools/mmdet_fixtures.py` does (random but informative weights, see its docstring):
  member 0 "maskrcnn" (model seed = seed), member 1 "cascade" (seed+1), member 2 "htc" (seed+2),
  each with `mf.build(cfg, s)` and the calibration generator seeded s+1, all calibrated on the
  SAME image `mf.inputs(size, seed, cells)` (normalised, zero-padded to a multiple of 32; so
  member 0's weights equal those of `mmdet_fixtures.py maskrcnn` with the same seed).
Everything is float32 on the CPU under torch.no_grad, batch 1.

Views. v0 identity, v1 horizontal, v2 vertical, v3 diagonal (both axes). A view flips the
UNPADDED h x w region and leaves the zero padding at the bottom/right:
`view[..., :h, :w] = img[..., :h, :w].flip(dims)`. Its img_meta: img_shape (h, w, 3),
scale_factor ones(4), flip, flip_direction. Features: `model.extract_feat(view)` (5 FPN levels),
computed once per member and view and shared by all scenarios.

Step 1, proposals (identity view only, over the used members): per member
`cls, reg = rpn_head(feats)`; per level the mean over members of the raw logits and of the raw
deltas. level_counts[l] = #locations where max over the 3 anchors of sigmoid(merged logit) > 0.7.
Heuristic cell type: astro (1) if sum(level_counts[-2:]) > 10, else cort (2) if
sum(level_counts) < 4500 and level_counts[1] < 750, else shsy5y (0). Proposals (the seed's
get_rpn_boxes, with members[used[0]].rpn_head's anchors and coder, rpn config of that type): per
level sigmoid, stable sort descending, top nms_pre; decode with max_shape (h, w); keep w > 0 and
h > 0 (strict); mmcv `batched_nms` with the level ids as classes (mmcv's offset trick: every box
is shifted by level * (max coordinate + 1) before the IoUs are computed) at rpn_iou; keep
score > rpn_score_thr; [:max_per_img] (None = all).

Step 2, boxes (every used member x every box view, on the shared proposals): `bbox_mapping`
into the view, `bbox2roi`, then the DELTA shift (DELTA = 0.5, never added back): vertical and
diagonal views y1, y2 -= 0.5 clamped to [0, h]; horizontal and diagonal views x1, x2 -= 0.5
clamped to [0, w]. Mask R-CNN: `_bbox_forward` + `bbox_head.get_bboxes(rescale=False,
cfg=None)`, scores[:, :3], the class box of argmax(scores[:, :3]). Cascade: the simple_test stage
loop, `regress_by_class(rois, cls[:, :-1].argmax(1), reg)` between stages, the mean of the three
raw logits decoded by the last head with the last deltas. HTC: as Cascade with
`semantic_feat = semantic_head(x)[1]` and argmax over ALL columns (background included, as the
seed; harmless, the regression is class-agnostic). Merge: `bbox_mapping_back`, then the
arithmetic mean over (member, view), member-major, of the boxes [N,4] and the 3-class
probabilities [N,3]. NMS: det_score, det_label = max over the 3 classes; class-agnostic
`mmcv.ops.nms(boxes, det_score, rcnn_iou[ct])` (sorted by score); keep det_score > rcnn_score_thr.

Step 3, masks (every used member x every mask view; identity only when use_tta_masks is False):
the det boxes mapped into the view, bbox2roi, the same DELTA shift; sigmoid(mask logits)[:, :3]
(28x28): Mask R-CNN `_mask_forward`; Cascade the mean over the 3 stage heads; HTC the last mask
RoI extractor + the semantic RoI features, the heads chained through last_feat (info flow), the
mean of the 3 sigmoids. mmdet `merge_aug_masks` flips each view back (h: W axis, v: H axis, d:
both) and takes the numpy mean over (member, view). Final: the label channel of each detection,
pasted into h x w by mmdet `_do_paste_mask(skip_empty=False)` (the seed's GPU path), uint8
`(p * 255)`.

Cell type. Without a model subset (scenarios A, C): the heuristic on the used members' merged RPN.
With usage subsets (scenario B): Step 1 + Step 2 with the `cls` members and the rcnn config of
their RPN heuristic type; cell_type = argmax(bincount(det_labels)) (no detection: the `cls`
heuristic type, flagged in scalars.json); used = usage[name]; then Step 1 with `used` (rpn config
of the heuristic type of `used`), Steps 2-3 with `used` and the rcnn config of the VOTED type.

Scenarios: A "all": used [0, 1, 2], 4 box views, 4 mask views (use_tta_masks True).
B "subset": usage {cls: [0], shsy5y: [0, 1], astro: [1, 2], cort: [0, 2]}, 4 box views,
use_tta_masks False. C "single": used [1] (the cascade alone), identity view only everywhere.

Config (CONFIG below, lists indexed [shsy5y, astro, cort]; chosen once for the 256x256 default,
seed 0): rpn_nms_pre [1000, 800, 600], rpn_iou [0.7, 0.75, 0.6], rpn_score_thr
[0.98, 0.995, 0.9], rpn_max_per_img None, rcnn_iou [0.5, 0.6, 0.7], rcnn_score_thr
[0.3, 0.12, 0.1]. The ensembles' scores are low (the mean of 9-class softmaxes of unrelated
random models over flipped views: merged max-class probabilities ~0.10-0.21), the single
cascade's are not (0.3-0.8), hence the spread of rcnn thresholds. At 256x256 / seed 0:
A cort (N 241, K 33), B cls pass astro (N 461, 6 detections, all astro) -> used [1, 2], rpn cfg
cort (N 315), rcnn cfg astro (K 95), C shsy5y (N 320, K 46).

Ties. Sigmoids of single-model RPN logits saturate: exact score ties occur among the proposals
(C, B's cls pass). The top-nms_pre sort here is stable (equal scores keep anchor order, levels
in order) and the shimmed NMS (torchvision) is stable too; mmdet's own RPNHead sorts unstably, so
its proposal order differs among exactly tied scores (same set of boxes).

Outputs in OUT_DIR:
  member{i}.safetensors: member i's mmdet state_dict (`mf.export_weights`).
  config.json: the ensemble config (lists indexed [shsy5y, astro, cort]) + scenario definitions.
  stages.safetensors (float32 unless noted, every tensor contiguous):
    image [1,3,Hp,Wp] (= view_0), view_{v} [1,3,Hp,Wp] v = 0..3, img_hw [2] int64 (h, w);
    per scenario S in {A, B, C}, prefixed "S.":
      used [k] int64 (members used after the cell-type step), rpn_cls_{l} [1,3,H_l,W_l],
      rpn_reg_{l} [1,12,H_l,W_l] (merged), level_counts [5] int64, rpn_cell_type [] int64
      (heuristic on `used`), cell_type [] int64 (final: the rcnn config index),
      proposals [N,5] (x1, y1, x2, y2, score; mmdet's order),
      view_boxes_{m}_{v} [N,4] (mapped back), view_scores_{m}_{v} [N,3] per used member m and
      box view v, merged_boxes [N,4], merged_scores [N,3],
      det_boxes [K,4], det_scores [K], det_labels [K] int64,
      view_masks_{m}_{v} [K,3,28,28] (flipped back) per used member and mask view,
      merged_masks [K,3,28,28], paste_rects [K,4] int64 (top, left, height, width of the
      non-zero rectangle, `mf.pasted_rects`), paste_values [sum] uint8;
      B only: cls_det_labels [n] int64, cls_cell_type [] int64 (the vote), and for diagnosis
      cls_rpn_cell_type [] int64, cls_level_counts [5] int64, cls_proposals [n0,5],
      cls_det_boxes [n,4], cls_det_scores [n] (the `cls` pass with member 0).
  scalars.json: the config, per scenario the counts (N, K, level counts, cell types, views),
    the number of exactly tied scores among proposals / detections, timings.
"""

import argparse
import json
import logging
import os
import sys
import time
import warnings

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import mmdet_fixtures as mf  # noqa: E402  (imports mmdet_shim before mmcv.ops / mmdet)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import mmcv  # noqa: E402
from mmcv.ops import batched_nms, nms  # noqa: E402
from mmdet.core import bbox2roi, bbox_mapping, bbox_mapping_back, merge_aug_masks  # noqa: E402

CELL_TYPES = ["shsy5y", "astro", "cort"]
KINDS = ["maskrcnn", "cascade", "htc"]

CONFIG = dict(
    num_classes=3,
    delta=0.5,
    rpn_nms_pre=[1000, 800, 600],
    rpn_iou=[0.7, 0.75, 0.6],
    rpn_score_thr=[0.98, 0.995, 0.9],
    rpn_max_per_img=[None, None, None],
    rcnn_iou=[0.5, 0.6, 0.7],
    rcnn_score_thr=[0.3, 0.12, 0.1],
    heuristic=dict(sigmoid_thr=0.7, astro_top2_gt=10, cort_total_lt=4500, cort_level1_lt=750),
)

# (flip, direction, image dims flipped, mask dims flipped back)
VIEWS = [
    (False, None, None),
    (True, "horizontal", [-1]),
    (True, "vertical", [-2]),
    (True, "diagonal", [-2, -1]),
]

SCENARIOS = dict(
    A=dict(name="all", used=[0, 1, 2], box_views=[0, 1, 2, 3], use_tta_masks=True),
    B=dict(
        name="subset",
        usage=dict(cls=[0], shsy5y=[0, 1], astro=[1, 2], cort=[0, 2]),
        box_views=[0, 1, 2, 3],
        use_tta_masks=False,
    ),
    C=dict(name="single", used=[1], box_views=[0], use_tta_masks=False),
)


# --------------------------------------------------------------------------------------------
# Members.


def make_member(kind, img, metas, seed):
    """mmdet_fixtures' build + randomise_and_calibrate + head calibration of `kind` (the same
    weights, bit for bit, as `mf.maskrcnn` / `mf.cascade_like` compute with their seeds)."""
    cfg = {"maskrcnn": mf.maskrcnn_cfg, "cascade": mf.cascade_cfg, "htc": mf.htc_cfg}[kind]()
    model = mf.build(cfg, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    roi = model.roi_head
    x, rois = mf.randomise_and_calibrate(model, img, metas, gen)
    sub = rois[:256]
    with torch.no_grad():
        sf = None
        if kind == "htc":
            sem, _ = roi.semantic_head(x)
            mf.rescale(roi.semantic_head.conv_logits, sem, 2.0, 0.0)
            _, sf = roi.semantic_head(x)

        def box_out(i):
            if kind == "maskrcnn":
                r = roi._bbox_forward(x, rois)
            elif kind == "htc":
                r = roi._bbox_forward(i, x, rois, semantic_feat=sf)
            else:
                r = roi._bbox_forward(i, x, rois)
            return r["cls_score"], r["bbox_pred"]

        def mask_out(i):
            if kind == "maskrcnn":
                return roi._mask_forward(x, sub)["mask_pred"]
            if kind == "cascade":
                return roi._mask_forward(i, x, sub)["mask_pred"]
            feats, last = htc_mask_feats(roi, x, sub, sf), None
            for j in range(i + 1):
                m, last = roi.mask_head[j](feats, last)
            return m

        # mf.calibrate_roi_heads calls rois_fn(i) twice per stage and uses only the box outputs
        # of the first call and the mask logits of the second: compute just those (the mask
        # heads are the expensive part; the result is the same).
        calls = [0]

        def stage_out(i):
            calls[0] += 1
            return (*box_out(i), None) if calls[0] % 2 else (None, None, mask_out(i))

        if kind == "maskrcnn":
            mf.calibrate_roi_heads([roi.bbox_head], [roi.mask_head], stage_out)
        else:
            mf.calibrate_roi_heads(roi.bbox_head, roi.mask_head, stage_out)
    return model


def htc_mask_feats(roi, x, rois, semantic_feat):
    ext = roi.mask_roi_extractor[-1]
    return ext(x[: len(ext.featmap_strides)], rois) + roi.semantic_roi_extractor([semantic_feat], rois)


class Member:
    def __init__(self, kind, model, views):
        self.kind, self.model = kind, model
        self.feats = [model.extract_feat(v) for v in views]
        self.sem = [model.roi_head.semantic_head(f)[1] for f in self.feats] if kind == "htc" else None

    def boxes(self, v, rois, meta):
        """(boxes [n,4], scores [n,3]) in view v's frame (the seed's wrappers' get_boxes)."""
        roi, x, nc = self.model.roi_head, self.feats[v], CONFIG["num_classes"]
        shape, sf = meta["img_shape"], meta["scale_factor"]
        if self.kind == "maskrcnn":
            r = roi._bbox_forward(x, rois)
            boxes, scores = roi.bbox_head.get_bboxes(
                rois, r["cls_score"], r["bbox_pred"], shape, sf, rescale=False, cfg=None
            )
            scores = scores[:, :nc]
            best = scores.argmax(1)
            return boxes.view(boxes.shape[0], -1, 4)[torch.arange(len(best)), best], scores
        kw = dict(semantic_feat=self.sem[v]) if self.kind == "htc" else {}
        logits = []
        for i in range(roi.num_stages):
            r = roi._bbox_forward(i, x, rois, **kw)
            logits.append(r["cls_score"])
            if i < roi.num_stages - 1:
                c = r["cls_score"] if self.kind == "htc" else r["cls_score"][:, :-1]
                rois = roi.bbox_head[i].regress_by_class(rois, c.argmax(1), r["bbox_pred"], meta)
        cls = sum(logits) / float(len(logits))
        boxes, scores = roi.bbox_head[-1].get_bboxes(
            rois, cls, r["bbox_pred"], shape, sf, rescale=False, cfg=None
        )
        return boxes, scores[:, :nc]

    def masks(self, v, rois):
        """sigmoid mask probabilities [K,3,28,28] in view v's frame (get_masks)."""
        roi, x, nc = self.model.roi_head, self.feats[v], CONFIG["num_classes"]
        if self.kind == "maskrcnn":
            return roi._mask_forward(x, rois)["mask_pred"].sigmoid()[:, :nc]
        probs = []
        if self.kind == "cascade":
            for i in range(roi.num_stages):
                probs.append(roi._mask_forward(i, x, rois)["mask_pred"].sigmoid()[:, :nc])
        else:
            feats, last = htc_mask_feats(roi, x, rois, self.sem[v]), None
            for i in range(roi.num_stages):
                pred, last = roi.mask_head[i](feats, last)
                probs.append(pred.sigmoid()[:, :nc])
        return torch.stack(probs).mean(0)


# --------------------------------------------------------------------------------------------
# Views and the three steps.


def make_views(img, h, w):
    out = []
    for _, _, dims in VIEWS:
        view = img.clone()
        if dims is not None:
            view[..., :h, :w] = img[..., :h, :w].flip(dims)
        out.append(view)
    return out


def view_meta(v, h, w):
    flip, direction, _ = VIEWS[v]
    return dict(
        img_shape=(h, w, 3),
        ori_shape=(h, w, 3),
        scale_factor=np.ones(4, dtype=np.float32),
        flip=flip,
        flip_direction=direction,
    )


def heuristic(level_counts):
    hc = CONFIG["heuristic"]
    if sum(level_counts[-2:]) > hc["astro_top2_gt"]:
        return 1
    if sum(level_counts) < hc["cort_total_lt"] and level_counts[1] < hc["cort_level1_lt"]:
        return 2
    return 0


def rpn_step(members, used, h, w):
    """Step 1: merged RPN outputs, level counts, heuristic type, proposals [N,5]."""
    outs = [members[m].model.rpn_head(members[m].feats[0]) for m in used]
    cls = [torch.stack([o[0][l] for o in outs]).mean(0) for l in range(len(outs[0][0]))]
    reg = [torch.stack([o[1][l] for o in outs]).mean(0) for l in range(len(outs[0][1]))]
    thr = CONFIG["heuristic"]["sigmoid_thr"]
    best = [c.sigmoid().flatten(2)[0].max(0).values for c in cls]
    counts = [int((b > thr).sum()) for b in best]
    count_margin = float(min((b - thr).abs().min() for b in best))
    ct = heuristic(counts)
    head = members[used[0]].model.rpn_head
    anchors = head.anchor_generator.grid_anchors([c.shape[-2:] for c in cls], device="cpu")
    nms_pre = CONFIG["rpn_nms_pre"][ct]
    scores, deltas, anc, ids = [], [], [], []
    for l, (c, r) in enumerate(zip(cls, reg)):
        s = c[0].permute(1, 2, 0).reshape(-1).sigmoid()
        d = r[0].permute(1, 2, 0).reshape(-1, 4)
        a = anchors[l]
        if 0 < nms_pre < s.shape[0]:
            s, order = s.sort(descending=True, stable=True)
            s, d, a = s[:nms_pre], d[order[:nms_pre]], a[order[:nms_pre]]
        scores.append(s), deltas.append(d), anc.append(a)
        ids.append(torch.full((s.shape[0],), l, dtype=torch.long))
    scores, ids = torch.cat(scores), torch.cat(ids)
    boxes = head.bbox_coder.decode(torch.cat(anc), torch.cat(deltas), max_shape=(h, w, 3))
    valid = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    boxes, scores, ids = boxes[valid], scores[valid], ids[valid]
    if boxes.numel() == 0:
        props = boxes.new_zeros(0, 5)
    else:
        props, _ = batched_nms(boxes, scores, ids, dict(type="nms", iou_threshold=CONFIG["rpn_iou"][ct]))
    thr_margin = margin(props[:, 4], CONFIG["rpn_score_thr"][ct])
    after_nms = int(props.shape[0])
    props = props[props[:, 4] > CONFIG["rpn_score_thr"][ct]][: CONFIG["rpn_max_per_img"][ct]]
    return dict(cls=cls, reg=reg, counts=counts, ct=ct, props=props, pre_nms=int(valid.sum()),
                after_nms=after_nms, count_margin=count_margin, thr_margin=thr_margin)


def margin(x, thr):
    """min |x - thr| (how far the closest value is from a threshold), None when x is empty."""
    return float((x - thr).abs().min()) if x.numel() else None


def shifted_rois(boxes, meta, h, w):
    """bbox_mapping into the view + bbox2roi + the DELTA shift."""
    rois = bbox2roi([bbox_mapping(boxes, meta["img_shape"], meta["scale_factor"], meta["flip"],
                                  meta["flip_direction"])])
    delta, direction = CONFIG["delta"], meta["flip_direction"]
    if delta:
        if direction in ("vertical", "diagonal"):
            rois[:, 2] = torch.clamp(rois[:, 2] - delta, 0, h)
            rois[:, 4] = torch.clamp(rois[:, 4] - delta, 0, h)
        if direction in ("horizontal", "diagonal"):
            rois[:, 1] = torch.clamp(rois[:, 1] - delta, 0, w)
            rois[:, 3] = torch.clamp(rois[:, 3] - delta, 0, w)
    return rois


def box_step(members, used, views, props, ct, h, w):
    """Step 2: per (member, view) boxes mapped back and scores, their mean, NMS + threshold."""
    per = {}
    for m in used:
        for v in views:
            meta = view_meta(v, h, w)
            b, s = members[m].boxes(v, shifted_rois(props[:, :4], meta, h, w), meta)
            b = bbox_mapping_back(b, meta["img_shape"], meta["scale_factor"], meta["flip"],
                                  meta["flip_direction"])
            per[(m, v)] = (b, s)
    boxes = torch.stack([b for b, _ in per.values()]).mean(0)
    scores = torch.stack([s for _, s in per.values()]).mean(0)
    det_score, det_label = scores.max(1)
    dets, keep = nms(boxes.contiguous(), det_score.contiguous(), CONFIG["rcnn_iou"][ct])
    labels = det_label[keep]
    thr_margin = margin(dets[:, 4], CONFIG["rcnn_score_thr"][ct])
    sel = dets[:, 4] > CONFIG["rcnn_score_thr"][ct]
    dets, labels = dets[sel], labels[sel]
    return dict(per=per, boxes=boxes, scores=scores, dets=dets, labels=labels, after_nms=int(len(keep)),
                thr_margin=thr_margin)


def mask_step(members, used, views, dets, labels, h, w):
    """Step 3: per (member, view) masks flipped back, merge_aug_masks, paste of the label channel."""
    aug, metas = [], []
    for m in used:
        for v in views:
            meta = view_meta(v, h, w)
            aug.append(members[m].masks(v, shifted_rois(dets[:, :4], meta, h, w)).numpy())
            metas.append([meta])
    merged = torch.from_numpy(np.ascontiguousarray(merge_aug_masks(aug, metas, None))).float()
    per = {}
    i = 0
    for m in used:
        for v in views:
            per[(m, v)] = torch.from_numpy(np.ascontiguousarray(
                merge_aug_masks([aug[i]], [metas[i]], None)))  # this view flipped back
            i += 1
    k = dets.shape[0]
    pasted = mf.gpu_paste(merged[torch.arange(k), labels], dets[:, :4], h, w)
    return dict(per=per, merged=merged, pasted=pasted)


def ties(x):
    """Number of values equal to another one in the 1-d tensor x."""
    _, counts = torch.unique(x, return_counts=True)
    return int(counts[counts > 1].sum())


def run_scenario(key, members, h, w):
    sc = SCENARIOS[key]
    t0 = time.time()
    out, info = {}, dict(name=sc["name"])
    if "usage" in sc:
        usage = sc["usage"]
        cls_rpn = rpn_step(members, usage["cls"], h, w)
        cls_box = box_step(members, usage["cls"], sc["box_views"], cls_rpn["props"], cls_rpn["ct"], h, w)
        cls_labels = cls_box["labels"]
        fallback = cls_labels.numel() == 0
        vote = cls_rpn["ct"] if fallback else int(np.argmax(np.bincount(cls_labels.numpy())))
        used = usage[CELL_TYPES[vote]]
        out.update(
            cls_det_labels=cls_labels.to(torch.int64),
            cls_cell_type=torch.tensor(vote, dtype=torch.int64),
            cls_rpn_cell_type=torch.tensor(cls_rpn["ct"], dtype=torch.int64),
            cls_level_counts=torch.tensor(cls_rpn["counts"], dtype=torch.int64),
            cls_proposals=cls_rpn["props"],
            cls_det_boxes=cls_box["dets"][:, :4],
            cls_det_scores=cls_box["dets"][:, 4],
        )
        info.update(
            cls_members=usage["cls"],
            cls_rpn_cell_type=cls_rpn["ct"],
            cls_level_counts=cls_rpn["counts"],
            cls_num_proposals=int(cls_rpn["props"].shape[0]),
            cls_rpn_score_thr_margin=cls_rpn["thr_margin"],
            cls_rcnn_score_thr_margin=cls_box["thr_margin"],
            cls_num_detections=int(cls_labels.numel()),
            cls_label_counts=np.bincount(cls_labels.numpy(), minlength=3).tolist(),
            cls_vote_fallback_to_heuristic=bool(fallback),
            cls_cell_type=vote,
        )
    else:
        used, vote = sc["used"], None
    rpn = rpn_step(members, used, h, w)
    ct = rpn["ct"] if vote is None else vote
    box_views = sc["box_views"]
    mask_views = box_views if sc["use_tta_masks"] else box_views[:1]
    box = box_step(members, used, box_views, rpn["props"], ct, h, w)
    dets, labels = box["dets"], box["labels"]
    k = dets.shape[0]
    out["used"] = torch.tensor(used, dtype=torch.int64)
    for l, (c, r) in enumerate(zip(rpn["cls"], rpn["reg"])):
        out[f"rpn_cls_{l}"], out[f"rpn_reg_{l}"] = c, r
    out.update(
        level_counts=torch.tensor(rpn["counts"], dtype=torch.int64),
        rpn_cell_type=torch.tensor(rpn["ct"], dtype=torch.int64),
        cell_type=torch.tensor(ct, dtype=torch.int64),
        proposals=rpn["props"],
        merged_boxes=box["boxes"],
        merged_scores=box["scores"],
        det_boxes=dets[:, :4],
        det_scores=dets[:, 4],
        det_labels=labels.to(torch.int64),
    )
    for (m, v), (b, s) in box["per"].items():
        out[f"view_boxes_{m}_{v}"], out[f"view_scores_{m}_{v}"] = b, s
    if k > 0:  # the seed returns (bboxes, None) without masks when nothing is detected
        msk = mask_step(members, used, mask_views, dets, labels, h, w)
        for (m, v), p in msk["per"].items():
            out[f"view_masks_{m}_{v}"] = p
        merged, pasted = msk["merged"], msk["pasted"]
    else:
        for m in used:
            for v in mask_views:
                out[f"view_masks_{m}_{v}"] = torch.zeros(0, 3, 28, 28)
        merged, pasted = torch.zeros(0, 3, 28, 28), torch.zeros(0, h, w, dtype=torch.uint8)
    out["merged_masks"] = merged
    out["paste_rects"], out["paste_values"] = mf.pasted_rects(pasted)
    info.update(
        used=used,
        box_views=box_views,
        mask_views=mask_views,
        level_counts=rpn["counts"],
        rpn_cell_type=rpn["ct"],
        rpn_cell_type_name=CELL_TYPES[rpn["ct"]],
        cell_type=ct,
        cell_type_name=CELL_TYPES[ct],
        num_rpn_candidates_pre_nms=rpn["pre_nms"],
        num_rpn_after_nms=rpn["after_nms"],
        level_count_sigmoid_margin=rpn["count_margin"],
        rpn_score_thr_margin=rpn["thr_margin"],
        rcnn_score_thr_margin=box["thr_margin"],
        num_proposals=int(rpn["props"].shape[0]),
        num_after_rcnn_nms=box["after_nms"],
        num_detections=int(k),
        det_label_counts=np.bincount(labels.numpy(), minlength=3).tolist(),
        proposal_score_ties=ties(rpn["props"][:, 4]),
        merged_det_score_ties=ties(box["scores"].max(1).values),
        det_score_ties=ties(dets[:, 4]),
        proposal_score_range=[float(rpn["props"][:, 4].min()), float(rpn["props"][:, 4].max())]
        if rpn["props"].shape[0] else None,
        det_score_range=[float(dets[:, 4].min()), float(dets[:, 4].max())] if k else None,
        pasted_nonzero_pixels=int((pasted > 0).sum()),
        seconds=round(time.time() - t0, 2),
    )
    return {f"{key}.{n}": t for n, t in out.items()}, info


# --------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--size", default="256x256")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cells", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(2)
    mmcv.utils.get_logger("mmcv", log_level=logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    t0 = time.time()
    size = tuple(int(v) for v in args.size.split("x"))
    h, w = size
    img, metas = mf.inputs(size, args.seed, args.cells)[:2]
    os.makedirs(args.out, exist_ok=True)
    timings = {}
    models = []
    for i, kind in enumerate(KINDS):
        t1 = time.time()
        model = make_member(kind, img, metas, args.seed + i)
        mf.export_weights(model, os.path.join(args.out, f"member{i}.safetensors"))
        models.append(model)
        timings[f"build_member{i}"] = round(time.time() - t1, 2)
    scalars = dict(config=CONFIG, scenarios={}, members=KINDS, member_seeds=[args.seed + i for i in range(3)],
                   size=[h, w], seed=args.seed, cells=args.cells)
    with torch.no_grad():
        views = make_views(img, h, w)
        t1 = time.time()
        members = [Member(kind, model, views) for kind, model in zip(KINDS, models)]
        timings["features"] = round(time.time() - t1, 2)
        t = dict(image=views[0], img_hw=torch.tensor([h, w], dtype=torch.int64))
        for v, view in enumerate(views):
            t[f"view_{v}"] = view
        for key in SCENARIOS:
            tensors, info = run_scenario(key, members, h, w)
            t.update(tensors)
            scalars["scenarios"][key] = info
            timings[f"scenario_{key}"] = info["seconds"]
    timings["total"] = round(time.time() - t0, 2)
    scalars["timings"] = timings
    save_file({k: v.detach().contiguous().clone() for k, v in t.items()}, os.path.join(args.out, "stages.safetensors"))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(dict(CONFIG, cell_types=CELL_TYPES, members=KINDS, views=[v[1] for v in VIEWS],
                       scenarios=SCENARIOS), f, indent=1)
    with open(os.path.join(args.out, "scalars.json"), "w") as f:
        json.dump(scalars, f, indent=1)
    print(json.dumps(scalars["scenarios"], indent=1))
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
