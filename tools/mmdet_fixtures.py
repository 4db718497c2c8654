#!/usr/bin/env python3
"""Real mmdet 2.17 as the oracle of the cellseg detectors (docs/ORACLES.md, SEED.md §2.4-2.6).

Usage:
  mmdet_fixtures.py maskrcnn OUT_DIR [--size 256x256|520x704] [--seed N] [--cells N] [--no-train]
      The seed's Mask R-CNN (SEED.md §2.4) built in mmdet itself with random weights, run in
      inference and in training mode on a synthetic normalised image with deterministic GT cells.
      Writes OUT_DIR/weights.safetensors (the mmdet state_dict, mmdet keys, every tensor
      contiguous, `num_batches_tracked` kept as the int64 scalars that our BatchNorm2d also
      holds), OUT_DIR/stages.safetensors (inputs and every stage, names below) and
      OUT_DIR/scalars.json (losses, counts, timings).
  mmdet_fixtures.py cascade OUT_DIR [--size ...] [--seed N] [--cells N] [--no-train] [--pth]
  mmdet_fixtures.py htc OUT_DIR [--size ...] [--seed N] [--cells N] [--no-train] [--pth]
      The seed's Cascade Mask R-CNN (SEED.md §2.5) and HTC (§2.6) the same way (tensor names in
      `cascade_like`). `--pth` also writes the weights as an mmdet checkpoint OUT_DIR/weights.pth
      (for the `tools/export_weights.py mmdet` round trip).

Weights. `torch.manual_seed(seed)`, `build_detector`, mmdet's own `init_weights()` (no
pretrained), then, so that every stage is informative and non-degenerate with random weights:
  - every backbone BatchNorm gets a random affine (weight U(0.5, 1.5), bias N(0, 0.1)), also the
    zero-initialised last norm of each Bottleneck (else conv3 of every block would be untested);
    its running statistics are the batch statistics of the fixture image (one calibration pass in
    training mode, cumulative average), then perturbed (mean + 0.1 std N(0,1), var * e^U(-.3,.3));
    the model always runs with these running statistics (norm_eval, eval-mode BN);
  - the last layers, whose mmdet init is N(0, 0.01) / N(0, 0.001) (which would give all RPN
    scores ~0.5 with exact ties, and no detection above score_thr 0.25), are rescaled so their
    outputs have a useful spread on this image: RPN logits std 2 (mean -2), RPN deltas std 0.2,
    box logits std 2.5, box deltas std 1, mask logits std 3.

Sampling. Every RandomSampler's `num` is 10**7: every candidate is taken, in index order (mmdet's
`_sample_pos/_sample_neg` return `nonzero` unchanged when there are fewer candidates than
wanted), so the training targets and losses are deterministic; the Rust side sets the same nums.

stages.safetensors of `maskrcnn` (float32 unless noted; one image):
  image [1,3,Hp,Wp] (normalised, zero-padded to a multiple of 32 like the seed's Pad),
  img_hw [2] int64 (unpadded h, w); gt_boxes [G,4], gt_labels [G] int64, gt_masks [G,h,w] uint8
  fpn_{0..4}; rpn_cls_{l} [1,3,H_l,W_l], rpn_reg_{l} [1,12,H_l,W_l]
  proposals [N,4], proposal_scores [N] (test_cfg.rpn, in mmdet's order)
  box_cls [N,9], box_reg [N,32] (bbox head on `proposals` as RoIs)
  det_boxes [K,4], det_scores [K], det_labels [K] int64 (multiclass NMS, test_cfg.rcnn)
  mask_logits [K,8,28,28], mask_probs [K,28,28] (sigmoid of the label channel)
  paste_rects [K,4] int64 (top, left, height, width) + paste_values [sum h*w] uint8: the uint8
      soft masks `(prob*255).to(uint8)` of `get_seg_masks` (mask_thr_binary -1), on the CPU
      path (`skip_empty=True`), as the non-zero bounding rectangle of each and its bytes
  paste_gpu_rects / paste_gpu_values: the same from `_do_paste_mask(skip_empty=False)`, the path
      mmdet takes on a GPU (the seed's): whole-image paste. The two paths differ for boxes wider
      or taller than ~56 px, whose bilinear border band (half a mask cell) is cut by the CPU
      window of 1 px around the box.
  training (model.train(); BN stays in eval by norm_eval):
  train_proposals [M,4], train_proposal_scores [M] (train_cfg.rpn_proposal)
  rpn_labels [A] int64 (0 = fg, 1 = bg), rpn_label_weights [A], rpn_bbox_targets [A,4],
      rpn_bbox_weights [A,4] (all anchors, levels concatenated, mmdet's get_targets)
  rcnn_rois [R,5] (sampled: positives first), rcnn_labels [R] int64 (bg = 8),
      rcnn_label_weights [R], rcnn_bbox_targets [R,4], rcnn_bbox_weights [R,4],
      rcnn_pos_is_gt [P] uint8, rcnn_pos_gt_inds [P] int64, mask_targets [P,28,28] (0/1),
      mask_targets_soft [P,28,28] (the RoIAligned GT masks before the `>= 0.5`)
  loss_rpn_cls, loss_rpn_bbox, loss_cls, loss_bbox, loss_mask: 0-d (forward_train's dict; the
      per-level RPN lists summed as `_parse_losses` does)
"""

