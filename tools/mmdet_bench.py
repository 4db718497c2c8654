#!/usr/bin/env python3
"""mmdet 2.17 side of tools/bench_mmdet.sh: the seed's detector (maskrcnn / cascade / htc, the
configs of tools/mmdet_fixtures.py with the seed's sampler sizes: 256 RPN, 512 RoIs an image),
randomised and calibrated on a synthetic 520x704 image as the parity fixtures are (so that it
detects cells), timed in inference on that image (`simple_test`, masks pasted, as the seed's
test pipeline) and in one SGD training step on a batch of two synthetic 256x256 crops with ~40
cells each (forward_train, backward, step; BN frozen by norm_eval as in the seed).

Usage: mmdet_bench.py MODEL OUT_DIR
Writes OUT_DIR/weights.safetensors (the calibrated state_dict, mmdet keys) and
OUT_DIR/inputs.safetensors (infer_image [1,3,544,704], infer_hw; train_images [2,3,256,256];
gt_boxes_{b}, gt_labels_{b}, gt_masks_{b} for b = 0, 1; HTC: gt_semantic_seg [2,1,64,64]) for
the Rust side (crates/cellseg-heads/examples/bench_mmdet.rs), then prints
`RESULT mmdet model=... infer_ms=... detections=... train_ms=...` (medians).
Env: ITERS (3), WARMUP (1), THREADS (2)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmdet_fixtures as fx  # noqa: E402  (imports mmdet_shim before mmdet)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import mmcv  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmdet.models.roi_heads.mask_heads import FusedSemanticHead  # noqa: E402


def semantic_forward_out_of_place(self, feats):
    """FusedSemanticHead.forward of mmdet 2.17 with its `x += lateral(feat)` written `x = x + …`:
    in place, it overwrites a ReLU output that autograd saved, which torch 2.x refuses in
    backward ("modified by an inplace operation"). The values are the same."""
    x = self.lateral_convs[self.fusion_level](feats[self.fusion_level])
    size = tuple(x.shape[-2:])
    for i, feat in enumerate(feats):
        if i != self.fusion_level:
            x = x + self.lateral_convs[i](F.interpolate(feat, size=size, mode="bilinear", align_corners=True))
    for conv in self.convs:
        x = conv(x)
    return self.conv_logits(x), self.conv_embedding(x)


FusedSemanticHead.forward = semantic_forward_out_of_place


def seed_sampler(num, frac, add_gt):
    # The seed's sampler (the fixtures replace `num` by HUGE for deterministic targets).
    return dict(type="RandomSampler", num=num, pos_fraction=frac, neg_pos_ub=-1, add_gt_as_proposals=add_gt)


def timed(iters, warmup, fn):
    t, out = [], None
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        out = fn()
        if i >= warmup:
            t.append(1e3 * (time.perf_counter() - t0))
    return sorted(t)[len(t) // 2], out


def main():
    name, out = sys.argv[1], sys.argv[2]
    iters = int(os.environ.get("ITERS", 3))
    warmup = int(os.environ.get("WARMUP", 1))
    torch.set_num_threads(int(os.environ.get("THREADS", 2)))
    mmcv.utils.get_logger("mmcv", log_level=50)
    fx.sampler = seed_sampler
    cfg = {"maskrcnn": fx.maskrcnn_cfg, "cascade": fx.cascade_cfg, "htc": fx.htc_cfg}[name]()
    img, metas, _, _, _, _ = fx.inputs((520, 704), 0, 120)
    model, _, _ = fx.calibrated(name, img, metas, 0, cfg)
    os.makedirs(out, exist_ok=True)
    fx.export_weights(model, os.path.join(out, "weights.safetensors"))
    t = {"infer_image": img, "infer_hw": torch.tensor([520, 704], dtype=torch.int64)}
    # The training batch: two 256x256 crops with 40 cells each.
    crops = [fx.inputs((256, 256), 10 + b, 40) for b in range(2)]
    train_img = torch.cat([c[0] for c in crops], 0)
    train_metas = [c[1][0] for c in crops]
    t["train_images"] = train_img
    for b, c in enumerate(crops):
        t[f"gt_boxes_{b}"] = c[2]
        t[f"gt_labels_{b}"] = c[3]
        t[f"gt_masks_{b}"] = c[5]["gt_masks"]
    extra = {}
    if name == "htc":
        sem = [fx.semantic_target(c[5]["gt_masks"].numpy(), 256, 256, 256, 256) for c in crops]
        t["gt_semantic_seg"] = torch.cat(sem, 0)
        extra["gt_semantic_seg"] = t["gt_semantic_seg"].long()
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(out, "inputs.safetensors"))

    model.eval()

    def infer():
        with torch.no_grad():
            return model.simple_test(img, metas, rescale=True)

    infer_ms, res = timed(iters, warmup, infer)
    bbox = res[0][0] if isinstance(res[0], tuple) else res[0]["ensemble"][0]
    detections = sum(len(b) for b in bbox)

    model.train()  # norm_eval keeps the backbone's BN in eval mode
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad()
        losses = model.forward_train(
            train_img,
            train_metas,
            [c[2] for c in crops],
            [c[3] for c in crops],
            gt_masks=[c[4] for c in crops],
            **extra,
        )
        loss, _ = model._parse_losses(losses)
        loss.backward()
        opt.step()
        return loss.item()

    # The calibrated weights are the same on both sides before the timed steps; the steps then
    # move both alike (same data, same lr), so every step sees comparable detections.
    train_ms, loss = timed(iters, warmup, step)
    print(f"mmdet {name}: inference {infer_ms:.1f} ms ({detections} detections), train step {train_ms:.1f} ms (loss {loss:.4f})")
    print(f"RESULT mmdet model={name} infer_ms={infer_ms:.3f} detections={detections} train_ms={train_ms:.3f}")


if __name__ == "__main__":
    main()
