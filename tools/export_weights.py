#!/usr/bin/env python3
"""Convert a torchvision / timm / mmdet checkpoint (.pth) into a cellseg safetensors file.

Nothing here downloads weights: pass a file you already have.

    export_weights.py torchvision resnet50-0676ba61.pth  resnet50.safetensors
    export_weights.py timm        tf_efficientnet_b5_ns.pth tf_efficientnet_b5.safetensors
    export_weights.py mmdet       mask_rcnn_r50_fpn_mstrain-poly_3x_coco.pth maskrcnn_r50.safetensors
    export_weights.py mmdet       livecell_effb5.pt out.safetensors --only backbone,neck

Formats and key mapping (the same table as `cellseg_backbones::checkpoint`):

  torchvision  a ResNet / ResNeXt state_dict: `fc.*` dropped, other keys unchanged
               (conv1, bn1, layer{1..4}.{i}.conv{1,2,3}, .bn{1,2,3}, .downsample.{0,1}).
               Load it with LoadPolicy { prefix: Some("backbone"), .. } into a detector.
  timm         an EfficientNet state_dict: `conv_head.*`, `bn2.*`, `classifier.*` dropped.
  mmdet        an mmdet 2.x checkpoint ({"state_dict": ...} or a bare dict, `module.` prefix
               allowed): `backbone.effnet.X` -> `backbone.X` (the seed's timm wrapper), backbone
               classifier keys dropped, `neck.*`, `rpn_head.*`, `roi_head.*` unchanged.

Every tensor is written contiguous in its stored dtype (`num_batches_tracked` stays int64). The
output is written to a temporary file and renamed. `--keys` also writes OUT.keys.txt (key, shape).
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file

TIMM_HEAD = ("conv_head.", "bn2.", "classifier.")


def unwrap(obj):
    """Finds the state_dict inside a checkpoint object."""
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return obj[key]
    if isinstance(obj, dict):
        return obj
    sys.exit(f"cannot find a state_dict in {type(obj).__name__}")


def map_torchvision(key):
    return None if key.startswith("fc.") else key


def map_timm(key):
    return None if key.startswith(TIMM_HEAD) else key


def map_mmdet(key):
    if key.startswith("module."):
        key = key[len("module."):]
    if key.startswith("backbone."):
        rest = key[len("backbone."):]
        if rest.startswith("effnet."):
            rest = rest[len("effnet."):]
            if rest.startswith(TIMM_HEAD):
                return None
        if rest.startswith("fc."):
            return None
        return "backbone." + rest
    return key


MAPS = {"torchvision": map_torchvision, "timm": map_timm, "mmdet": map_mmdet}


def convert(fmt, state, only=None):
    out, dropped = {}, []
    for key, value in state.items():
        if not torch.is_tensor(value):
            continue
        mapped = MAPS[fmt](key)
        if mapped is None or (only and mapped.split(".", 1)[0] not in only):
            dropped.append(key)
            continue
        if mapped in out:
            sys.exit(f"two keys map to {mapped}")
        out[mapped] = value.detach().cpu().contiguous()
    return out, dropped


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("format", choices=sorted(MAPS))
    ap.add_argument("checkpoint", help=".pth / .pt file (torch.load)")
    ap.add_argument("output", help=".safetensors file to write")
    ap.add_argument("--only", help="comma-separated top-level prefixes to keep (mmdet), e.g. backbone,neck")
    ap.add_argument("--keys", action="store_true", help="also write OUTPUT.keys.txt")
    args = ap.parse_args()

    obj = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    only = set(args.only.split(",")) if args.only else None
    tensors, dropped = convert(args.format, unwrap(obj), only)
    if not tensors:
        sys.exit("no tensor left to write")
    tmp = args.output + ".tmp"
    save_file(tensors, tmp, metadata={"format": "pt", "source": os.path.basename(args.checkpoint)})
    os.replace(tmp, args.output)
    if args.keys:
        with open(args.output + ".keys.txt", "w") as f:
            for k, v in sorted(tensors.items()):
                f.write(f"{k}\t{list(v.shape)}\n")
    print(f"wrote {len(tensors)} tensors to {args.output}; dropped {len(dropped)}: {', '.join(dropped[:8])}"
          + (" ..." if len(dropped) > 8 else ""))


if __name__ == "__main__":
    main()
