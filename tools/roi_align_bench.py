#!/usr/bin/env python3
"""Baseline for tools/bench_roi_align.sh: mmdet 2.17's SingleRoIExtractor loop (map each RoI to
its level, one roi_align per level on that level's RoIs, scattered back) over
torchvision.ops.roi_align (aligned, sampling_ratio 0: the seed's settings), on the RoIs of
crates/cellseg-heads/examples/bench_roi_align.rs (same LCG, same cases). Forward under no_grad,
then forward + backward of sum(out * w). Env: ITERS (5), WARMUP (1), THREADS (2)."""
import os
import time

import torch
import torchvision


def rois(n, images, h, w):
    state = 12345
    mask = (1 << 64) - 1

    def nxt():
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & mask
        return (state >> 11) / float(1 << 53)

    v = []
    for i in range(n):
        bw, bh = 6.0 + 54.0 * nxt(), 6.0 + 54.0 * nxt()
        x, y = (w - bw) * nxt(), (h - bh) * nxt()
        v.append([float(i % images), x, y, x + bw, y + bh])
    return torch.tensor(v, dtype=torch.float32)


def extract(feats, r, p):
    # mmdet SingleRoIExtractor.map_roi_levels (finest_scale 56) and forward.
    scale = torch.sqrt((r[:, 3] - r[:, 1]) * (r[:, 4] - r[:, 2]))
    lvl = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(min=0, max=len(feats) - 1).long()
    out = feats[0].new_zeros(r.size(0), feats[0].size(1), p, p)
    for i, (f, s) in enumerate(zip(feats, (2, 4, 8, 16))):
        inds = (lvl == i).nonzero(as_tuple=False).squeeze(1)
        if inds.numel() > 0:
            out[inds] = torchvision.ops.roi_align(f, r[inds], (p, p), 1.0 / s, 0, True)
    return out


def timed(iters, warmup, fn):
    t = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            t.append(1e3 * (time.perf_counter() - t0))
    return sorted(t)[len(t) // 2]


def main():
    iters = int(os.environ.get("ITERS", 5))
    warmup = int(os.environ.get("WARMUP", 1))
    torch.set_num_threads(int(os.environ.get("THREADS", 2)))
    cases = [
        ("box_train", 2, 256, 256, 1024, 7),
        ("mask_train", 2, 256, 256, 256, 14),
        ("box_infer", 1, 544, 704, 1000, 7),
        ("mask_infer", 1, 544, 704, 100, 14),
    ]
    for name, images, h, w, n, p in cases:
        torch.manual_seed(0)
        feats = [torch.randn(images, 256, h // s, w // s) for s in (2, 4, 8, 16)]
        r = rois(n, images, float(h), float(w))
        weights = torch.randn(n, 256, p, p)

        def forward():
            with torch.no_grad():
                extract(feats, r, p)

        def backward():
            leaves = [f.detach().requires_grad_(True) for f in feats]
            (extract(leaves, r, p) * weights).sum().backward()

        f = timed(iters, warmup, forward)
        b = timed(iters, warmup, backward)
        print(f"RESULT mmdet case={name} forward_ms={f:.3f} train_ms={b:.3f}")


if __name__ == "__main__":
    main()
