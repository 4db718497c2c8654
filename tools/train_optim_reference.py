#!/usr/bin/env python3
"""Reference numbers for cellseg-train's optimizers, clipping and LR schedules.

Run at test time by crates/cellseg-train/tests/it/optim_parity.rs:

    .venv/bin/python tools/train_optim_reference.py OUT_DIR

It writes OUT_DIR/optim_reference.safetensors with
  init/<param>                 initial parameters (float32)
  grad/<step>/<param>          the gradient of each step (absent: the parameter got no gradient)
  case/<case>/<param>          parameters after all steps of each case
  lr/<case>                    learning rate used by each step (float64)
  norm/<case>                  global gradient norm before clipping of each step (float64)
  sched/<kind>                 learning rate of steps 0..N of the warm-up schedules (float64)

The cases mirror the seed's recipe (SEED.md §3.3): one param group per parameter, weight decay 0
for names containing bias / norm / bn, clip_grad_norm_(10), a LambdaLR stepped after every
optimizer step with transformers' linear / cosine warm-up formulas (written out here, so
transformers is not needed). Keep the constants in sync with the Rust test.
"""
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

NAMES = ["layer1.weight", "layer1.bias", "bn1.weight", "head.weight", "head.norm.bias"]
SHAPES = [(4, 3), (4,), (4,), (2, 4), (2,)]
STEPS = 6
NO_DECAY = ["bias", "LayerNorm.weight", "absolute_pos_embed", "relative_position_bias_table",
            "norm", "bn"]


def linear_lambda(warmup, total):
    # transformers.get_linear_schedule_with_warmup
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    return f


def cosine_lambda(warmup, total, num_cycles=0.5):
    # transformers.get_cosine_schedule_with_warmup
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
    return f


def constant_lambda(warmup):
    # transformers.get_constant_schedule_with_warmup
    def f(step):
        if step < warmup:
            return float(step) / float(max(1.0, warmup))
        return 1.0
    return f


def lambda_for(kind, warmup, total):
    return {"linear": linear_lambda(warmup, total), "cosine": cosine_lambda(warmup, total),
            "constant": constant_lambda(warmup)}[kind]


# case name -> (optimizer, kwargs, weight_decay, schedule kind, warmup_prop, horizon, clip)
CASES = {
    "adamw": ("adamw", dict(betas=(0.9, 0.99), eps=1e-8), 0.05, "linear", 0.25, 8, 10.0),
    "adamw_seed_wd0": ("adamw", dict(betas=(0.9, 0.999), eps=1e-8), 0.0, "linear", 0.05, 8, 10.0),
    "sgd_nesterov": ("sgd", dict(momentum=0.9, dampening=0.0, nesterov=True), 1e-3, "cosine",
                     0.3, 7, 10.0),
    "sgd_dampening": ("sgd", dict(momentum=0.8, dampening=0.1, nesterov=False), 1e-2, "constant",
                      0.0, 6, None),
}
BASE_LR = {"adamw": 1e-2, "sgd": 5e-2}


def main(out_dir):
    torch.manual_seed(0)
    init = [torch.randn(s, dtype=torch.float32) for s in SHAPES]
    grads = []
    for step in range(STEPS):
        scale = 20.0 if step in (1, 4) else 1.0  # steps 1 and 4 exceed the clip norm of 10
        g = [torch.randn(s, dtype=torch.float32) * scale for s in SHAPES]
        if step == 2:
            g[3] = None  # head.weight got no gradient: torch skips it (state included)
        grads.append(g)

    out = {}
    for name, t in zip(NAMES, init):
        out[f"init/{name}"] = t.clone()
    for step, g in enumerate(grads):
        for name, t in zip(NAMES, g):
            if t is not None:
                out[f"grad/{step}/{name}"] = t.clone()

    for case, (kind, kw, wd, sched, warmup_prop, horizon, clip) in CASES.items():
        params = [torch.nn.Parameter(t.clone()) for t in init]
        groups = []
        for name, p in zip(NAMES, params):
            decay = 0.0 if any(k in name for k in NO_DECAY) else wd
            groups.append({"params": [p], "weight_decay": decay})
        lr = BASE_LR[kind]
        if kind == "adamw":
            opt = torch.optim.AdamW(groups, lr=lr, foreach=False, **kw)
        else:
            opt = torch.optim.SGD(groups, lr=lr, foreach=False, **kw)
        warmup = int(warmup_prop * horizon)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda_for(sched, warmup, horizon))
        lrs, norms = [], []
        for step in range(STEPS):
            for p, g in zip(params, grads[step]):
                p.grad = None if g is None else g.clone()
            with_grad = [p for p in params if p.grad is not None]
            if clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(with_grad, clip, foreach=False)
            else:
                norm = torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(p.grad) for p in with_grad]))
            norms.append(float(norm))
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
        for name, p in zip(NAMES, params):
            out[f"case/{case}/{name}"] = p.detach().clone()
        out[f"lr/{case}"] = torch.tensor(lrs, dtype=torch.float64)
        out[f"norm/{case}"] = torch.tensor(norms, dtype=torch.float64)

    # Schedules alone: T = 37, warm-up int(0.1 * 37) = 3, read over 45 steps (past the end).
    total, warmup = 37, int(0.1 * 37)
    for sched in ["linear", "cosine", "constant"]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=2e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda_for(sched, warmup, total))
        lrs = []
        for _ in range(45):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
        out[f"sched/{sched}"] = torch.tensor(lrs, dtype=torch.float64)

    path = Path(out_dir) / "optim_reference.safetensors"
    save_file(out, str(path))
    print(path)


if __name__ == "__main__":
    main(sys.argv[1])