import argparse
import json
import logging
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmdet_shim  # noqa: E402,F401  (must come before mmcv.ops / mmdet)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import mmcv  # noqa: E402
from mmdet.core import BitmapMasks, bbox2roi  # noqa: E402
from mmdet.models import build_detector  # noqa: E402
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask  # noqa: E402

NUM_CLASSES = 8
HUGE = 10**7

# --------------------------------------------------------------------------------------------
# The seed's configs (SEED.md §2.3-2.6), written out in full.


def backbone_cfg():
    return dict(
        type="ResNet",
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=True,
        style="pytorch",
    )


def neck_cfg():
    return dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5)


def rpn_head_cfg(loss_bbox):
    return dict(
        type="RPNHead",
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(
            type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[2, 4, 8, 16, 32]
        ),
        bbox_coder=dict(
            type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4
        ),
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
        loss_bbox=loss_bbox,
    )


def roi_extractor(size, strides):
    return dict(
        type="SingleRoIExtractor",
        roi_layer=dict(type="RoIAlign", output_size=size, sampling_ratio=0),
        out_channels=256,
        featmap_strides=strides,
    )


def bbox_head_cfg(stds, agnostic, loss_bbox):
    return dict(
        type="Shared2FCBBoxHead",
        in_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=NUM_CLASSES,
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=stds),
        reg_class_agnostic=agnostic,
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        loss_bbox=loss_bbox,
    )


def mask_head_cfg(kind="FCNMaskHead", **extra):
    return dict(
        type=kind,
        num_convs=4,
        in_channels=256,
        conv_out_channels=256,
        num_classes=NUM_CLASSES,
        loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0),
        **extra,
    )


def assigner(pos, neg, min_pos, low_quality=True):
    return dict(
        type="MaxIoUAssigner",
        pos_iou_thr=pos,
        neg_iou_thr=neg,
        min_pos_iou=min_pos,
        match_low_quality=low_quality,
        ignore_iof_thr=-1,
    )


def sampler(num, frac, add_gt):
    # The seed's num (256 / 512) is replaced by HUGE: every candidate is sampled, in order.
    del num
    return dict(
        type="RandomSampler",
        num=HUGE,
        pos_fraction=frac,
        neg_pos_ub=-1,
        add_gt_as_proposals=add_gt,
    )


def rpn_train_cfg(allowed_border=-1):
    return dict(
        assigner=assigner(0.7, 0.3, 0.3),
        sampler=sampler(256, 0.5, False),
        allowed_border=allowed_border,
        pos_weight=-1,
        debug=False,
    )


def proposal_cfg(max_per_img):
    return dict(
        nms_pre=2000, max_per_img=max_per_img, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0
    )


def test_cfg():
    return dict(
        rpn=proposal_cfg(1000),
        rcnn=dict(
            score_thr=0.25,
            nms=dict(type="nms", iou_threshold=0.3),
            max_per_img=1000,
            mask_thr_binary=-1,
        ),
    )


def maskrcnn_cfg():
    return dict(
        type="MaskRCNN",
        backbone=backbone_cfg(),
        neck=neck_cfg(),
        rpn_head=rpn_head_cfg(dict(type="L1Loss", loss_weight=1.0)),
        roi_head=dict(
            type="StandardRoIHead",
            bbox_roi_extractor=roi_extractor(7, [2, 4, 8, 16]),
            bbox_head=bbox_head_cfg([0.1, 0.1, 0.2, 0.2], False, dict(type="L1Loss", loss_weight=1.0)),
            mask_roi_extractor=roi_extractor(14, [2, 4, 8, 16]),
            mask_head=mask_head_cfg(),
        ),
        train_cfg=dict(
            rpn=rpn_train_cfg(),
            rpn_proposal=proposal_cfg(1000),
            rcnn=dict(
                assigner=assigner(0.5, 0.5, 0.5),
                sampler=sampler(512, 0.25, True),
                mask_size=28,
                pos_weight=-1,
                debug=False,
            ),
        ),
        test_cfg=test_cfg(),
    )


CASCADE_STDS = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]


def cascade_rcnn_train(low_quality):
    return [
        dict(
            assigner=assigner(t, t, t, low_quality),
            sampler=sampler(512, 0.25, True),
            mask_size=28,
            pos_weight=-1,
            debug=False,
        )
        for t in (0.5, 0.6, 0.7)
    ]


