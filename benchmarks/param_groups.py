"""Rules (`param_groups.partition`) vs the hand-written `multi_transform` they stand for.

    .venv/bin/python benchmarks/param_groups.py              # GPT-2 small and ViT-B/16 shapes
    .venv/bin/python benchmarks/param_groups.py --quick      # smoke run: reduced shapes

`partition(rules, ...)` resolves the rules while tracing (names and shapes are static), so its
jitted step should be the hand-written `multi_transform`'s program (tests/param_groups/
test_rules.py checks the jaxpr). The rules here are the usual ones: no weight decay on 1-D
params (biases, norms; HF's and timm's default) and a tenth of the lr on the token embedding
(param "0"); AdamW elsewhere. Measured on the real model shapes of benchmarks/model_shapes.py
(float32 leaves, only the optimizer step runs, params and state donated):

- compile: `jit(step).lower(...).compile()` from scratch (tracing and rule matching included),
  `--compiles` rounds, each round compiling both back to back (alternated); medians, and the
  median of the per-round ratios;
- step: the two compiled steps timed round-robin (`--reps`), medians;
- program: the compiled programs' fusions and bytes moved (deterministic: equal programs).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_shapes as ms  # noqa: E402

SHAPES = ("gpt2-small", "vit-b16")
EMBEDDING = "0"  # the first leaf: GPT-2's wte, ViT's patch embedding


def rules():
    from optax_like.param_groups import Rule

    return [Rule(ndim=(0, 1), set={"weight_decay": 0.0}, name="no_decay"),
            Rule(regex=f"^{EMBEDDING}$", scale={"lr": 0.1}, name="embedding")]


def by_rules():
    import optax_like as ol
    from optax_like import param_groups as pg

    return pg.partition(rules(), ol.adamw, lr=1e-3, weight_decay=0.05)


def hand_written(shapes):
    import optax_like as ol

    labels = ["no_decay" if len(s) <= 1 else "embedding" if str(i) == EMBEDDING else "default"
              for i, s in enumerate(shapes)]
    return lambda: ol.multi_transform({"default": ol.adamw(lr=1e-3, weight_decay=0.05),
                                       "no_decay": ol.adamw(lr=1e-3, weight_decay=0.0),
                                       "embedding": ol.adamw(lr=1e-4, weight_decay=0.05)}, labels)


def row(shape_name, args, device):
    import optax_like as ol

    shapes = ms.model_shapes(shape_name, args.quick)
    factories = {"multi_transform": hand_written(shapes), "partition(rules)": by_rules}
    seconds = {name: [] for name in factories}
    compiled = {}
    for _ in range(args.compiles):
        for name, factory in factories.items():
            s, lowered, exe, tx = ms.fresh_compile(factory, ol.apply_updates, shapes, device)
            seconds[name].append(s)
            compiled[name] = (lowered, exe, tx)
    ratios = [r / h for h, r in zip(*seconds.values())]
    params, grads = ms.host_arrays(shapes)
    runs = {name: ms.JaxRun(exe, tx, params, grads, device) for name, (_, exe, tx) in compiled.items()}
    steps = ms.round_robin(runs, args.reps)
    n = int(sum(np.prod(s) for s in shapes))
    stats = {name: ms.program_stats(lowered, exe, len(shapes), 4 * n) for name, (lowered, exe, _) in compiled.items()}
    (h_ms, r_ms), (h_c, r_c) = steps.values(), (np.median(v) for v in seconds.values())
    return (f"| {shape_name} | {len(shapes)} | {n / 1e6:.1f}M | {h_ms:.1f} | {r_ms:.1f} | **{r_ms / h_ms:.2f}** "
            f"| {h_c:.2f} | {r_c:.2f} | **{np.median(ratios):.2f}** "
            f"| {stats['multi_transform']['fusions']} / {stats['partition(rules)']['fusions']} "
            f"| {stats['multi_transform']['values_per_param']:.1f} / {stats['partition(rules)']['values_per_param']:.1f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compiles", type=int, default=5)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args(argv)
    import jax

    device = jax.devices("cpu")[0]
    print(f"Run: `.venv/bin/python benchmarks/param_groups.py{' --quick' if args.quick else ''}`; "
          f"{platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__}; load avg {os.getloadavg()[0]:.1f} at start. "
          f"AdamW; rules: no decay on 1-D params, lr x 0.1 on the embedding.\n")
    print("| shape | leaves | params | step ms multi_transform | step ms partition | vs hand-written "
          "| compile s multi_transform | compile s partition | vs hand-written | fusions (hand / rules) | values moved/param (hand / rules) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for shape_name in SHAPES:
        print(row(shape_name, args, device), flush=True)


if __name__ == "__main__":
    main()
