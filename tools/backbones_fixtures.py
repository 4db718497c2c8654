#!/usr/bin/env python3
"""Parity fixtures for crates/cellseg-backbones, generated at test time (never committed).

Usage:
  backbones_fixtures.py parity OUT_DIR MODEL H W   # MODEL: resnet50 | resnext101_32x8d | tf_efficientnet_b4
  backbones_fixtures.py keys OUT_JSON              # key -> shape of every trunk (meta device, no weights)
  backbones_fixtures.py mmdet-sample OUT_PTH       # a fake seed-style mmdet checkpoint (timm b3 + FPN)
  backbones_fixtures.py pth-formats OUT_DIR        # torch.save files of every kind the .pth reader meets
  backbones_fixtures.py to-pth IN.safetensors OUT.pth  # the tensors as an mmdet checkpoint {meta, state_dict}
  backbones_fixtures.py classifier-pth MODEL OUT.pth   # torch.save of a torchvision / timm classifier's state_dict

`parity` builds the PyTorch trunk (torchvision / timm, random init, pretrained=False) and a torchvision
FeaturePyramidNetwork + LastLevelMaxPool, randomises every batch-norm parameter and buffer and every
FPN bias (so that nothing is a trivial identity), and writes two safetensors files into OUT_DIR:

  MODEL.weights.safetensors   backbone.<state_dict key> (classifier head dropped) and
                              neck.lateral_convs.{i}.conv.* / neck.fpn_convs.{i}.conv.* (mmdet names;
                              torchvision's inner_blocks.{i}.0 / layer_blocks.{i}.0 renamed)
  MODEL.expected.safetensors  input [1,3,H,W]; s{2,1}.c{0..3}: trunk outputs; s{2,1}.p{0..4}: FPN
                              outputs, for the published stem stride 2 and the seed's stride 1;
                              EfficientNets also s{2,1}.train.c{0..3} (training-mode batch norm)
                              and s{2,1}.train.running_{mean,var} of blocks.6.<last>.bn3 after it
  MODEL.pth                   the trunk's own state_dict (classifier head included), as torch.save
                              writes it: what torchvision / timm publish

All outputs (but the .train ones) are computed in eval mode on the CPU in float32.
"""
import copy
import json
import sys
from collections import OrderedDict

import torch
import torchvision
from safetensors.torch import save_file
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

TIMM_HEAD = ("conv_head.", "bn2.", "classifier.")
EFFNET_BLOCKS = (1, 2, 4, 6)


def make_trunk(name):
    """Returns (module, is_effnet)."""
    if name.startswith("tf_efficientnet"):
        import timm

        return timm.create_model(name + "_ns", pretrained=False), True
    if name == "resnext101_32x4d":  # not in torchvision; timm's ResNet uses the same key names
        import timm

        return timm.create_model("resnext101_32x4d", pretrained=False), False
    return getattr(torchvision.models, name)(weights=None), False


def trunk_state(model, effnet):
    sd = model.state_dict()
    if effnet:
        return {k: v for k, v in sd.items() if not k.startswith(TIMM_HEAD)}
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def set_stem_stride(model, effnet, stride):
    (model.conv_stem if effnet else model.conv1).stride = (stride, stride)


def trunk_forward(model, effnet, x):
    outs = []
    if effnet:
        x = model.bn1(model.conv_stem(x))
        for i, block in enumerate(model.blocks):
            x = block(x)
            if i in EFFNET_BLOCKS:
                outs.append(x)
        return outs
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        outs.append(x)
    return outs


def randomise(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def fpn_state(fpn):
    out = {}
    for k, v in fpn.state_dict().items():
        block, i, _, param = k.split(".")  # inner_blocks.0.0.weight
        name = {"inner_blocks": "lateral_convs", "layer_blocks": "fpn_convs"}[block]
        out[f"neck.{name}.{i}.conv.{param}"] = v
    return out


def parity(out_dir, name, h, w):
    torch.manual_seed(0)
    model, effnet = make_trunk(name)
    randomise(model)
    model.eval()
    with torch.no_grad():
        channels = [t.shape[1] for t in trunk_forward(model, effnet, torch.zeros(1, 3, 64, 64))]
    fpn = FeaturePyramidNetwork(channels, 256, extra_blocks=LastLevelMaxPool())
    randomise(fpn)
    fpn.eval()
    weights = {f"backbone.{k}": v.contiguous() for k, v in trunk_state(model, effnet).items()}
    weights.update({k: v.contiguous() for k, v in fpn_state(fpn).items()})
    save_file(weights, f"{out_dir}/{name}.weights.safetensors")
    torch.save(model.state_dict(), f"{out_dir}/{name}.pth")

    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(2))
    expected = {"input": x}
    with torch.no_grad():
        for stride in (2, 1):
            set_stem_stride(model, effnet, stride)
            feats = trunk_forward(model, effnet, x)
            pyramid = fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
            for i, f in enumerate(feats):
                expected[f"s{stride}.c{i}"] = f.contiguous()
            for i, p in enumerate(pyramid.values()):
                expected[f"s{stride}.p{i}"] = p.contiguous()
        if effnet:
            # Training-mode batch norm (the seed's EfficientNets train BN; drop_path_rate is 0 here):
            # outputs with batch statistics and the running statistics after one step.
            for stride in (2, 1):
                trained = copy.deepcopy(model).train()
                set_stem_stride(trained, effnet, stride)
                for i, f in enumerate(trunk_forward(trained, effnet, x)):
                    expected[f"s{stride}.train.c{i}"] = f.contiguous()
                last = trained.blocks[6][-1].bn3
                expected[f"s{stride}.train.running_mean"] = last.running_mean.clone()
                expected[f"s{stride}.train.running_var"] = last.running_var.clone()
    save_file(expected, f"{out_dir}/{name}.expected.safetensors")