def cascade_bbox_heads():
    return [
        bbox_head_cfg(s, True, dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0))
        for s in CASCADE_STDS
    ]


def cascade_cfg():
    return dict(
        type="CascadeRCNN",
        backbone=backbone_cfg(),
        neck=neck_cfg(),
        rpn_head=rpn_head_cfg(dict(type="SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0)),
        roi_head=dict(
            type="CascadeRoIHead",
            num_stages=3,
            stage_loss_weights=[1, 0.5, 0.25],
            bbox_roi_extractor=roi_extractor(7, [2, 4, 8, 16]),
            bbox_head=cascade_bbox_heads(),
            mask_roi_extractor=roi_extractor(14, [2, 4, 8, 16]),
            mask_head=mask_head_cfg(),
        ),
        train_cfg=dict(
            rpn=rpn_train_cfg(),
            rpn_proposal=proposal_cfg(2000),
            rcnn=cascade_rcnn_train(low_quality=False),
        ),
        test_cfg=test_cfg(),
    )


def htc_cfg():
    return dict(
        type="HybridTaskCascade",
        backbone=backbone_cfg(),
        neck=neck_cfg(),
        rpn_head=rpn_head_cfg(dict(type="SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0)),
        roi_head=dict(
            type="HybridTaskCascadeRoIHead",
            interleaved=True,
            mask_info_flow=True,
            num_stages=3,
            stage_loss_weights=[1, 0.5, 0.25],
            bbox_roi_extractor=roi_extractor(7, [2, 4, 8, 16]),
            bbox_head=cascade_bbox_heads(),
            mask_roi_extractor=roi_extractor(14, [2, 4, 8, 16]),
            mask_head=[
                mask_head_cfg("HTCMaskHead", with_conv_res=False),
                mask_head_cfg("HTCMaskHead"),
                mask_head_cfg("HTCMaskHead"),
            ],
            semantic_roi_extractor=roi_extractor(14, [4]),
            semantic_head=dict(
                type="FusedSemanticHead",
                num_ins=5,
                fusion_level=1,
                num_convs=4,
                in_channels=256,
                conv_out_channels=256,
                num_classes=NUM_CLASSES,
                loss_seg=dict(type="CrossEntropyLoss", ignore_index=255, loss_weight=0.2),
            ),
        ),
        train_cfg=dict(
            rpn=rpn_train_cfg(allowed_border=0),
            rpn_proposal=proposal_cfg(2000),
            rcnn=cascade_rcnn_train(low_quality=True),
        ),
        test_cfg=test_cfg(),
    )


# --------------------------------------------------------------------------------------------
# Synthetic inputs.


def synthetic(h, w, n_cells, seed):
    """A normalised 3-channel image (h, w) with up to `n_cells` elliptic cells (boxes of two cells
    overlap by IoU < 0.3), their bitmap masks, pixel-extent boxes and labels in 0..2."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    masks, boxes = [], []
    tries = 0
    while len(masks) < n_cells and tries < 50 * n_cells:
        tries += 1
        cy, cx = rng.uniform(4, h - 4), rng.uniform(4, w - 4)
        a, b = rng.uniform(4, 14), rng.uniform(3, 9)
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        m = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        if m.sum() < 12:
            continue
        ys, xs = np.nonzero(m)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        if boxes:
            bb = np.stack(boxes)
            ix = np.clip(np.minimum(bb[:, 2], box[2]) - np.maximum(bb[:, 0], box[0]), 0, None)
            iy = np.clip(np.minimum(bb[:, 3], box[3]) - np.maximum(bb[:, 1], box[1]), 0, None)
            inter = ix * iy
            area = lambda q: (q[..., 2] - q[..., 0]) * (q[..., 3] - q[..., 1])  # noqa: E731
            if (inter / (area(bb) + area(box) - inter)).max() >= 0.3:
                continue
        masks.append(m)
        boxes.append(box)
    labels = rng.randint(0, 3, size=len(masks)).astype(np.int64)
    img = rng.normal(0.0, 0.25, size=(3, h, w)).astype(np.float32)
    img += 0.1 * np.sin(xx / 23.0)[None] + 0.1 * np.cos(yy / 17.0)[None]
    for m, lab in zip(masks, labels):
        tex = rng.uniform(0.8, 1.6) + 0.3 * rng.normal(size=(h, w)).astype(np.float32)
        for c in range(3):
            img[c][m] += tex[m] * (1.0 + 0.15 * c * (lab - 1))
    img = (img - img.mean()) / img.std()
    return img.astype(np.float32), np.stack(masks).astype(np.uint8), np.stack(boxes), labels


# --------------------------------------------------------------------------------------------
# Weights.


def randomise_and_calibrate(model, img, img_metas, gen):
    """Random BN affine + running stats calibrated on `img` (see the module doc), then the
    rescaling of the last layers. Everything from `gen` (a seeded torch.Generator)."""
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one pass = the batch statistics
            torch.nn.Module.train(bn, True)
        model.extract_feat(img)
        for bn in bns:
            bn.momentum = 0.1
            torch.nn.Module.train(bn, False)
            c = bn.num_features
            bn.running_mean.add_(0.1 * bn.running_var.sqrt() * torch.randn(c, generator=gen))
            bn.running_var.mul_(torch.exp((torch.rand(c, generator=gen) - 0.5) * 0.6))
            bn.num_batches_tracked.fill_(0)
    model.eval()
    with torch.no_grad():
        x = model.extract_feat(img)
        rpn = model.rpn_head
        cls, reg = rpn(x)
        rescale(rpn.rpn_cls, torch.cat([c.flatten() for c in cls]), 2.0, -2.0)
        rescale(rpn.rpn_reg, torch.cat([r.flatten() for r in reg]), 0.2, 0.0)
        props = rpn.simple_test_rpn(x, img_metas)
        rois = bbox2roi([p[:, :4] for p in props])
        return x, rois


def rescale(layer, out, std, mean):
    """Scales `layer` (weight and bias) so that its outputs `out` get std `std`, and shifts the
    bias so that their mean is `mean`."""
    s = std / max(out.std().item(), 1e-12)
    with torch.no_grad():
        layer.weight.mul_(s)
        layer.bias.mul_(s)
        layer.bias.add_(mean - out.mean().item() * s)


def calibrate_roi_heads(bbox_heads, mask_heads, rois_fn):
    """Rescales the class-logit, delta and mask-logit layers of the given heads.
    `rois_fn(i)` returns (box head outputs, mask logits) of stage i for the current weights."""
    for i, (bh, mh) in enumerate(zip(bbox_heads, mask_heads)):
        cls, reg, _ = rois_fn(i)
        rescale(bh.fc_cls, cls, 2.5, 0.0)
        rescale(bh.fc_reg, reg, 1.0, 0.0)
        _, _, mlog = rois_fn(i)
        rescale(mh.conv_logits, mlog, 3.0, 0.0)


def calibrated(name, img, metas, seed, cfg=None):
    """The model `name` (maskrcnn / cascade / htc) built with `seed` (or from `cfg`), randomised
    and calibrated on `img` as the module doc says: (model, FPN outputs of the final weights,
    HTC's semantic features or None)."""
    if cfg is None:
        cfg = {"maskrcnn": maskrcnn_cfg, "cascade": cascade_cfg, "htc": htc_cfg}[name]()
    model = build(cfg, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    roi = model.roi_head
    x, rois = randomise_and_calibrate(model, img, metas, gen)
    sub = rois[:256]
    sf = None
    with torch.no_grad():
        if name == "maskrcnn":

            def stage_out(_):
                r = roi._bbox_forward(x, rois)
                m = roi._mask_forward(x, sub)["mask_pred"]
                return r["cls_score"], r["bbox_pred"], m

            calibrate_roi_heads([roi.bbox_head], [roi.mask_head], stage_out)
            return model, x, sf
        if name == "htc":
            sem, _ = roi.semantic_head(x)
            rescale(roi.semantic_head.conv_logits, sem, 2.0, 0.0)
            _, sf = roi.semantic_head(x)

        def stage_out(i):
            if name == "htc":
                r = roi._bbox_forward(i, x, rois, semantic_feat=sf)
                mf = roi.mask_roi_extractor[-1](x[: len(roi.mask_roi_extractor[-1].featmap_strides)], sub)
                mf = mf + roi.semantic_roi_extractor([sf], sub)
                last = None
                for j in range(i + 1):
                    m, last = roi.mask_head[j](mf, last)
            else:
                r = roi._bbox_forward(i, x, rois)
                m = roi._mask_forward(i, x, sub)["mask_pred"]
            return r["cls_score"], r["bbox_pred"], m

        calibrate_roi_heads(roi.bbox_head, roi.mask_head, stage_out)
    return model, x, sf


def export_weights(model, path, pth=False):
    """The state_dict as safetensors at `path` and, with `pth`, also as the mmdet checkpoint
    `weights.pth` beside it ({"meta", "state_dict"}, what `tools/export_weights.py mmdet` reads)."""
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, path)
    if pth:
        torch.save({"meta": {"mmdet_version": "2.17.0"}, "state_dict": sd},
                   os.path.join(os.path.dirname(path), "weights.pth"))
    return sd


# --------------------------------------------------------------------------------------------
# Helpers.


def pasted_rects(masks):
    """(rects [K,4] int64 (top, left, h, w), values uint8) of the non-zero bounding rectangle of
    each uint8 mask [K,H,W]."""
    rects, vals = [], []
    for m in masks:
        nz = torch.nonzero(m)
        if nz.numel() == 0:
            rects.append([0, 0, 0, 0])
            continue
        t, l = nz.min(0).values.tolist()
        b, r = (nz.max(0).values + 1).tolist()
        rects.append([t, l, b - t, r - l])
        vals.append(m[t:b, l:r].flatten())
    v = torch.cat(vals) if vals else torch.zeros(0, dtype=torch.uint8)
    return torch.tensor(rects, dtype=torch.int64).view(-1, 4), v.to(torch.uint8).contiguous()


def gpu_paste(probs, boxes, h, w):
    """mmdet's `_do_paste_mask` with skip_empty=False (its GPU path: whole image), as uint8
    `(prob * 255)`, one detection at a time: [K, h, w]."""
    out = []
    for i in range(probs.shape[0]):
        m, _ = _do_paste_mask(probs[i][None, None], boxes[i : i + 1], h, w, False)
        out.append((m[0] * 255).to(torch.uint8))
    return torch.stack(out) if out else torch.zeros(0, h, w, dtype=torch.uint8)


def make_metas(h, w, hp, wp):
    return [
        dict(
            img_shape=(h, w, 3),
            ori_shape=(h, w, 3),
            pad_shape=(hp, wp, 3),
            batch_input_shape=(hp, wp),
            scale_factor=np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32),
            flip=False,
            flip_direction=None,
        )
    ]


def inputs(size, seed, cells):
    h, w = size
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    img_np, masks_np, boxes_np, labels_np = synthetic(h, w, cells, seed + 1000)
    img = torch.zeros(1, 3, hp, wp)
    img[0, :, :h, :w] = torch.from_numpy(img_np)
    metas = make_metas(h, w, hp, wp)
    gt_boxes = torch.from_numpy(boxes_np)
    gt_labels = torch.from_numpy(labels_np)
    # mmdet's Pad pads the masks to the padded shape too.
    pm = np.zeros((len(masks_np), hp, wp), np.uint8)
    pm[:, :h, :w] = masks_np
    gt_masks = BitmapMasks(pm, hp, wp)
    t = dict(
        image=img,
        img_hw=torch.tensor([h, w], dtype=torch.int64),
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        gt_masks=torch.from_numpy(masks_np),
    )
    return img, metas, gt_boxes, gt_labels, gt_masks, t


class Recorder:
    """Wraps methods of objects (instance attributes shadowing the class's) and records every call
    as (args, kwargs, result) under a key."""

    def __init__(self):
        self.calls = {}
        self.wrapped = []

    def wrap(self, obj, name, key):
        orig = getattr(obj, name)

        def f(*a, **k):
            out = orig(*a, **k)
            self.calls.setdefault(key, []).append((a, k, out))
            return out

        setattr(obj, name, f)
        self.wrapped.append((obj, name))

    def out(self, key, i=0):
        return self.calls[key][i][2]

    def args(self, key, i=0):
        return self.calls[key][i][0]

    def undo(self):
        for obj, name in self.wrapped:
            obj.__dict__.pop(name, None)
        self.wrapped = []


def build(cfg, seed):
    torch.manual_seed(seed)
    model = build_detector(mmcv.ConfigDict(cfg))
    model.init_weights()
    # The seed (SEED.md §2.1): stem stride removed after construction.
    model.backbone.conv1.stride = (1, 1)
    model.eval()
    return model


def sum_loss(v):
    if isinstance(v, (list, tuple)):
        return sum(sum_loss(x) for x in v)
    return v


def flat_levels(lists):
    """Per-level tensors [1, N_l, ...] of one image → [sum N_l, ...]."""
    return torch.cat([t[0] for t in lists], 0)


# --------------------------------------------------------------------------------------------
# Mask R-CNN.


def maskrcnn(args):
    t0 = time.time()
    size = tuple(int(v) for v in args.size.split("x"))
    img, metas, gt_boxes, gt_labels, gt_masks, t = inputs(size, args.seed, args.cells)
    model, x, _ = calibrated("maskrcnn", img, metas, args.seed)
    roi = model.roi_head
    os.makedirs(args.out, exist_ok=True)
    sd = export_weights(model, os.path.join(args.out, "weights.safetensors"))
    t_build = time.time() - t0

    scalars = {}
    with torch.no_grad():
        model.eval()
        # `x` (from the calibration) already holds the FPN outputs of the final weights: the
        # layers rescaled after it are all above the FPN.
        for i, f in enumerate(x):
            t[f"fpn_{i}"] = f
        cls, reg = model.rpn_head(x)
        for i, (c, r) in enumerate(zip(cls, reg)):
            t[f"rpn_cls_{i}"] = c
            t[f"rpn_reg_{i}"] = r
        props = model.rpn_head.simple_test_rpn(x, metas)
        t["proposals"] = props[0][:, :4]
        t["proposal_scores"] = props[0][:, 4]
        r = roi._bbox_forward(x, bbox2roi([props[0][:, :4]]))
        t["box_cls"] = r["cls_score"]
        t["box_reg"] = r["bbox_pred"]
        det_b, det_l = roi.simple_test_bboxes(x, metas, props, roi.test_cfg, rescale=False)
        det_b, det_l = det_b[0], det_l[0]
        t["det_boxes"] = det_b[:, :4]
        t["det_scores"] = det_b[:, 4]
        t["det_labels"] = det_l.to(torch.int64)
        k = det_b.shape[0]
        if k > 0:
            ml = roi._mask_forward(x, bbox2roi([det_b[:, :4]]))["mask_pred"]
        else:
            ml = torch.zeros(0, NUM_CLASSES, 28, 28)
        t["mask_logits"] = ml
        t["mask_probs"] = ml[torch.arange(k), det_l].sigmoid()
        # mmdet's get_seg_masks (CPU path), reassembled in detection order.
        h, w = size
        segm = roi.simple_test_mask(x, metas, [det_b], [det_l], rescale=False)[0]
        taken = [0] * NUM_CLASSES
        cpu = []
        for lab in det_l.tolist():
            cpu.append(torch.from_numpy(segm[lab][taken[lab]]))
            taken[lab] += 1
        cpu = torch.stack(cpu) if cpu else torch.zeros(0, h, w, dtype=torch.uint8)
        assert cpu.dtype == torch.uint8
        t["paste_rects"], t["paste_values"] = pasted_rects(cpu)
        # The GPU path of the same function: whole-image paste (skip_empty=False).
        gpu = gpu_paste(t["mask_probs"], det_b[:, :4], h, w)
        t["paste_gpu_rects"], t["paste_gpu_values"] = pasted_rects(gpu)
        scalars["paste_cpu_vs_gpu_pixels_differing"] = int((cpu != gpu).sum())
    t_infer = time.time() - t0 - t_build

    if not args.no_train:
        rec = Recorder()
        rec.wrap(model.rpn_head, "get_targets", "rpn_targets")
        rec.wrap(roi, "forward_train", "roi_forward_train")
        rec.wrap(roi.bbox_sampler, "sample", "rcnn_sample")
        rec.wrap(roi.bbox_head, "get_targets", "bbox_targets")
        rec.wrap(roi.mask_head, "get_targets", "mask_targets")
        model.train()
        assert not model.backbone.bn1.training, "norm_eval must keep BN in eval mode"
        with torch.no_grad():
            losses = model.forward_train(img, metas, [gt_boxes], [gt_labels], gt_masks=[gt_masks])
        model.eval()
        rec.undo()
        train_props = rec.args("roi_forward_train")[2][0]
        t["train_proposals"] = train_props[:, :4]
        t["train_proposal_scores"] = train_props[:, 4]
        lab, lw, bt, bw, npos, nneg = rec.out("rpn_targets")[:6]
        t["rpn_labels"] = flat_levels(lab).to(torch.int64)
        t["rpn_label_weights"] = flat_levels(lw)
        t["rpn_bbox_targets"] = flat_levels(bt)
        t["rpn_bbox_weights"] = flat_levels(bw)
        scalars["rpn_num_pos"], scalars["rpn_num_neg"] = int(npos), int(nneg)
        assert len(rec.calls["rcnn_sample"]) == 1
        res = rec.out("rcnn_sample")
        t["rcnn_rois"] = bbox2roi([res.bboxes])
        labels, lweights, btargets, bweights = rec.out("bbox_targets")
        t["rcnn_labels"] = labels.to(torch.int64)
        t["rcnn_label_weights"] = lweights
        t["rcnn_bbox_targets"] = btargets
        t["rcnn_bbox_weights"] = bweights
        t["rcnn_pos_is_gt"] = res.pos_is_gt.to(torch.uint8)
        t["rcnn_pos_gt_inds"] = res.pos_assigned_gt_inds.to(torch.int64)
        t["mask_targets"] = rec.out("mask_targets")
        # The same RoIAlign of the GT masks before the `>= 0.5` binarisation (for diagnosis).
        pos = res.pos_bboxes.numpy().copy()
        pos[:, [0, 2]] = np.clip(pos[:, [0, 2]], 0, gt_masks.width)
        pos[:, [1, 3]] = np.clip(pos[:, [1, 3]], 0, gt_masks.height)
        soft = gt_masks.crop_and_resize(
            pos, (28, 28), inds=res.pos_assigned_gt_inds.numpy(), device="cpu", binarize=False
        )
        t["mask_targets_soft"] = torch.from_numpy(soft.to_ndarray()).float()
        assert torch.equal((t["mask_targets_soft"] >= 0.5).float(), t["mask_targets"])
        scalars["rcnn_num_pos"], scalars["rcnn_num_neg"] = len(res.pos_inds), len(res.neg_inds)
        for key in ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"):
            v = sum_loss(losses[key])
            t[key] = v.reshape([]).float()
            scalars[key] = float(v)
        scalars["acc"] = float(losses["acc"])
    t_train = time.time() - t0 - t_build - t_infer
    scalars.update(
        num_proposals=int(t["proposals"].shape[0]),
        num_detections=int(t["det_boxes"].shape[0]),
        num_gt=int(gt_boxes.shape[0]),
        seconds_build=round(t_build, 2),
        seconds_inference=round(t_infer, 2),
        seconds_training=round(t_train, 2),
        state_dict_keys=len(sd),
    )
    finish(args.out, t, scalars)


# --------------------------------------------------------------------------------------------
# Cascade Mask R-CNN and HTC.


def semantic_target(masks_np, h, w, hp, wp):
    """The seed's HTC target (SEED.md §1.9): the union of the instance masks as 0/1, padded with
    255 (ignore) by Pad, then SegRescale(1/4) (nearest) as in config_aug_semantic.py."""
    seg = np.full((hp, wp), 255, np.uint8)
    seg[:h, :w] = masks_np.max(0) if len(masks_np) else 0
    seg = mmcv.imrescale(seg, 0.25, interpolation="nearest", backend="cv2")
    return torch.from_numpy(seg)[None, None].contiguous()


def cascade_like(args):
    """`cascade` / `htc`. stages.safetensors holds the inputs (as for maskrcnn, plus for HTC
    gt_semantic_seg [1,1,Hp/4,Wp/4] uint8), fpn_{l}, rpn_cls_{l}, rpn_reg_{l}, proposals /
    proposal_scores, then per stage i = 0..2 of `simple_test`:
      s{i}_rois [N,5] (the RoIs stage i is run on: the proposals for s0, then the refined boxes),
      s{i}_cls [N,9], s{i}_reg [N,4] (class-agnostic deltas), s{i}_refined [N,5] for i < 2
      (`regress_by_class` with argmax(cls[:, :-1]), i.e. s{i+1}_rois),
      cls_avg [N,9] (the mean of the raw logits of the 3 stages, what get_bboxes gets),
      det_boxes / det_scores / det_labels (last stage's deltas on s2_rois, cls_avg),
      s{i}_mask_probs [K,28,28] (sigmoid, label channel; HTC: the mask heads chained through
      last_feat as in simple_test), mask_probs [K,28,28] (merge_aug_masks = mean over stages),
      paste_rects / paste_values, paste_gpu_rects / paste_gpu_values as for maskrcnn,
      HTC: semantic_logits [1,8,Hp/4,Wp/4];
    and the losses of forward_train with deterministic sampling: loss_rpn_cls, loss_rpn_bbox,
    s{i}.loss_cls, s{i}.loss_bbox, s{i}.loss_mask (as `s{i}_loss_cls`, ... in the safetensors;
    mmdet's names in scalars.json), HTC: loss_semantic_seg."""
    t0 = time.time()
    htc = args.model == "htc"
    size = tuple(int(v) for v in args.size.split("x"))
    img, metas, gt_boxes, gt_labels, gt_masks, t = inputs(size, args.seed, args.cells)
    h, w = size
    hp, wp = img.shape[-2:]
    model, x, sf = calibrated(args.model, img, metas, args.seed)
    roi = model.roi_head
    os.makedirs(args.out, exist_ok=True)
    sd = export_weights(model, os.path.join(args.out, "weights.safetensors"), args.pth)
    t_build = time.time() - t0

    scalars = {}
    masks_np = t["gt_masks"].numpy()
    if htc:
        t["gt_semantic_seg"] = semantic_target(masks_np, h, w, hp, wp)
    with torch.no_grad():
        for i, f in enumerate(x):
            t[f"fpn_{i}"] = f
        cls, reg = model.rpn_head(x)
        for i, (c, r) in enumerate(zip(cls, reg)):
            t[f"rpn_cls_{i}"] = c
            t[f"rpn_reg_{i}"] = r
        props = model.rpn_head.simple_test_rpn(x, metas)
        t["proposals"] = props[0][:, :4]
        t["proposal_scores"] = props[0][:, 4]
        rec = Recorder()
        rec.wrap(roi, "_bbox_forward", "bbox_forward")
        for i in range(2):
            rec.wrap(roi.bbox_head[i], "regress_by_class", f"refine_{i}")
        rec.wrap(roi.bbox_head[-1], "get_bboxes", "get_bboxes")
        rec.wrap(roi.mask_head[-1], "get_seg_masks", "seg")
        if htc:
            rec.wrap(roi.semantic_head, "forward", "semantic")
            for i in range(3):
                rec.wrap(roi.mask_head[i], "forward", f"mask_{i}")
        else:
            rec.wrap(roi, "_mask_forward", "mask_forward")
        roi.simple_test(x, props, metas, rescale=False)
        rec.undo()
        if htc:
            t["semantic_logits"] = rec.out("semantic")[0]
        assert len(rec.calls["bbox_forward"]) == 3
        for i in range(3):
            stage, _, r_in = rec.args("bbox_forward", i)[:3]
            assert stage == i
            out = rec.out("bbox_forward", i)
            t[f"s{i}_rois"] = r_in
            t[f"s{i}_cls"] = out["cls_score"]
            t[f"s{i}_reg"] = out["bbox_pred"]
        for i in range(2):
            t[f"s{i}_refined"] = rec.out(f"refine_{i}")
        t["cls_avg"] = rec.args("get_bboxes")[1]
        det_b, det_l = rec.out("get_bboxes")
        t["det_boxes"] = det_b[:, :4]
        t["det_scores"] = det_b[:, 4]
        t["det_labels"] = det_l.to(torch.int64)
        k = det_b.shape[0]
        ar = torch.arange(k)
        for i in range(3):
            m = rec.out(f"mask_{i}")[0] if htc else rec.out("mask_forward", i)["mask_pred"]
            t[f"s{i}_mask_probs"] = m[ar, det_l].sigmoid()
        merged = torch.from_numpy(np.asarray(rec.args("seg")[0])).float()
        t["mask_probs"] = merged[ar, det_l]
        segm = rec.out("seg")
        taken = [0] * NUM_CLASSES
        cpu = []
        for lab in det_l.tolist():
            cpu.append(torch.from_numpy(segm[lab][taken[lab]]))
            taken[lab] += 1
        cpu = torch.stack(cpu) if cpu else torch.zeros(0, h, w, dtype=torch.uint8)
        t["paste_rects"], t["paste_values"] = pasted_rects(cpu)
        gpu = gpu_paste(t["mask_probs"], det_b[:, :4], h, w)
        t["paste_gpu_rects"], t["paste_gpu_values"] = pasted_rects(gpu)
        scalars["paste_cpu_vs_gpu_pixels_differing"] = int((cpu != gpu).sum())
    t_infer = time.time() - t0 - t_build

    if not args.no_train:
        rec = Recorder()
        for i in range(3):
            rec.wrap(roi.bbox_sampler[i], "sample", f"sample_{i}")
        model.train()
        assert not model.backbone.bn1.training, "norm_eval must keep BN in eval mode"
        kw = dict(gt_masks=[gt_masks])
        if htc:
            kw["gt_semantic_seg"] = t["gt_semantic_seg"]
        with torch.no_grad():
            losses = model.forward_train(img, metas, [gt_boxes], [gt_labels], **kw)
        model.eval()
        for key, v in losses.items():
            if "loss" in key:
                v = sum_loss(v)
                t[key.replace(".", "_")] = v.reshape([]).float()
                scalars[key] = float(v)
        rec.undo()
        for i in range(3):
            res = [c[2] for c in rec.calls[f"sample_{i}"]]
            scalars[f"s{i}_samplings"] = len(res)
            scalars[f"s{i}_num_pos"] = [len(r.pos_inds) for r in res]
            scalars[f"s{i}_num_neg"] = [len(r.neg_inds) for r in res]
    t_train = time.time() - t0 - t_build - t_infer
    scalars.update(
        num_proposals=int(t["proposals"].shape[0]),
        num_detections=int(t["det_boxes"].shape[0]),
        num_gt=int(gt_boxes.shape[0]),
        seconds_build=round(t_build, 2),
        seconds_inference=round(t_infer, 2),
        seconds_training=round(t_train, 2),
        state_dict_keys=len(sd),
    )
    finish(args.out, t, scalars)


def finish(out, t, scalars):
    save_file({k: v.detach().contiguous() for k, v in t.items()}, os.path.join(out, "stages.safetensors"))
    with open(os.path.join(out, "scalars.json"), "w") as f:
        json.dump(scalars, f, indent=1, sort_keys=True)
    print(json.dumps(scalars, sort_keys=True))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["maskrcnn", "cascade", "htc"])
    p.add_argument("out")
    p.add_argument("--size", default="256x256")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cells", type=int, default=None)
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--pth", action="store_true", help="also write OUT/weights.pth (mmdet checkpoint)")
    args = p.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    # init_weights logs every parameter: the first get_logger call fixes the level.
    mmcv.utils.get_logger("mmcv", log_level=logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.cells is None:
        h, w = (int(v) for v in args.size.split("x"))
        args.cells = 40 if h * w <= 256 * 256 else 120
    fn = {"maskrcnn": maskrcnn, "cascade": cascade_like, "htc": cascade_like}[args.model]
    fn(args)


if __name__ == "__main__":
    main()
