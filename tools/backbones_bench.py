#!/usr/bin/env python3
"""PyTorch baseline for crates/cellseg-backbones/benches/backbones.rs: the same trunks (torchvision /
timm, random init, eval, no grad) + torchvision FPN, the same input and thread count.

    backbones_bench.py [--size 256] [--iters 5] [--threads 2] [--stem-stride 1] [--cuda] NAME...

Output: one line per trunk, `name<TAB>median_ms<TAB>min_ms`.
"""
import argparse
import os
import sys
import time
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backbones_fixtures import make_trunk, set_stem_stride, trunk_forward  # noqa: E402
from torchvision.ops import FeaturePyramidNetwork  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stem-stride", type=int, default=1)
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("names", nargs="*", default=["resnet50", "tf_efficientnet_b4"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if a.cuda else "cpu")
    torch.manual_seed(0)
    for name in a.names:
        model, effnet = make_trunk(name)
        set_stem_stride(model, effnet, a.stem_stride)
        model = model.eval().to(dev)
        with torch.no_grad():
            chans = [t.shape[1] for t in trunk_forward(model, effnet, torch.zeros(1, 3, 64, 64, device=dev))]
        fpn = FeaturePyramidNetwork(chans, 256, extra_blocks=LastLevelMaxPool()).eval().to(dev)
        x = torch.randn(1, 3, a.size, a.size, device=dev)

        def run():
            with torch.no_grad():
                feats = trunk_forward(model, effnet, x)
                out = fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
                if a.cuda:
                    torch.cuda.synchronize()
                return out

        run()
        times = []
        for _ in range(a.iters):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1e3)
        times.sort()
        print(f"{name}\t{times[len(times) // 2]:.2f}\t{times[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
