"""The main job: train a small MLP classifier with optax_like, jitted and donated.

Data: two interleaved spirals (generated here; nothing is downloaded). Model: a 2-64-64-2 MLP
in plain JAX. Optimizer: torch's Adam (or any optax_like optimizer, `--optimizer`), built from
the functional core; its lr is injected so it can change between steps without recompiling.

    python examples/train_mlp.py                  # writes examples/out/loss.png and checkpoint.safetensors
    python examples/train_mlp.py --optimizer sgd --lr 0.05 --steps 3000
    python examples/train_mlp.py --resume --steps 500   # continue from examples/out/checkpoint.safetensors

The checkpoint (params and optimizer state, `optax_like.checkpoint`: no pickle, checksummed)
is restored into the structure of a fresh `tx.init(params)`.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import optax_like as ol


def spirals(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.0, 1.0, n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    sign = np.where(label == 0, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3 * np.pi)
    x += rng.normal(0.0, 0.02, x.shape)
    return jnp.asarray(x, jnp.float32), jnp.asarray(label, jnp.int32)


def init_mlp(key, sizes=(2, 64, 64, 2)):
    params = []
    for fan_in, fan_out, k in zip(sizes[:-1], sizes[1:], jax.random.split(key, len(sizes) - 1)):
        bound = 1.0 / np.sqrt(fan_in)  # torch.nn.Linear's default init range
        kw, kb = jax.random.split(k)
        params.append(
            {
                "weight": jax.random.uniform(kw, (fan_out, fan_in), minval=-bound, maxval=bound),
                "bias": jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound),
            }
        )
    return params


def mlp(params, x):
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["weight"].T + layer["bias"])
    return x @ params[-1]["weight"].T + params[-1]["bias"]


def loss_fn(params, x, y):
    logits = mlp(params, x)
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(mlp(params, x), axis=1) == y)


OPTIMIZERS = {
    "adam": lambda lr: ol.inject_hyperparams(ol.adam)(lr=lr),
    "sgd": lambda lr: ol.inject_hyperparams(ol.sgd)(lr=lr, momentum=0.9, nesterov=True),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    parser.add_argument("--resume", action="store_true", help="start from OUT/checkpoint.safetensors")
    args = parser.parse_args(argv)
    checkpoint = os.path.join(args.out, "checkpoint.safetensors")

    x, y = spirals(4096)
    x_val, y_val = spirals(1024, seed=1)
    params = init_mlp(jax.random.key(0))
    tx = OPTIMIZERS[args.optimizer](args.lr)
    state = tx.init(params)
    if args.resume:
        restored = ol.checkpoint.load(checkpoint, like={"params": params, "opt_state": state})
        params, state = restored["params"], restored["opt_state"]
        print(f"resumed from {checkpoint}")

    def train_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state, loss

    # One XLA computation per step; params and state buffers are reused in place.
    train_step = jax.jit(train_step, donate_argnums=(0, 1))

    rng = np.random.default_rng(0)
    losses = []
    start = time.perf_counter()
    for step in range(args.steps):
        idx = rng.integers(0, x.shape[0], args.batch)
        if step == int(0.75 * args.steps):
            state.hyperparams["lr"] = args.lr / 10  # a hand-made lr drop: no recompile
        params, state, loss = train_step(params, state, x[idx], y[idx])
        losses.append(loss)
        if step % (args.steps // 10) == 0 or step == args.steps - 1:
            print(
                f"step {step:5d}  loss {float(loss):.4f}  val acc {float(accuracy(params, x_val, y_val)):.3f}  "
                f"lr {float(state.hyperparams['lr']):.1e}",
                flush=True,
            )
    elapsed = time.perf_counter() - start
    losses = np.asarray(jax.device_get(losses))
    final_acc = float(accuracy(params, x_val, y_val))
    print(f"done: {args.steps} steps in {elapsed:.1f} s; final loss {losses[-1]:.4f}; val accuracy {final_acc:.3f}")

    os.makedirs(args.out, exist_ok=True)
    trained = {"params": params, "opt_state": state}
    ol.checkpoint.save(checkpoint, trained)
    again = ol.checkpoint.load(checkpoint, like=trained)
    exact = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(trained)))
    print(f"wrote {checkpoint} ({os.path.getsize(checkpoint) / 1024:.0f} KiB); reloaded bit-exact: {exact}")
    path = os.path.join(args.out, "loss.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(losses, lw=0.6, alpha=0.5, label="batch loss")
    window = max(1, args.steps // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window - 1, len(losses)), smooth, lw=1.5, label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"optax_like.{args.optimizer} on two spirals (val acc {final_acc:.2f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return final_acc


if __name__ == "__main__":
    main()
