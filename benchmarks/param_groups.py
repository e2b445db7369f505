"""Rules vs a hand-written `multi_transform`: trace + compile time and step time.

`param_groups.partition(rules, ...)` resolves the rules while tracing (names and shapes are
static), so its jitted step is the hand-written `multi_transform`'s: the same jaxpr
(tests/param_groups/test_rules.py checks it), hence the same step time. What it adds is host
work at trace time (matching every leaf against the rules once per params structure); this
script measures both. Prints a Markdown table.

    .venv/bin/python benchmarks/param_groups.py [--layers 24] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import optax_like as ol
from optax_like import param_groups as pg
from optax_like.param_groups import Rule


def make_params(layers: int, width: int):
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 8 * layers + 4))
    blocks = [{"attn": {"qkv": {"weight": jax.random.normal(next(keys), (3 * width, width)),
                                "bias": jnp.zeros(3 * width)}},
               "norm": {"weight": jnp.ones(width), "bias": jnp.zeros(width)},
               "mlp": {"weight": jax.random.normal(next(keys), (4 * width, width)), "bias": jnp.zeros(4 * width)}}
              for _ in range(layers)]
    return {"embed": {"weight": jax.random.normal(next(keys), (100, width))}, "blocks": blocks,
            "head": {"weight": jax.random.normal(next(keys), (10, width)), "bias": jnp.zeros(10)}}


RULES = [Rule(ndim=(0, 1), set={"weight_decay": 0.0}, name="no_decay"),
         Rule("head.*", scale={"lr": 10.0}, name="head")]


def hand_written(params):
    def label(path, x):
        name = pg._rules.param_name(path)
        if x.ndim <= 1:
            return "no_decay"
        return "head" if name.startswith("head.") else "default"

    labels = jax.tree_util.tree_map_with_path(label, params)
    return ol.multi_transform({"no_decay": ol.adamw(lr=1e-3, weight_decay=0.0),
                               "default": ol.adamw(lr=1e-3, weight_decay=0.05),
                               "head": ol.adamw(lr=1e-2, weight_decay=0.05)}, labels)


def measure(tx, params, repeats):
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))
    t0 = time.perf_counter()
    lowered = step.lower(grads, state, params)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    jax.block_until_ready(compiled(grads, state, params))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(grads, state, params))
        times.append(time.perf_counter() - t)
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, statistics.median(times) * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    params = make_params(args.layers, args.width)
    print(f"{len(jax.tree.leaves(params))} leaves, {jax.devices()[0].platform}")
    print("| optimizer | trace (ms) | compile (ms) | step (us, median) |\n|---|---|---|---|")
    for name, tx in (("hand-written multi_transform", hand_written(params)),
                     ("param_groups.partition(rules)", pg.partition(RULES, ol.adamw, lr=1e-3, weight_decay=0.05))):
        trace, compile_, step = measure(tx, params, args.repeats)
        print(f"| {name} | {trace:.1f} | {compile_:.1f} | {step:.0f} |")


if __name__ == "__main__":
    main()