def keys(out_json):
    names = ["resnet50", "resnet101", "resnext101_32x4d", "resnext101_64x4d", "resnext101_32x8d"]
    names += [f"tf_efficientnet_b{i}" for i in range(3, 8)]
    table = {}
    with torch.device("meta"):
        for name in names:
            model, effnet = make_trunk(name)
            table[name] = {k: list(v.shape) for k, v in trunk_state(model, effnet).items()}
    with open(out_json, "w") as f:
        json.dump(table, f)


def mmdet_sample(out_pth):
    """The layout of the seed's LIVECell checkpoints: DataParallel `module.`, timm under
    `backbone.effnet.` (classifier head included), an FPN under `neck.`, a head key."""
    torch.manual_seed(0)
    model, _ = make_trunk("tf_efficientnet_b3")
    state = {f"module.backbone.effnet.{k}": v for k, v in model.state_dict().items()}
    fpn = FeaturePyramidNetwork([32, 48, 136, 384], 256, extra_blocks=LastLevelMaxPool())
    state.update({f"module.{k}": v for k, v in fpn_state(fpn).items()})
    state["module.rpn_head.rpn_conv.weight"] = torch.zeros(256, 256, 3, 3)
    torch.save({"meta": {}, "state_dict": state}, out_pth)


def pth_formats(out_dir):
    """torch.save files for crates/cellseg-backbones/src/pth: every dtype, views that share a
    storage, a transposed (non-contiguous) tensor, an offset slice, a 0-d and an empty tensor, a
    Parameter, a module state_dict (with its `_metadata`), an mmcv-style checkpoint whose `meta`
    holds objects the reader does not know (numpy values), in the zip and the legacy format and
    with pickle protocol 4; then files that are not state_dicts, and truncated ones."""
    import numpy as np

    g = torch.Generator().manual_seed(3)
    base = torch.randn(4, 6, generator=g)
    sd = OrderedDict()
    for name, dtype in [("f32", torch.float32), ("f64", torch.float64), ("f16", torch.float16),
                        ("bf16", torch.bfloat16), ("i64", torch.int64), ("i32", torch.int32),
                        ("i16", torch.int16), ("i8", torch.int8), ("u8", torch.uint8)]:
        sd[f"dtype.{name}"] = (base * 50).to(dtype)
    sd["dtype.bool"] = base > 0
    shared = torch.arange(24, dtype=torch.float32)
    sd["view.rows"] = shared.view(4, 6)[1:3]          # offset 6 into a shared storage
    sd["view.transposed"] = shared.view(4, 6).t()      # non-contiguous
    sd["view.strided"] = shared[::5]                   # stride 5
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.ones(2, 2) * 7)
    torch.save(sd, f"{out_dir}/plain_zip.pth")
    torch.save(sd, f"{out_dir}/plain_legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(sd, f"{out_dir}/plain_protocol4.pth", pickle_protocol=4)

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = module.state_dict()
    meta = {"mmdet_version": "2.17.0", "CLASSES": ("shsy5y", "astro", "cort"), "epoch": 12,
            "iter": 3000, "config": "model = dict(type='MaskRCNN')\n", "seed": np.int64(42),
            "mean": np.array([0.5, 0.25]), "hook_msgs": {"last_ckpt": "/work/epoch_12.pth"}}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.02, "params": [0, 1]}]}
    ckpt = {"meta": meta, "state_dict": state, "optimizer": optimizer}
    torch.save(ckpt, f"{out_dir}/mmcv_zip.pth")
    torch.save(ckpt, f"{out_dir}/mmcv_legacy.pth", _use_new_zipfile_serialization=False)

    torch.save(module, f"{out_dir}/whole_module.pth")
    torch.save([base], f"{out_dir}/list.pth")
    torch.save({"epoch": 3, "weights": base}, f"{out_dir}/not_tensors.pth")
    for name in ("plain_zip", "plain_legacy"):
        data = open(f"{out_dir}/{name}.pth", "rb").read()
        open(f"{out_dir}/{name}_truncated.pth", "wb").write(data[: len(data) * 2 // 3])


def classifier_pth(name, out):
    """What torchvision / timm publish: the whole classifier's state_dict (random weights here)."""
    torch.manual_seed(0)
    model, _ = make_trunk(name)
    torch.save(model.state_dict(), out)


def to_pth(src, out):
    """A safetensors file as the checkpoint mmcv's save_checkpoint writes: {"meta", "state_dict"}."""
    from safetensors.torch import load_file

    state = OrderedDict(sorted(load_file(src).items()))
    torch.save({"meta": {"mmdet_version": "2.17.0", "CLASSES": ("a", "b")}, "state_dict": state}, out)


if __name__ == "__main__":
    if sys.argv[1] == "parity":
        parity(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "keys":
        keys(sys.argv[2])
    elif sys.argv[1] == "mmdet-sample":
        mmdet_sample(sys.argv[2])
    elif sys.argv[1] == "pth-formats":
        pth_formats(sys.argv[2])
    elif sys.argv[1] == "classifier-pth":
        classifier_pth(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "to-pth":
        to_pth(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
