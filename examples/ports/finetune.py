"""A Hugging Face-style fine-tuning loop (flax.nnx model), ported to optax_like.optim, beside torch.

The torch loop: AdamW over two groups built by name (no weight decay for biases and LayerNorm
weights), a linear warmup/decay `LambdaLR` (transformers' `get_linear_schedule_with_warmup`),
gradient accumulation (`loss / accum` backward over micro-batches) and `clip_grad_norm_`
before each step. The port keeps the loop's shape with a flax.nnx model of the same layers:

- `named_parameters(params)` over `nnx.split(model, nnx.Param)`'s state gives the names
  (flax's: `kernel`, `scale` where torch says `weight`), and groups of `(name, param)` pairs go
  to the optimizer directly, with `model=params` so the loss receives the whole state;
- `loss.backward()` is `optimizer.backward(jax.grad(loss_fn)(optimizer.params, ...))` (it
  accumulates until `zero_grad()`, as `.grad` does);
- `torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)` is
  `optim.clip_grad_norm_(optimizer, 1.0)` (returns torch's total norm, on device).

    .venv/bin/python -m examples.ports.finetune --steps 16
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx

import optax_like
from optax_like import optim
from examples.ports._common import parser, report

ACCUM, MICRO, DIM, HIDDEN, CLASSES, WARMUP = 2, 8, 16, 32, 4, 3


class TorchEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = torch.nn.Linear(DIM, HIDDEN)
        self.LayerNorm = torch.nn.LayerNorm(HIDDEN, eps=1e-5)

    def forward(self, x):
        return self.LayerNorm(torch.tanh(self.dense(x)))


class TorchClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = TorchEncoder()
        self.classifier = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        return self.classifier(self.encoder(x))


class Encoder(nnx.Module):  # port: the same layers in flax.nnx
    def __init__(self, rngs):
        self.dense = nnx.Linear(DIM, HIDDEN, rngs=rngs)
        self.LayerNorm = nnx.LayerNorm(HIDDEN, epsilon=1e-5, use_fast_variance=False, rngs=rngs)

    def __call__(self, x):
        return self.LayerNorm(jnp.tanh(self.dense(x)))


class Classifier(nnx.Module):
    def __init__(self, rngs):
        self.encoder = Encoder(rngs)
        self.classifier = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.classifier(self.encoder(x))


def copy_torch_weights(model: Classifier, torch_model: TorchClassifier, dtype) -> None:
    t = {k: np.array(v.detach().numpy(), dtype) for k, v in torch_model.named_parameters()}
    model.encoder.dense.kernel[...] = jnp.asarray(t["encoder.dense.weight"].T)
    model.encoder.dense.bias[...] = jnp.asarray(t["encoder.dense.bias"])
    model.encoder.LayerNorm.scale[...] = jnp.asarray(t["encoder.LayerNorm.weight"])
    model.encoder.LayerNorm.bias[...] = jnp.asarray(t["encoder.LayerNorm.bias"])
    model.classifier.kernel[...] = jnp.asarray(t["classifier.weight"].T)
    model.classifier.bias[...] = jnp.asarray(t["classifier.bias"])


def lr_lambda(step: int) -> float:  # transformers.get_linear_schedule_with_warmup
    return step / max(1, WARMUP) if step < WARMUP else max(0.0, (TOTAL[0] - step) / max(1, TOTAL[0] - WARMUP))


TOTAL = [0]


def main(argv=None) -> float:
    args = parser(__doc__, 16).parse_args(argv)
    TOTAL[0] = args.steps
    tdtype = getattr(torch, args.dtype)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((args.steps, ACCUM, MICRO, DIM)).astype(args.dtype)
    ys = rng.integers(0, CLASSES, (args.steps, ACCUM, MICRO))
    torch.manual_seed(3)
    torch_model = TorchClassifier().to(tdtype)

    with jax.enable_x64(args.dtype == "float64"):
        model = Classifier(nnx.Rngs(0))
        model = jax.tree.map(lambda x: x.astype(args.dtype) if isinstance(x, jax.Array) else x, model)
        copy_torch_weights(model, torch_model, args.dtype)

        # torch
        no_decay = ["bias", "LayerNorm.weight"]
        grouped = [
            {"params": [p for n, p in torch_model.named_parameters() if not any(nd in n for nd in no_decay)],
             "weight_decay": 0.01},
            {"params": [p for n, p in torch_model.named_parameters() if any(nd in n for nd in no_decay)],
             "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(grouped, lr=5e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        t_loss, t_norm, t_lr = [], [], []
        for step in range(args.steps):
            total = 0.0
            for micro in range(ACCUM):
                loss = F.cross_entropy(torch_model(torch.tensor(xs[step, micro])), torch.tensor(ys[step, micro])) / ACCUM
                loss.backward()
                total += loss.item()
            t_norm.append(torch.nn.utils.clip_grad_norm_(torch_model.parameters(), 1.0).item())
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            t_loss.append(total)
            t_lr.append(scheduler.get_last_lr()[0])

        # port
        graphdef, params = nnx.split(model, nnx.Param)
        no_decay = ["bias", "LayerNorm.scale"]  # port: flax names LayerNorm's weight `scale`
        named = list(optim.named_parameters(params))
        grouped = [
            {"params": [(n, p) for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
            {"params": [(n, p) for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
        ]
        optimizer = optim.AdamW(grouped, lr=5e-3, model=params)
        scheduler = optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

        def loss_fn(params, x, y):
            logits = nnx.merge(graphdef, params)(x)
            loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
            return loss / ACCUM

        grad_fn = jax.jit(jax.value_and_grad(loss_fn))
        o_loss, o_norm, o_lr = [], [], []
        for step in range(args.steps):
            total = 0.0
            for micro in range(ACCUM):
                loss, grads = grad_fn(optimizer.params, jnp.asarray(xs[step, micro]), jnp.asarray(ys[step, micro]))
                optimizer.backward(grads)
                total += loss
            o_norm.append(optim.clip_grad_norm_(optimizer, 1.0))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            o_loss.append(total)
            o_lr.append(scheduler.get_last_lr()[0])
        nnx.update(model, optimizer.params)
        ours = [model.encoder.dense.kernel[...].T, model.classifier.kernel[...].T, model.encoder.LayerNorm.scale[...]]
    theirs = [torch_model.encoder.dense.weight, torch_model.classifier.weight, torch_model.encoder.LayerNorm.weight]
    return report("fine-tune (AdamW no-decay groups + warmup LambdaLR + clip_grad_norm_ + accumulation, flax.nnx)", {
        "loss": (t_loss, [float(v) for v in o_loss]),
        "total grad norm": (t_norm, [float(v) for v in o_norm]),
        "lr": (t_lr, o_lr),
        "final weights": (np.concatenate([t.detach().numpy().ravel() for t in theirs]),
                          np.concatenate([np.asarray(o).ravel() for o in ours])),
    }, quiet=args.quiet)


if __name__ == "__main__":
    main(sys.argv[1:])
