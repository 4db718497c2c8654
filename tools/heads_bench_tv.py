#!/usr/bin/env python3
"""torchvision baseline for tools/bench_heads.sh: maskrcnn_resnet50_fpn, conv1 stride 1, anchor
sizes 16..256 (the seed's), random init, synthetic 256x256 crops with ~40 discs each; one SGD
training step, then inference on one 520x704 image. Env: BATCH, ITERS, WARMUP, DEVICE, AMP (1: the
training forward under float16 autocast, as bench_heads does)."""
import os
import time

import torch
import torchvision
from torchvision.models.detection.anchor_utils import AnchorGenerator


def discs(h, w, n, g):
    masks, boxes = [], []
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for _ in range(n):
        r = 4 + 11 * torch.rand(1, generator=g).item()
        cy = r + (h - 2 * r) * torch.rand(1, generator=g).item()
        cx = r + (w - 2 * r) * torch.rand(1, generator=g).item()
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        ys, xs = torch.where(m)
        if len(ys) == 0:
            continue
        masks.append(m.to(torch.uint8))
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0])
    return torch.stack(masks), torch.tensor(boxes, dtype=torch.float32)


def main():
    batch = int(os.environ.get("BATCH", 8))
    iters = int(os.environ.get("ITERS", 3))
    warmup = int(os.environ.get("WARMUP", 1))
    dev = torch.device("cuda" if os.environ.get("DEVICE") == "cuda" else "cpu")
    amp = os.environ.get("AMP") == "1" and dev.type == "cuda"
    torch.manual_seed(0)
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=4, rpn_anchor_generator=anchors,
        min_size=256, max_size=256, image_mean=[0.0] * 3, image_std=[1.0] * 3,
        box_detections_per_img=1000, box_score_thresh=0.25, box_nms_thresh=0.3,
        rpn_pre_nms_top_n_test=2000, rpn_post_nms_top_n_test=1000,
    )
    model.backbone.body.conv1.stride = (1, 1)
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    targets = []
    for i in range(batch):
        m, b = discs(256, 256, 40, g)
        targets.append({"boxes": b.to(dev), "labels": (torch.arange(len(b)) % 3 + 1).to(dev), "masks": m.to(dev)})
    images = [torch.randn(3, 256, 256, device=dev) for _ in range(batch)]
    model.train()
    ts = []
    for i in range(warmup + iters):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            ts.append(time.perf_counter() - t0)
    train_ms = 1e3 * sum(ts) / len(ts)
    if dev.type == "cuda":
        gib = 1024.0**3
        print(f"torchvision train peak memory: allocated {torch.cuda.max_memory_allocated() / gib:.2f} GiB, "
              f"reserved {torch.cuda.max_memory_reserved() / gib:.2f} GiB")
    print(f"torchvision train step: batch {batch} 256x256 ~40 inst: {train_ms:.1f} ms/iter, {batch / train_ms * 1e3:.2f} img/s")
    model.eval()
    model.transform.min_size = (520,)
    model.transform.max_size = 704
    img = torch.randn(3, 520, 704, device=dev)
    ts = []
    with torch.no_grad():
        for i in range(warmup + iters):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model([img])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                ts.append(time.perf_counter() - t0)
    infer_ms = 1e3 * sum(ts) / len(ts)
    print(f"torchvision inference 520x704: {infer_ms:.1f} ms/img ({len(out[0]['boxes'])} detections)")
    print(f"RESULT torchvision train_ms={train_ms:.3f} infer_ms={infer_ms:.3f}")


if __name__ == "__main__":
    main()
