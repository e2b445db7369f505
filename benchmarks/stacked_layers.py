"""Layer decay on stacked layers (a scan over layers): vectorised vs slice by slice vs unstacked.

    .venv/bin/python benchmarks/stacked_layers.py            # ViT-B/16 (12 blocks, d=768)
    .venv/bin/python benchmarks/stacked_layers.py --quick    # smoke run: ViT-Ti shapes (d=192)

timm's fine-tuning recipe, `create_optimizer(opt="adamw", lr=1e-3, weight_decay=0.05,
layer_decay=0.75)` with ViT's group matcher, on three layouts of the same model:

- unstacked: the blocks as separate leaves (`blocks.{i}.attn.qkv.weight`), the reference;
- stacked, vectorised: the blocks stacked along a leading axis (`blocks.attn.qkv.weight` of
  shape (12, ...)), `create_optimizer(..., stacked=("blocks",))`: one program vmapped over the
  layers per stacked leaf, the per-layer lr a `numerics.PerLayer` vector;
- stacked, slices: the same params run slice by slice (`param_groups.unstacked`, what
  `stacked_transform` falls back to), one program per layer.

All three give the same numbers bit for bit (tests/param_groups/test_stacked.py). Compile:
`jit(step).lower(...).compile()` from scratch, `--compiles` rounds, the layouts alternated in
each round; medians. Step: the compiled steps timed round-robin (`--reps`), params and state
donated; medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

MATCHER = dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])
CONFIG = dict(opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75, group_matcher=MATCHER)


def vit_shapes(d: int, layers: int, patch: int = 16, image: int = 224, classes: int = 1000):
    """`(outer, block)`: ViT's named param shapes outside the blocks and in one block."""
    tokens = (image // patch) ** 2 + 1
    outer = {"cls_token": (1, 1, d), "pos_embed": (1, tokens, d), "patch_embed.proj.weight": (d, 3, patch, patch),
             "patch_embed.proj.bias": (d,), "norm.weight": (d,), "norm.bias": (d,), "head.weight": (classes, d),
             "head.bias": (classes,)}
    block = {"norm1.weight": (d,), "norm1.bias": (d,), "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
             "attn.proj.weight": (d, d), "attn.proj.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,),
             "mlp.fc1.weight": (4 * d, d), "mlp.fc1.bias": (4 * d,), "mlp.fc2.weight": (d, 4 * d),
             "mlp.fc2.bias": (d,)}
    return outer, block


def layouts(d: int, layers: int):
    """`{layout: (params shapes, optimizer factory)}`: flat dicts of name -> shape."""
    from optax_like import param_groups as pg

    outer, block = vit_shapes(d, layers)
    unstacked = dict(outer, **{f"blocks.{i}.{n}": s for i in range(layers) for n, s in block.items()})
    stacked = dict(outer, **{f"blocks.{n}": (layers,) + s for n, s in block.items()})

    def nest(shapes):  # "a.b.c" -> {"a": {"b": {"c": ...}}} for the stacked blocks only
        out = {}
        for name, s in shapes.items():
            if name.startswith("blocks."):
                node = out.setdefault("blocks", {})
                *parents, last = name[len("blocks."):].split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[last] = s
            else:
                out[name] = s
        return out

    stacked = nest(stacked)

    def structs(tree):
        import jax
        import jax.numpy as jnp

        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), tree, is_leaf=lambda x: isinstance(x, tuple))

    return {
        "unstacked": (unstacked, lambda: pg.create_optimizer(list(structs(unstacked).items()), **CONFIG)),
        "stacked, vectorised": (stacked, lambda: pg.create_optimizer(structs(stacked), stacked=("blocks",), **CONFIG)),
        "stacked, slices": (stacked, lambda: pg.unstacked(
            pg.create_optimizer(pg.unstacked_names(structs(stacked), ("blocks",)), **CONFIG), ("blocks",))),
    }


def compile_step(factory, shapes):
    import jax
    import jax.numpy as jnp

    import optax_like as ol

    avals = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes, is_leaf=lambda x: isinstance(x, tuple))
    tx = factory()
    state = jax.eval_shape(tx.init, avals)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(avals, state, avals).compile()
    return time.perf_counter() - t0, compiled, tx


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compiles", type=int, default=3)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args(argv)
    import jax
    import jax.numpy as jnp

    d, layers = (192, 12) if args.quick else (768, 12)
    cases = layouts(d, layers)
    seconds = {name: [] for name in cases}
    compiled = {}
    for _ in range(args.compiles):
        for name, (shapes, factory) in cases.items():
            s, exe, tx = compile_step(factory, shapes)
            seconds[name].append(s)
            compiled[name] = (exe, tx, shapes)
    runs = {}
    rng = np.random.default_rng(0)
    for name, (exe, tx, shapes) in compiled.items():
        leaf = lambda s: jnp.asarray(rng.standard_normal(s, dtype=np.float32))  # noqa: E731
        is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
        params = jax.tree.map(leaf, shapes, is_leaf=is_shape)
        grads = jax.tree.map(lambda s: leaf(s) * 1e-2, shapes, is_leaf=is_shape)
        runs[name] = [exe, params, tx.init(params), grads]
    times = {name: [] for name in runs}
    for rep in range(args.reps + 2):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run[1], run[2] = run[0](run[1], run[2], run[3])
            jax.block_until_ready(run[1])
            if rep >= 2:
                times[name].append(time.perf_counter() - t0)
    n = sum(int(np.prod(s)) for s in jax.tree.leaves(cases["unstacked"][0], is_leaf=lambda x: isinstance(x, tuple)))
    print(f"Run: `.venv/bin/python benchmarks/stacked_layers.py{' --quick' if args.quick else ''}`; "
          f"{platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__}; load avg {os.getloadavg()[0]:.1f}. "
          f"ViT d={d}, {layers} blocks, {n / 1e6:.1f}M params; AdamW with layer decay 0.75.\n")
    print("| layout | leaves | compile s | step ms | compile vs unstacked | step vs unstacked |")
    print("|---|---|---|---|---|---|")
    base_c, base_s = np.median(seconds["unstacked"]), np.median(times["unstacked"])
    for name in cases:
        leaves = len(jax.tree.leaves(cases[name][0], is_leaf=lambda x: isinstance(x, tuple)))
        c, s = np.median(seconds[name]), np.median(times[name])
        print(f"| {name} | {leaves} | {c:.2f} | {s * 1e3:.1f} | {c / base_c:.2f} | {s / base_s:.2f} |")


if __name__ == "__main__":
    main()
