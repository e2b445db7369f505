"""L-BFGS on a 1e5-weight regularised logistic regression: torch.optim.LBFGS, optax_like.lbfgs, optax.lbfgs.

Problem: loss(w) = mean(softplus(-y * (X w))) + 0.5 * lam * |w|^2, X of shape (samples, n), float32.
torch runs `--steps` step(closure) calls (max_iter=20 each, strong Wolfe, history_size=100); its
final loss is the target. Each method is then timed (wall clock, compile excluded) until its loss
is <= target: torch and optax_like step by step (one step = one torch `step(closure)`), optax's
`lbfgs` (zoom line search, memory 100; a different algorithm) iteration by iteration inside one
jitted `while_loop`. Compile time (lower + compile) is reported separately. Writes
benchmarks/results/lbfgs.md.

    .venv/bin/python benchmarks/lbfgs.py [--n 100000] [--samples 256] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import optax_like as ol


def make_problem(n, samples, lam, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((samples, n)) / np.sqrt(n)).astype(np.float32)
    w_true = rng.standard_normal(n).astype(np.float32)
    y = np.sign(X @ w_true + 0.1 * rng.standard_normal(samples)).astype(np.float32)
    return X, y


def jax_loss(w, X, y, lam):
    z = -y * (X @ w)
    return jnp.mean(jax.nn.softplus(z)) + 0.5 * lam * jnp.sum(w * w)


def torch_loss(w, X, y, lam):
    z = -y * (X @ w)
    return torch.mean(torch.nn.functional.softplus(z)) + 0.5 * lam * torch.sum(w * w)


def run_torch(X, y, lam, steps, target=None, max_steps=50):
    Xt, yt = torch.tensor(X), torch.tensor(y)
    w = torch.zeros(X.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], line_search_fn="strong_wolfe", history_size=100, max_iter=20)

    def closure():
        opt.zero_grad()
        loss = torch_loss(w, Xt, yt, lam)
        loss.backward()
        return loss

    start = time.perf_counter()
    k, loss = 0, None
    while k < (steps if target is None else max_steps):
        opt.step(closure)
        k += 1
        with torch.no_grad():
            loss = float(torch_loss(w, Xt, yt, lam))
        if target is not None and loss <= target:
            break
    elapsed = time.perf_counter() - start
    state = opt.state[w]
    return dict(loss=loss, time=elapsed, steps=k, iters=state["n_iter"], evals=state["func_evals"])


def run_optax_like(X, y, lam, target, max_steps=50):
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    tx = ol.lbfgs(line_search_fn="strong_wolfe", history_size=100, max_iter=20)
    w = jnp.zeros(X.shape[1], jnp.float32)
    state = tx.init(w)

    def step(w, state, X, y):
        updates, state = tx.update(None, state, w, value_fn=jax_loss, X=X, y=y, lam=lam)
        w = ol.apply_updates(w, updates)
        return w, state, jax_loss(w, X, y, lam)

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(w, state, Xj, yj).compile()
    compile_time = time.perf_counter() - t0
    start = time.perf_counter()
    k, loss = 0, None
    while k < max_steps:
        w, state, loss = compiled(w, state, Xj, yj)
        k += 1
        if float(loss) <= target:  # one host sync per step, like torch's float(loss)
            break
    elapsed = time.perf_counter() - start
    return dict(loss=float(loss), time=elapsed, compile=compile_time, steps=k, iters=int(state.n_iter),
                evals=int(state.func_evals))


def run_optax(X, y, lam, target, max_iters=1000):
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    fn = lambda w: jax_loss(w, Xj, yj, lam)
    opt = optax.lbfgs(memory_size=100)
    value_and_grad = optax.value_and_grad_from_state(fn)

    def run(w):
        state = opt.init(w)

        def cond(c):
            w, state, loss, k = c
            return (loss > target) & (k < max_iters)

        def body(c):
            w, state, _, k = c
            value, grad = value_and_grad(w, state=state)
            updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=fn)
            w = optax.apply_updates(w, updates)
            return w, state, fn(w), k + 1

        w, state, loss, k = jax.lax.while_loop(cond, body, (w, state, fn(w), jnp.zeros((), jnp.int32)))
        return loss, k

    w = jnp.zeros(X.shape[1], jnp.float32)
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(w).compile()
    compile_time = time.perf_counter() - t0
    start = time.perf_counter()
    loss, k = jax.block_until_ready(compiled(w))
    elapsed = time.perf_counter() - start
    return dict(loss=float(loss), time=elapsed, compile=compile_time, steps="-", iters=int(k), evals="-")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lam", type=float, default=1e-3)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "lbfgs.md"))
    args = parser.parse_args()

    X, y = make_problem(args.n, args.samples, args.lam)
    ref = run_torch(X, y, args.lam, args.steps)
    target = ref["loss"] * (1 + 1e-5)
    rows = [
        ("torch.optim.LBFGS (strong_wolfe)", dict(run_torch(X, y, args.lam, args.steps, target), compile=0.0)),
        ("optax_like.lbfgs (strong_wolfe), jit", run_optax_like(X, y, args.lam, target)),
        ("optax.lbfgs (zoom linesearch), jit while_loop", run_optax(X, y, args.lam, target)),
    ]
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    header = (
        f"Regularised logistic regression, n={args.n} weights, {args.samples} samples, float32, "
        f"lam={args.lam}; target loss = torch's loss after {args.steps} steps x max_iter=20 "
        f"(x (1 + 1e-5)) = {target:.6g}.\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"JAX {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), optax {optax.__version__}; 1-min load average at the end {load:.1f}.\n"
    )
    table = [
        "| method | time to target (s) | compile (s) | steps | iterations | evaluations | final loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        table.append(
            f"| {name} | {r['time']:.3f} | {r['compile']:.2f} | {r['steps']} | {r['iters']} | {r['evals']} | {r['loss']:.6g} |"
        )
    text = "\n".join([header, *table])
    print(text)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join([".venv/bin/python", "benchmarks/lbfgs.py", *sys.argv[1:]])
    out.write_text(f"# L-BFGS benchmark\n\nCommand: `{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
