"""Compile time of one jitted, donated optimizer step against the number of leaves.

    .venv/bin/python benchmarks/compile_time.py --leaves 10,100,300,1000,2000,5000 --budget-s 60
    .venv/bin/python benchmarks/compile_time.py --impls optax,ol-packed --plot benchmarks/compile_time.png

Leaves are `--leaf-size` float32 vectors (all one shape: the best case for the grouped layout;
a real model has a handful of distinct shapes, so a handful of stacks). An implementation stops
growing once one compile exceeds `--budget-s` (XLA's compile time grows faster than linearly in
the leaf count, and the machine has 2 cores). Prints a table (seconds; `-` = skipped).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

IMPLS = ["optax", "ol", "ol-grouped", "ol-packed"]


def compile_seconds(impl: str, n_leaves: int, leaf_size: int, optimizer: str) -> float:
    import jax
    import jax.numpy as jnp
    import optax

    import optax_like as ol

    params = [jax.ShapeDtypeStruct((leaf_size,), jnp.float32) for _ in range(n_leaves)]
    if impl == "optax":
        tx = optax.adam(1e-3) if optimizer == "adam" else optax.sgd(1e-3, momentum=0.9)
        apply = optax.apply_updates
    else:
        tx = ol.adam(1e-3) if optimizer == "adam" else ol.sgd(1e-3, momentum=0.9)
        apply = ol.apply_updates
    if impl == "ol-grouped":
        tx = ol.grouped(tx, ol.GroupedLayout(params))
    if impl == "ol-packed":
        # what GroupedLayout(params).pack(params) returns, as shapes
        params = {f"float32[{leaf_size}]": jax.ShapeDtypeStruct((n_leaves, leaf_size), jnp.float32)}
        tx = ol.grouped(tx)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state

    state = jax.eval_shape(tx.init, params)
    t0 = time.perf_counter()
    jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaves", default="10,100,300,1000,2000")
    parser.add_argument("--leaf-size", type=int, default=1000)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--budget-s", type=float, default=60.0, help="stop an impl after a compile this long")
    parser.add_argument("--plot", default=None, help="write a log-log PNG here")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.leaves.split(",")]
    impls = args.impls.split(",")
    results = {impl: {} for impl in impls}
    print(f"# {args.optimizer} compile seconds vs leaves ({args.leaf_size} float32 each); "
          f"{os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.1f}")
    print("leaves  " + "  ".join(f"{i:>11}" for i in impls), flush=True)
    stopped = set()
    for n in counts:
        cells = []
        for impl in impls:
            if impl in stopped:
                cells.append(f"{'-':>11}")
                continue
            seconds = compile_seconds(impl, n, args.leaf_size, args.optimizer)
            results[impl][n] = seconds
            if seconds > args.budget_s:
                stopped.add(impl)
            cells.append(f"{seconds:>11.2f}")
        print(f"{n:>6}  " + "  ".join(cells), flush=True)
    print(f"# load avg after: {os.getloadavg()[0]:.1f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for impl, points in results.items():
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], marker="o", label=impl)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("leaves")
        ax.set_ylabel("compile seconds (jit of one Adam step)")
        ax.set_title(f"compile time vs leaf count ({args.leaf_size} params/leaf, CPU)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"# wrote {args.plot}")
    return results


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
