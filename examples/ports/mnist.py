"""pytorch/examples mnist/main.py (Adadelta + StepLR), ported to optax_like.optim, beside torch.

The torch program and its port run on the same synthetic digits and the same initial weights
and print both loss and lr trajectories. What changed in the port (marked `# port:`): the model
is a pure function of a params dict, `loss.backward(); optimizer.step()` is
`optimizer.step(loss_fn, data, target)` (which also returns the batch accuracy as aux), and
`optim` is `optax_like.optim`. Smaller than the original (12x12 images, fewer channels) and
without dropout (torch's random masks cannot be reproduced), so that it runs in seconds.

    .venv/bin/python -m examples.ports.mnist --steps 40
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import optax_like
from examples.ports._common import parser, report, torch_params

BATCHES_PER_EPOCH, BATCH, SIZE = 4, 16, 12


class Net(torch.nn.Module):  # mnist/main.py's Net, smaller, dropout off
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, 1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, 1)
        self.fc1 = torch.nn.Linear(16 * 4 * 4, 32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def conv(x, w, b):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + b[None, :, None, None]


def net(p, x):  # port: Net.forward as a function of the params dict (torch's names)
    x = jax.nn.relu(conv(x, p["conv1.weight"], p["conv1.bias"]))
    x = jax.nn.relu(conv(x, p["conv2.weight"], p["conv2.bias"]))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ p["fc1.weight"].T + p["fc1.bias"])
    return jax.nn.log_softmax(x @ p["fc2.weight"].T + p["fc2.bias"], axis=1)


def loss_fn(p, data, target):  # port: F.nll_loss(output, target), accuracy as aux
    output = net(p, data)
    loss = -jnp.mean(jnp.take_along_axis(output, target[:, None], axis=1))
    return loss, jnp.mean(jnp.argmax(output, axis=1) == target)


def data(steps, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps, BATCH, 1, SIZE, SIZE)).astype(dtype)
    y = rng.integers(0, 10, (steps, BATCH))
    x[np.arange(steps)[:, None], np.arange(BATCH)[None], 0, y, y] += 3.0  # a learnable signal
    return x, y


def main(argv=None) -> float:
    args = parser(__doc__, 24).parse_args(argv)
    tdtype = getattr(torch, args.dtype)
    xs, ys = data(args.steps, args.dtype)
    torch.manual_seed(1)
    model = Net().to(tdtype)
    with jax.enable_x64(args.dtype == "float64"):
        params = torch_params(model, args.dtype)

        # torch: mnist/main.py's optimizer, scheduler and train loop
        optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
        t_loss, t_lr = [], []
        for step in range(args.steps):
            data_, target = torch.tensor(xs[step]), torch.tensor(ys[step])
            optimizer.zero_grad()
            loss = F.nll_loss(model(data_), target)
            loss.backward()
            optimizer.step()
            t_loss.append(loss.item())
            if (step + 1) % BATCHES_PER_EPOCH == 0:
                scheduler.step()
            t_lr.append(scheduler.get_last_lr()[0])

        # port
        optimizer = optax_like.optim.Adadelta(params, lr=1.0)
        scheduler = optax_like.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
        o_loss, o_lr = [], []
        for step in range(args.steps):
            loss, accuracy = optimizer.step(loss_fn, jnp.asarray(xs[step]), jnp.asarray(ys[step]))
            o_loss.append(loss)  # device arrays: no host sync inside the loop
            if (step + 1) % BATCHES_PER_EPOCH == 0:
                scheduler.step()
            o_lr.append(scheduler.get_last_lr()[0])
        final = {k: np.asarray(v) for k, v in optimizer.params.items()}
    t_final = {k: v.detach().numpy() for k, v in model.named_parameters()}
    return report("mnist (Adadelta + StepLR)", {
        "loss": (t_loss, [float(v) for v in o_loss]),
        "lr": (t_lr, o_lr),
        "final params": (np.concatenate([t_final[k].ravel() for k in t_final]),
                         np.concatenate([final[k].ravel() for k in t_final])),
    }, quiet=args.quiet)


if __name__ == "__main__":
    main(sys.argv[1:])
