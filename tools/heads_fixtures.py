#!/usr/bin/env python3
"""Reference numbers for the cellseg-heads parity tests (run at test time from .venv).

Usage:
  heads_fixtures.py roi_align OUT.safetensors
      torchvision.ops.roi_align outputs and input gradients, aligned and not, sampling 0 and 2,
      RoIs partly or fully outside the image.
  heads_fixtures.py maskrcnn OUTDIR
      torchvision maskrcnn_resnet50_fpn (random init, num_classes=4 = 3 fg + bg) in eval mode on a
      normalised, padded 1x3x128x160 input: weights renamed to mmdet keys (weights.safetensors) and
      every stage (stages.safetensors). Only the resize of GeneralizedRCNNTransform is bypassed and
      its normalisation set to identity; no other patch: the Rust side sets its switches to
      torchvision's values (rounded anchors, unaligned RoIAlign with sampling 2, max-only delta
      clamp, background-first classes).
"""
import sys

import torch
import torchvision
from safetensors.torch import save_file


def roi_align_fixture(out):
    torch.manual_seed(0)
    feats = torch.randn(2, 3, 13, 17, dtype=torch.float32)
    # (batch, x1, y1, x2, y2) in input pixels; spatial_scale 0.5 below.
    rois = torch.tensor(
        [
            [0, 2.0, 3.0, 14.0, 12.0],
            [1, -5.0, -4.0, 6.0, 3.0],  # partly outside
            [0, 30.0, 1.0, 40.0, 20.0],  # partly outside (right)
            [1, 50.0, 40.0, 60.0, 55.0],  # fully outside
            [0, 4.3, 4.1, 4.6, 4.2],  # sub-pixel
            [1, 7.0, 7.0, 7.0, 7.0],  # empty
            [0, 0.0, 0.0, 34.0, 26.0],  # whole image
            [1, 10.5, 3.25, 31.75, 9.5],
            [0, -20.0, -20.0, -3.0, -1.5],  # fully outside (top-left), within -1 band after scale?
            [1, 1.0, 20.0, 33.0, 25.9],
        ],
        dtype=torch.float32,
    )
    weights = torch.randn(rois.shape[0], 3, 7, 7)
    tensors = {"features": feats, "rois": rois, "weights": weights}
    for aligned in (True, False):
        for sr in (0, 2):
            f = feats.clone().requires_grad_(True)
            o = torchvision.ops.roi_align(f, rois, (7, 7), 0.5, sr, aligned)
            (o * weights).sum().backward()
            key = f"a{int(aligned)}_s{sr}"
            tensors[f"out_{key}"] = o.detach().contiguous()
            tensors[f"grad_{key}"] = f.grad.contiguous()
    save_file(tensors, out)


def rename(sd):
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone.body."):
            nk = "backbone." + k[len("backbone.body.") :]
        elif k.startswith("backbone.fpn.inner_blocks."):
            i = k.split(".")[3]
            nk = f"neck.lateral_convs.{i}.conv.{k.split('.')[-1]}"
        elif k.startswith("backbone.fpn.layer_blocks."):
            i = k.split(".")[3]
            nk = f"neck.fpn_convs.{i}.conv.{k.split('.')[-1]}"
        elif k.startswith("rpn.head.conv.0.0."):
            nk = "rpn_head.rpn_conv." + k.split(".")[-1]
        elif k.startswith("rpn.head.cls_logits."):
            nk = "rpn_head.rpn_cls." + k.split(".")[-1]
        elif k.startswith("rpn.head.bbox_pred."):
            nk = "rpn_head.rpn_reg." + k.split(".")[-1]
        elif k.startswith("roi_heads.box_head.fc6."):
            nk = "roi_head.bbox_head.shared_fcs.0." + k.split(".")[-1]
        elif k.startswith("roi_heads.box_head.fc7."):
            nk = "roi_head.bbox_head.shared_fcs.1." + k.split(".")[-1]
        elif k.startswith("roi_heads.box_predictor.cls_score."):
            nk = "roi_head.bbox_head.fc_cls." + k.split(".")[-1]
        elif k.startswith("roi_heads.box_predictor.bbox_pred."):
            nk = "roi_head.bbox_head.fc_reg." + k.split(".")[-1]
        elif k.startswith("roi_heads.mask_head."):
            i = k.split(".")[2]
            nk = f"roi_head.mask_head.convs.{i}.conv.{k.split('.')[-1]}"
        elif k.startswith("roi_heads.mask_predictor.conv5_mask."):
            nk = "roi_head.mask_head.upsample." + k.split(".")[-1]
        elif k.startswith("roi_heads.mask_predictor.mask_fcn_logits."):
            nk = "roi_head.mask_head.conv_logits." + k.split(".")[-1]
        else:
            raise KeyError(k)
        out[nk] = v.detach().clone().contiguous()
    return out


