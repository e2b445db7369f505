"""torch's float16 AMP recipe (autocast + GradScaler), ported to optax_like, beside torch.

The torch loop is the one of torch's AMP examples: the forward pass under
`torch.autocast("cpu", dtype=torch.float16)` (Linear layers in float16, the loss in float32,
float32 master params), `scaler.scale(loss).backward()`, `scaler.step(optimizer)`,
`scaler.update()`, an lr scheduler stepped after each step. Halfway it saves
`{"model", "optimizer", "scheduler", "scaler"}` with `torch.save` and resumes into fresh
objects, as a `--resume` does. The initial scale (2**20) is too large for float16 on purpose:
the first steps overflow and are skipped while the scale calibrates, as in real runs; batch
`--bad-batch` holds a nan (a corrupted input), which skips that step too.

The port runs twice: from scratch with the jitted `optimizer.step(loss_fn, x, y,
grad_scaler=scaler)` (scale, backward, unscale, inf check, skip, all in one XLA call), and
resumed from torch's checkpoint file with torch's explicit-gradient loop
(`optimizer.backward(jax.grad(...))`, `scaler.step`, `scaler.update`). Autocast's float16 Linear
is written out: on CPU torch's float16 `addmm` accumulates in float32 and rounds once, which is
`jnp.dot(..., preferred_element_type=float32) + bias`, then one cast to float16.

    .venv/bin/python -m examples.ports.amp_fp16 --steps 24
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import optax_like
from optax_like import amp, optim
from examples.ports._common import report, torch_params

BATCH, FEATURES, HIDDEN, CLASSES = 32, 20, 64, 5
SCALER = dict(init_scale=2.0**20, growth_interval=4)


def make_model():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))


def linear16(x, weight, bias):  # port: autocast's float16 F.linear (torch's CPU addmm)
    acc = jnp.dot(x.astype(jnp.float16), weight.astype(jnp.float16).T, preferred_element_type=jnp.float32)
    return (acc + bias.astype(jnp.float16).astype(jnp.float32)).astype(jnp.float16)


def loss_fn(p, x, y):  # port: the Sequential under autocast, then F.cross_entropy in float32
    h = jax.nn.relu(linear16(x, p["0.weight"], p["0.bias"]))
    logits = linear16(h, p["2.weight"], p["2.bias"]).astype(jnp.float32)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def make_torch(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5), torch.amp.GradScaler(
        "cpu", **SCALER)


def make_ours(params):
    optimizer = optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    return optimizer, optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5), amp.GradScaler(**SCALER)


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--bad-batch", type=int, default=17, help="the batch that holds a nan (-1: none)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((args.steps, BATCH, FEATURES)).astype(np.float32)
    ys = rng.integers(0, CLASSES, (args.steps, BATCH))
    if 0 <= args.bad_batch < args.steps:
        xs[args.bad_batch, 0, 0] = np.nan
    half = args.steps // 2

    # torch: the AMP recipe; torch.save halfway; resume into fresh objects; train on
    def train_torch(model, optimizer, scheduler, scaler, steps, losses, scales):
        for step in steps:
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = F.cross_entropy(model(torch.tensor(xs[step])), torch.tensor(ys[step]))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.item())
            scales.append(scaler.get_scale())

    model = make_model()
    params = torch_params(model, "float32")
    optimizer, scheduler, scaler = make_torch(model)
    t_loss, t_scale = [], []
    with warnings.catch_warnings():  # torch's "lr_scheduler.step() before optimizer.step()": the
        warnings.simplefilter("ignore")  # scaler skipped the first steps (see optax_like.amp)
        train_torch(model, optimizer, scheduler, scaler, range(half), t_loss, t_scale)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model = make_model()
    optimizer, scheduler, scaler = make_torch(model)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    train_torch(model, optimizer, scheduler, scaler, range(half, args.steps), t_loss, t_scale)
    t_final = np.concatenate([v.detach().numpy().ravel() for _, v in sorted(model.named_parameters())])

    # port 1: from scratch, the scaled step in one jitted call
    optimizer, scheduler, scaler = make_ours(params)
    o_loss, o_scale = [], []
    for step in range(args.steps):
        o_loss.append(optimizer.step(loss_fn, xs[step], ys[step], grad_scaler=scaler))
        scaler.update()
        scheduler.step()
        o_scale.append(scaler.get_scale())
    o_final = np.concatenate([np.asarray(v).ravel() for _, v in sorted(optimizer.params.items())])

    # port 2: resumed from torch's checkpoint file, torch's explicit-gradient loop
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    optimizer, scheduler, scaler = make_ours({k: jnp.asarray(v.numpy()) for k, v in ckpt["model"].items()})
    sd = ckpt["optimizer"]
    for group in sd["param_groups"]:  # torch's ids are in registration order: name them
        group["param_names"] = [name for name, _ in make_model().named_parameters()]
    optimizer.load_state_dict(sd)
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    x_loss, x_scale = list(o_loss[:half]), list(o_scale[:half])
    for step in range(half, args.steps):
        def scaled_loss(p):  # port: `scaler.scale(loss).backward()`, keeping the loss itself
            loss = loss_fn(p, xs[step], ys[step])
            return scaler.scale(loss), loss

        optimizer.zero_grad()
        (_, loss), grads = jax.value_and_grad(scaled_loss, has_aux=True)(optimizer.params)
        optimizer.backward(grads)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        x_loss.append(loss)
        x_scale.append(scaler.get_scale())
    x_final = np.concatenate([np.asarray(v).ravel() for _, v in sorted(optimizer.params.items())])

    if o_scale != t_scale or x_scale[half:] != t_scale[half:]:
        raise AssertionError(f"scale trajectories differ: torch {t_scale}, ours {o_scale}, resumed {x_scale}")
    print(f"amp_fp16: scale after each step (torch = ours = resumed): {t_scale}")
    skipped = [i for i in range(args.steps) if t_scale[i] < ([SCALER["init_scale"]] + t_scale)[i]]
    print(f"amp_fp16: skipped steps (inf/nan gradients): {skipped}")
    losses = [np.asarray([float(v) for v in trajectory]) for trajectory in (t_loss, o_loss, x_loss)]
    nan = np.isnan(losses[0])
    if any((np.isnan(trajectory) != nan).any() for trajectory in losses):
        raise AssertionError("the nan losses (the corrupted batch) are not at the same steps")
    print(f"amp_fp16: loss nan at steps {np.flatnonzero(nan).tolist()} in all three runs (shown as 0 below)")
    t_loss, o_loss, x_loss = (np.nan_to_num(trajectory, nan=0.0) for trajectory in losses)
    return report("amp_fp16 (AdamW + StepLR + GradScaler, float16 autocast, checkpoint/resume)", {
        "loss (from scratch, jitted scaled step)": (t_loss, o_loss),
        "final params (from scratch)": (t_final, o_final),
        "loss (resumed from torch's checkpoint at step %d, explicit loop)" % half: (t_loss, x_loss),
        "final params (resumed from torch's checkpoint, explicit loop)": (t_final, x_final),
    }, quiet=args.quiet)


if __name__ == "__main__":
    main(sys.argv[1:])
