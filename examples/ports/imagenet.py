"""pytorch/examples imagenet/main.py's optimizer and checkpoint/resume, ported, beside torch.

SGD(momentum=0.9, weight_decay=1e-4) + StepLR per epoch, `save_checkpoint({... 'optimizer':
optimizer.state_dict(), 'scheduler': scheduler.state_dict()})` halfway, then a fresh model,
optimizer and scheduler resumed from the checkpoint, as `--resume` does. The port saves with
`optax_like.checkpoint` (no pickle) and also resumes once from torch's own checkpoint: torch's
`state_dict()` lists params in registration order and carries no names, while the port's
params dict is ordered by JAX (sorted keys), so the names are added to torch's groups before
loading (the optimizer refuses a state it cannot match, see `Optimizer.load_state_dict`).
A small MLP on synthetic data replaces the ResNet.

    .venv/bin/python -m examples.ports.imagenet --steps 24
"""

from __future__ import annotations

import io
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import optax_like
from optax_like import checkpoint
from examples.ports._common import parser, report, torch_params

STEPS_PER_EPOCH, BATCH = 3, 16


def make_model():
    torch.manual_seed(2)
    return torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 5))


def forward(p, x):  # port: the Sequential as a function of its params dict
    x = jax.nn.relu(x @ p["0.weight"].T + p["0.bias"])
    x = jax.nn.relu(x @ p["2.weight"].T + p["2.bias"])
    return x @ p["4.weight"].T + p["4.bias"]


def loss_fn(p, images, target):  # port: nn.CrossEntropyLoss()(output, target)
    logits = forward(p, images)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), target[:, None], axis=1))


def make_torch(model):
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)


def make_ours(params):
    optimizer = optax_like.optim.SGD(params, 0.1, momentum=0.9, weight_decay=1e-4)
    return optimizer, optax_like.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)


def main(argv=None) -> float:
    args = parser(__doc__, 24).parse_args(argv)
    tdtype = getattr(torch, args.dtype)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((args.steps, BATCH, 20)).astype(args.dtype)
    ys = rng.integers(0, 5, (args.steps, BATCH))
    half = args.steps // 2

    def train_torch(model, optimizer, scheduler, steps, losses):
        for step in steps:
            loss = F.cross_entropy(model(torch.tensor(xs[step])), torch.tensor(ys[step]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if (step + 1) % STEPS_PER_EPOCH == 0:
                scheduler.step()

    def train_ours(optimizer, scheduler, steps, losses):
        for step in steps:
            losses.append(optimizer.step(loss_fn, jnp.asarray(xs[step]), jnp.asarray(ys[step])))
            if (step + 1) % STEPS_PER_EPOCH == 0:
                scheduler.step()

    with jax.enable_x64(args.dtype == "float64"):
        # torch: train, save_checkpoint, resume into fresh objects, train on
        model = make_model().to(tdtype)
        params = torch_params(model, args.dtype)
        optimizer, scheduler = make_torch(model)
        t_loss = []
        train_torch(model, optimizer, scheduler, range(half), t_loss)
        buffer = io.BytesIO()
        torch.save({"epoch": half // STEPS_PER_EPOCH, "state_dict": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
        buffer.seek(0)
        torch_ckpt = torch.load(buffer, weights_only=True)
        model = make_model().to(tdtype)
        optimizer, scheduler = make_torch(model)
        model.load_state_dict(torch_ckpt["state_dict"])
        optimizer.load_state_dict(torch_ckpt["optimizer"])
        scheduler.load_state_dict(torch_ckpt["scheduler"])
        train_torch(model, optimizer, scheduler, range(half, args.steps), t_loss)
        t_final = np.concatenate([v.detach().numpy().ravel() for _, v in sorted(model.named_parameters())])

        # port: the same, checkpointing with optax_like.checkpoint
        optimizer, scheduler = make_ours(params)
        o_loss = []
        train_ours(optimizer, scheduler, range(half), o_loss)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "checkpoint.ckpt")
            checkpoint.save(path, {"epoch": half // STEPS_PER_EPOCH, "state_dict": optimizer.params,
                                   "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
            ckpt = checkpoint.load(path)
        optimizer, scheduler = make_ours({k: jnp.asarray(v) for k, v in ckpt["state_dict"].items()})
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        train_ours(optimizer, scheduler, range(half, args.steps), o_loss)
        o_final = np.concatenate([np.asarray(v).ravel() for _, v in sorted(optimizer.params.items())])

        # port, resumed from torch's checkpoint file (read again: torch's resumed optimizer
        # adopted the loaded tensors and updated them in place); name torch's ids first
        buffer.seek(0)
        torch_ckpt = torch.load(buffer, weights_only=True)
        sd = torch_ckpt["optimizer"]
        for group in sd["param_groups"]:
            group["param_names"] = [name for name, _ in make_model().named_parameters()]
        optimizer, scheduler = make_ours({k: jnp.asarray(v.numpy()) for k, v in torch_ckpt["state_dict"].items()})
        optimizer.load_state_dict(sd)
        scheduler.load_state_dict(torch_ckpt["scheduler"])
        x_loss = list(o_loss[:half])
        train_ours(optimizer, scheduler, range(half, args.steps), x_loss)

    return report("imagenet (SGD + StepLR, checkpoint/resume)", {
        "loss (resumed at step %d)" % half: (t_loss, [float(v) for v in o_loss]),
        "loss (port resumed from torch's checkpoint)": (t_loss, [float(v) for v in x_loss]),
        "final params": (t_final, o_final),
    }, quiet=args.quiet)


if __name__ == "__main__":
    main(sys.argv[1:])
