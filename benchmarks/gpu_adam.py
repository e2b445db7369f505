"""GPU section: one Adam step on >= 1e8 params, optax_like vs optax vs torch fused (CUDA).

    .venv/bin/python benchmarks/gpu_adam.py                      # 2**27 params, one leaf
    .venv/bin/python benchmarks/gpu_adam.py --size 268435456 --leaves 64 --reps 50

Runs only where a GPU is present (JAX GPU backend and/or torch CUDA); otherwise prints why it
skips and exits 0. Reports median step time, effective bandwidth (Adam moves 7 values per
param: reads p, g, m, v, writes p, m, v) and its fraction of (a) the device's nominal HBM
bandwidth (table below, or --peak-gbs) and (b) a measured device-to-device copy (`y = x + 1`,
one read and one write), the practical ceiling.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# Nominal HBM bandwidth, GB/s (vendor data sheets).
NOMINAL_GBS = {
    "H200": 4800.0,
    "H100 80GB HBM3": 3350.0,  # SXM
    "H100 PCIe": 2000.0,
    "H100": 3350.0,
    "A100-SXM4-80GB": 2039.0,
    "A100-SXM4-40GB": 1555.0,
    "A100": 1555.0,
    "L4": 300.0,
    "A10G": 600.0,
}


def nominal(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in NOMINAL_GBS.items():
        if key in name:
            return value
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1 << 27, help="total params (>= 1e8 by default)")
    parser.add_argument("--leaves", type=int, default=1, help="split the params into this many equal leaves")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--peak-gbs", type=float, default=None, help="nominal HBM GB/s if not in the table")
    args = parser.parse_args(argv)

    try:
        import jax

        gpus = jax.devices("gpu")
    except Exception:  # no GPU backend compiled in, or no device
        gpus = []
    try:
        import torch

        torch_cuda = torch.cuda.is_available()
    except Exception:
        torch_cuda = False
    if not gpus and not torch_cuda:
        print("SKIP: no GPU present (jax.devices('gpu') is empty and torch.cuda.is_available() is False); "
              "this section runs only on a machine with a CUDA GPU.")
        return None

    rows = []
    n_leaf = args.size // args.leaves
    n = n_leaf * args.leaves
    bytes_moved = 7 * 4 * n
    name = ""
    if gpus:
        import jax.numpy as jnp
        import optax

        import optax_like as ol

        dev = gpus[0]
        name = dev.device_kind
        shapes = [(n_leaf,)] * args.leaves
        params = [jax.device_put(jnp.ones(s, jnp.float32), dev) for s in shapes]
        grads = [jax.device_put(jnp.full(s, 1e-2, jnp.float32), dev) for s in shapes]

        copy = jax.jit(lambda x: x + 1.0, donate_argnums=0)  # XLA folds x + 0 away
        x = jax.device_put(jnp.ones((n,), jnp.float32), dev)
        x = copy(x)
        jax.block_until_ready(x)
        ts = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            x = copy(x)
            jax.block_until_ready(x)
            ts.append(time.perf_counter() - t0)
        copy_gbs = 2 * 4 * n / float(np.median(ts)) / 1e9
        del x

        variants = [("optax", optax.adam(1e-3), optax.apply_updates, params, grads),
                    ("optax_like", ol.adam(1e-3), ol.apply_updates, params, grads)]
        layout = ol.GroupedLayout(params)
        variants.append(("optax_like packed", ol.grouped(ol.adam(1e-3)), ol.apply_updates,
                         layout.pack(params), layout.pack(grads)))
        for label, tx, apply, p0, g0 in variants:
            def step(p, s, g, tx=tx, apply=apply):
                u, s = tx.update(g, s, p)
                return apply(p, u), s

            fn = jax.jit(step, donate_argnums=(0, 1))
            p = jax.tree.map(lambda a: a.copy(), p0)
            s = tx.init(p)
            p, s = fn(p, s, g0)
            jax.block_until_ready((p, s))
            ts = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                p, s = fn(p, s, g0)
                jax.block_until_ready((p, s))
                ts.append(time.perf_counter() - t0)
            rows.append((label, float(np.median(ts))))
            del p, s
    else:
        copy_gbs = None
    if torch_cuda:
        name = name or torch.cuda.get_device_name(0)
        tparams = [torch.ones(n_leaf, device="cuda", requires_grad=True) for _ in range(args.leaves)]
        for p in tparams:
            p.grad = torch.full_like(p, 1e-2)
        opt = torch.optim.Adam(tparams, lr=1e-3, fused=True)
        for _ in range(3):
            opt.step()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ts = []
        for _ in range(args.reps):
            start.record()
            opt.step()
            end.record()
            torch.cuda.synchronize()
            ts.append(start.elapsed_time(end) / 1e3)
        rows.append(("torch fused=True", float(np.median(ts))))

    peak = nominal(name, args.peak_gbs)
    print(f"# Adam step on {name}: {n:,} float32 params in {args.leaves} leaves; "
          f"nominal HBM {peak or '?'} GB/s; measured copy {copy_gbs and round(copy_gbs)} GB/s")
    print("| impl | median ms | eff GB/s | of nominal HBM | of measured copy |")
    print("|---|---|---|---|---|")
    for label, seconds in rows:
        gbs = bytes_moved / seconds / 1e9
        print(f"| {label} | {seconds * 1e3:.3f} | {gbs:.0f} | "
              f"{'' if not peak else f'{gbs / peak:.0%}'} | {'' if not copy_gbs else f'{gbs / copy_gbs:.0%}'} |")
    return rows


if __name__ == "__main__":
    main()