def maskrcnn_fixture(outdir):
    torch.manual_seed(0)
    h, w = 128, 160
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=4, min_size=h, max_size=w,
        image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
    )
    # Non-trivial BN statistics so that a wrong BN mapping shows.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    model.transform.resize = lambda image, target=None: (image, target)
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        # A random R50 blows activations up to ~1e3: rescale each FPN output conv so that its output
        # has unit std, then make the random RPN and classifier decisive enough that proposals move
        # away from the anchors and class scores spread.
        outs = model.backbone(x)
        for i, f in enumerate(list(outs.values())[:4]):
            s = f.std()
            model.backbone.fpn.layer_blocks[i][0].weight.div_(s)
            model.backbone.fpn.layer_blocks[i][0].bias.div_(s)
        model.rpn.head.cls_logits.weight.mul_(30.0)
        model.rpn.head.bbox_pred.weight.mul_(5.0)
        model.roi_heads.box_predictor.cls_score.weight.mul_(5.0)
    with torch.no_grad():
        images, _ = model.transform([x[0]])
        assert images.tensors.shape[-2:] == (h, w)
        feats = model.backbone(images.tensors)
        flist = list(feats.values())
        obj, deltas = model.rpn.head(flist)
        proposals, _ = model.rpn(images, feats)
        props = proposals[0]
        # The same proposals with their objectness scores (torchvision's rpn.forward drops them).
        anchors = model.rpn.anchor_generator(images, flist)
        num_anchors = [o[0].numel() for o in obj]
        o2, d2 = torchvision.models.detection.rpn.concat_box_prediction_layers(obj, deltas)
        boxes2 = model.rpn.box_coder.decode(d2.detach(), anchors).view(1, -1, 4)
        fb, fs = model.rpn.filter_proposals(boxes2, o2.detach(), images.image_sizes, num_anchors)
        assert torch.equal(fb[0], props)
        prop_scores = fs[0]
        box_feats = model.roi_heads.box_roi_pool(feats, [props], images.image_sizes)
        cls, reg = model.roi_heads.box_predictor(model.roi_heads.box_head(box_feats))
        dets, _ = model.roi_heads(feats, proposals, images.image_sizes)
        d = dets[0]
        mask_feats = model.roi_heads.mask_roi_pool(feats, [d["boxes"]], images.image_sizes)
        mask_logits = model.roi_heads.mask_predictor(model.roi_heads.mask_head(mask_feats))
        # torchvision's own paste of its 28x28 probabilities (expand by 1 px, integer box, bilinear).
        pasted = torchvision.models.detection.roi_heads.paste_masks_in_image(
            d["masks"], d["boxes"], (h, w), padding=1
        )[:, 0]
    t = {"image": x}
    for i, f in enumerate(flist):
        t[f"fpn_{i}"] = f
    for i, (o, r) in enumerate(zip(obj, deltas)):
        t[f"rpn_cls_{i}"] = o
        t[f"rpn_reg_{i}"] = r
    t["proposals"] = props
    t["proposal_scores"] = prop_scores
    t["box_feats"] = box_feats
    t["cls_logits"] = cls
    t["box_deltas"] = reg
    t["det_boxes"] = d["boxes"]
    t["det_scores"] = d["scores"]
    t["det_labels"] = d["labels"]
    t["mask_feats"] = mask_feats
    t["mask_logits"] = mask_logits
    t["mask_probs"] = d["masks"][:, 0]
    t["pasted"] = pasted
    save_file({k: v.contiguous() for k, v in t.items()}, f"{outdir}/stages.safetensors")
    save_file(rename(model.state_dict()), f"{outdir}/weights.safetensors")


if __name__ == "__main__":
    torch.set_num_threads(2)
    if sys.argv[1] == "roi_align":
        roi_align_fixture(sys.argv[2])
    elif sys.argv[1] == "maskrcnn":
        maskrcnn_fixture(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
