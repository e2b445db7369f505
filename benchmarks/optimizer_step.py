"""One optimizer step, side by side: optax_like (default and grouped) vs optax vs torch.

    .venv/bin/python benchmarks/optimizer_step.py --tree transformer --optimizer adam
    .venv/bin/python benchmarks/optimizer_step.py --tree small --leaves 2000 --leaf-size 1000
    .venv/bin/python benchmarks/optimizer_step.py --tree big --size 16777216 --optimizer sgd
    .venv/bin/python benchmarks/optimizer_step.py --tree tiny            # the dispatch floor

Every JAX step is `step(params, state, grads) -> (params, state)`, `jax.jit`-ed with params and
state donated (the obvious training-loop step; `--grads-first` times the argument order
`(grads, state, params)`, whose donated buffers jax pairs with the wrong outputs). Implementations are timed round-robin (one step of each, repeated), so
load changes on a shared machine hit all of them alike; the table gives medians, the ratio to
optax, the effective bandwidth (the bytes the algorithm must move: Adam reads p, g, m, v and
writes p, m, v = 7 values per param; SGD-momentum 5) and, for JAX, compile time and the
temporary memory XLA allocates beyond arguments and outputs (peak-memory overhead).

Implementations (--impls, comma separated):
  optax           optax.adam / optax.sgd(momentum=0.9), per leaf
  ol              optax_like.adam / optax_like.sgd(momentum=0.9), per leaf (the default)
  ol-grouped      optax_like.grouped(tx, layout): ordinary trees in and out, stacked state
  ol-packed       optax_like.grouped(tx) on params/grads kept packed (GroupedLayout.pack)
  torch-foreach   torch.optim.<Opt>(foreach=True)
  torch-fused     torch.optim.<Opt>(fused=True)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

ALL_IMPLS = ["optax", "ol", "ol-grouped", "ol-packed", "torch-foreach", "torch-fused"]


def make_shapes(args) -> list[tuple]:
    if args.tree == "big":
        return [(args.size,)]
    if args.tree == "small":
        return [(args.leaf_size,)] * args.leaves
    if args.tree == "tiny":
        return [(10,)] * 4
    # transformer: embedding + `layers` blocks of (attention q/k/v/o + biases, MLP, 2 layer norms)
    d, v = args.d_model, args.vocab
    shapes = [(v, d)]
    for _ in range(args.layers):
        shapes += [(d, d)] * 4 + [(d,)] * 4 + [(d, 4 * d), (4 * d,), (4 * d, d), (d,)] + [(d,)] * 4
    shapes += [(d,), (d,)]
    return shapes


def median_ms(times) -> float:
    return float(np.median(times) * 1e3)


class JaxImpl:
    def __init__(self, name, args, shapes, dtype):
        import jax
        import jax.numpy as jnp
        import optax

        import optax_like as ol

        self.name = name
        rng = np.random.default_rng(0)
        params = [jnp.asarray(rng.standard_normal(s), dtype) for s in shapes]
        grads = [jnp.asarray(rng.standard_normal(s) * 1e-2, dtype) for s in shapes]
        lr = 1e-3
        if name == "optax":
            tx = optax.adam(lr) if args.optimizer == "adam" else optax.sgd(lr, momentum=0.9)
            apply = optax.apply_updates
        else:
            tx = ol.adam(lr) if args.optimizer == "adam" else ol.sgd(lr, momentum=0.9)
            apply = ol.apply_updates
        if name == "ol-grouped":
            tx = ol.grouped(tx, ol.GroupedLayout(params))
        unpack = lambda p: p  # noqa: E731
        if name == "ol-packed":
            layout = ol.GroupedLayout(params)
            params, grads = layout.pack(params), layout.pack(grads)
            tx = ol.grouped(tx)
            unpack = layout.unpack

        def loss(params, x):  # --train-step: a toy loss touching every leaf once
            return sum(jnp.sum(jnp.tanh(p * x)) for p in unpack(params))

        def step(params, state, grads):
            if args.train_step:
                grads = jax.grad(loss)(params, grads)
            updates, state = tx.update(grads, state, params)
            return apply(params, updates), state

        if args.train_step:  # the third argument is the loss' input; grads come from jax.grad
            grads = jnp.asarray(0.5, dtype)

        state = tx.init(params)
        if args.grads_first:
            # (grads, state, params) -> (params, state): jax pairs donated inputs with outputs by
            # position and shape, so params' buffer receives m's result and so on (copies).
            fn = jax.jit(lambda g, s, p: step(p, s, g), donate_argnums=(1, 2))
            self.order = lambda p, s, g: (g, s, p)
        else:
            fn = jax.jit(step, donate_argnums=(0, 1))
            self.order = lambda p, s, g: (p, s, g)
        t0 = time.perf_counter()
        self.compiled = fn.lower(*self.order(params, state, grads)).compile()
        self.compile_s = time.perf_counter() - t0
        mem = self.compiled.memory_analysis()
        self.temp_bytes = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
        self.grads, self.state, self.params = grads, state, params
        self.jax = jax
        for _ in range(2):
            self.step()

    def step(self):
        self.params, self.state = self.compiled(*self.order(self.params, self.state, self.grads))
        self.jax.block_until_ready((self.params, self.state))


class TorchImpl:
    def __init__(self, name, args, shapes, dtype_name):
        import torch

        self.name = name
        self.compile_s = None
        self.temp_bytes = None
        torch_dtype = getattr(torch, dtype_name)
        rng = np.random.default_rng(0)
        self.params = [torch.tensor(rng.standard_normal(s), dtype=torch_dtype, requires_grad=True) for s in shapes]
        for p in self.params:
            p.grad = torch.tensor(rng.standard_normal(p.shape) * 1e-2, dtype=torch_dtype)
        kind = {"torch-foreach": dict(foreach=True), "torch-fused": dict(fused=True)}[name]
        if args.optimizer == "adam":
            self.opt = torch.optim.Adam(self.params, lr=1e-3, **kind)
        else:
            self.opt = torch.optim.SGD(self.params, lr=1e-3, momentum=0.9, **kind)
        for _ in range(2):
            self.step()

    def step(self):
        self.opt.step()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", choices=["big", "transformer", "small", "tiny"], default="transformer")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float64"], default="float32")
    parser.add_argument("--size", type=int, default=1 << 24, help="params in the one leaf (--tree big)")
    parser.add_argument("--leaves", type=int, default=2000, help="--tree small: number of leaves")
    parser.add_argument("--leaf-size", type=int, default=1000, help="--tree small: params per leaf")
    parser.add_argument("--layers", type=int, default=9, help="--tree transformer: blocks")
    parser.add_argument("--d-model", type=int, default=288)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=30, help="timed steps per implementation")
    parser.add_argument("--impls", default=",".join(ALL_IMPLS))
    parser.add_argument("--grads-first", action="store_true",
                        help="jit step(grads, state, params) -> (params, state) instead of "
                        "step(params, state, grads): shows the cost of mismatched donation")
    parser.add_argument("--train-step", action="store_true",
                        help="time a whole jitted train step (grads of a toy loss + update), JAX only: "
                        "shows ol-packed with its grads coming out packed")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    shapes = make_shapes(args)
    n_params = int(sum(np.prod(s) for s in shapes))
    itemsize = jnp.dtype(args.dtype).itemsize
    values = 7 if args.optimizer == "adam" else 5
    ideal_bytes = values * n_params * itemsize
    print(
        f"# {args.optimizer} step, tree={args.tree}: {len(shapes)} leaves, {n_params:,} params, {args.dtype}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__}, "
        f"load avg {os.getloadavg()[0]:.1f}"
    )
    impls = []
    if args.train_step:
        args.impls = ",".join(i for i in args.impls.split(",") if not i.startswith("torch"))
    for name in args.impls.split(","):
        if name not in ALL_IMPLS:
            raise SystemExit(f"unknown implementation {name!r}; choose from {ALL_IMPLS}")
        try:
            if name.startswith("torch"):
                impls.append(TorchImpl(name, args, shapes, args.dtype))
            else:
                impls.append(JaxImpl(name, args, shapes, jnp.dtype(args.dtype)))
        except Exception as error:  # e.g. torch's fused kernels lack a dtype on CPU
            print(f"# {name}: skipped ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    times = {impl.name: [] for impl in impls}
    for _ in range(args.reps):
        for impl in impls:
            t0 = time.perf_counter()
            impl.step()
            times[impl.name].append(time.perf_counter() - t0)
    base = median_ms(times["optax"]) if "optax" in times else None
    header = ["impl", "median ms", "vs optax", "eff GB/s", "compile s", "XLA temp / params"]
    rows = []
    for impl in impls:
        ms = median_ms(times[impl.name])
        temp = "" if impl.temp_bytes is None else f"{impl.temp_bytes / (n_params * itemsize):.2f}x"
        rows.append([
            impl.name,
            f"{ms:.3f}",
            "" if base is None else f"{ms / base:.2f}",
            f"{ideal_bytes / (ms * 1e-3) / 1e9:.1f}",
            "" if impl.compile_s is None else f"{impl.compile_s:.2f}",
            temp,
        ])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print(f"# load avg after: {os.getloadavg()[0]:.1f}")
    return rows


if __name__ == "__main__":
    main()
