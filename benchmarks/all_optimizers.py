"""One jitted step of EVERY optax_like optimizer, next to its optax and torch counterparts.

    .venv/bin/python benchmarks/all_optimizers.py --markdown
    .venv/bin/python benchmarks/all_optimizers.py --optimizers adam,nadam --layers 4 --d-model 512

The tree is transformer-like (benchmarks/optimizer_step.py's `make_shapes`, smaller by
default: 2 blocks, d_model 256, vocab 4096: 38 leaves, 2.6M float32 params). Every JAX step is
`step(params, state, grads) -> (params, state)`, jitted with params and state donated. torch
runs `torch.optim.<Class>` with its default implementation on CPU (foreach where torch picks it)
and, where torch has one, `fused=True`. All implementations of one optimizer are timed
round-robin (one step each, repeated) so load changes hit them alike; medians are reported.

optax counterparts compute the same algorithm where optax has one (`optax.sgd(momentum=0.9)`,
`optax.adam`, ...); where optax's algorithm differs (its `adafactor`, `muon`) the row
says so; `-` where optax has none (ASGD, Rprop, SparseAdam). Muon runs on the 2-D leaves only, as
torch's Muon requires; SparseAdam gets row-sparse gradients touching 1/8 of the rows of every
2-D leaf (torch: sparse COO grads) and is left out of the dense comparisons.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from optimizer_step import make_shapes, median_ms

# name -> (optax_like factory kwargs, optax expression or None, optax note, torch class, torch kwargs, fused?)
SPECS = {
    "sgd": (dict(lr=1e-3, momentum=0.9), "optax.sgd(1e-3, momentum=0.9)", "", "SGD", dict(lr=1e-3, momentum=0.9), True),
    "adam": (dict(lr=1e-3), "optax.adam(1e-3)", "", "Adam", dict(lr=1e-3), True),
    "adamw": (dict(lr=1e-3), "optax.adamw(1e-3, weight_decay=1e-2)", "", "AdamW", dict(lr=1e-3), True),
    "adamax": (dict(lr=2e-3), "optax.adamax(2e-3)", "", "Adamax", dict(lr=2e-3), False),
    "nadam": (dict(lr=2e-3), "optax.nadam(2e-3)", "other momentum schedule", "NAdam", dict(lr=2e-3), False),
    "radam": (dict(lr=1e-3), "optax.radam(1e-3)", "", "RAdam", dict(lr=1e-3), False),
    "adagrad": (dict(lr=1e-2), "optax.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10)", "", "Adagrad", dict(lr=1e-2), True),
    "adadelta": (dict(lr=1.0), "optax.adadelta(1.0, rho=0.9, eps=1e-6)", "", "Adadelta", dict(lr=1.0), False),
    "rmsprop": (dict(lr=1e-2), "optax.rmsprop(1e-2, decay=0.99, eps=1e-8)", "", "RMSprop", dict(lr=1e-2), False),
    "rprop": (dict(lr=1e-2), None, "", "Rprop", dict(lr=1e-2), False),
    "asgd": (dict(lr=1e-2), None, "", "ASGD", dict(lr=1e-2), False),
    "adafactor": (dict(lr=1e-2), "optax.adafactor(1e-2)", "other algorithm (Shazeer's)", "Adafactor", dict(lr=1e-2), False),
    "muon": (dict(lr=2e-2), "optax.contrib.muon(2e-2)", "other algorithm details", "Muon", dict(lr=2e-2), False),
    "sparse_adam": (dict(lr=1e-3), None, "", "SparseAdam", dict(lr=1e-3), False),
}


def load_avg() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


class JaxStep:
    def __init__(self, tx, apply, params, grads):
        import jax

        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return apply(params, updates), state

        self.jax = jax
        state = tx.init(params)
        fn = jax.jit(step, donate_argnums=(0, 1))
        t0 = time.perf_counter()
        self.compiled = fn.lower(params, state, grads).compile()
        self.compile_s = time.perf_counter() - t0
        self.params, self.state, self.grads = params, state, grads
        for _ in range(2):
            self.step()

    def step(self):
        self.params, self.state = self.compiled(self.params, self.state, self.grads)
        self.jax.block_until_ready((self.params, self.state))


class TorchStep:
    compile_s = None

    def __init__(self, cls_name, kwargs, shapes, sparse_rows, fused):
        import torch

        rng = np.random.default_rng(0)
        self.params = [torch.tensor(rng.standard_normal(s), dtype=torch.float32, requires_grad=True) for s in shapes]
        for p in self.params:
            g = torch.tensor(rng.standard_normal(p.shape) * 1e-2, dtype=torch.float32)
            if sparse_rows is not None:
                rows = sparse_rows(p.shape[0])
                g = torch.sparse_coo_tensor(torch.tensor(rows)[None], g[rows], p.shape).coalesce()
            p.grad = g
        extra = dict(fused=True) if fused else {}
        self.opt = getattr(torch.optim, cls_name)(self.params, **kwargs, **extra)
        for _ in range(2):
            self.step()

    def step(self):
        self.opt.step()


def build(name, shapes, impl):
    """An object with .step() and .compile_s for one implementation of optimizer `name`."""
    import jax.numpy as jnp
    import optax

    import optax_like as ol

    kwargs, optax_expr, _, torch_cls, torch_kwargs, _ = SPECS[name]
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    grads = [jnp.asarray(rng.standard_normal(s) * 1e-2, jnp.float32) for s in shapes]
    sparse_rows = None
    if name == "sparse_adam":
        sparse_rows = lambda n: np.arange(0, n, 8)  # noqa: E731
        grads = [ol.RowSparseGrad(jnp.asarray(sparse_rows(g.shape[0])), g[sparse_rows(g.shape[0])]) for g in grads]
    if impl == "ol":
        return JaxStep(getattr(ol, name)(**kwargs), ol.apply_updates, params, grads)
    if impl == "optax":
        return JaxStep(eval(optax_expr, {"optax": optax}), optax.apply_updates, params, grads)
    return TorchStep(torch_cls, torch_kwargs, shapes, sparse_rows, fused=(impl == "torch-fused"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", default=",".join(SPECS))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    args.tree = "transformer"
    shapes = make_shapes(args)
    import jax
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    n = sum(int(np.prod(s)) for s in shapes)
    print(f"# one step per optimizer, transformer-like tree: {len(shapes)} leaves, {n:,} float32 params; "
          f"{platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__}, torch {torch.__version__.split('+')[0]}, "
          f"load avg {load_avg()}")
    print("| optimizer | optax_like ms | optax ms | torch ms | torch fused ms | vs optax | vs torch | vs torch fused | compile s (ol / optax) | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.optimizers.split(","):
        _, optax_expr, note, _, _, fused = SPECS[name]
        opt_shapes = [s for s in shapes if len(s) == 2] if name == "muon" else shapes
        impls = ["ol"] + (["optax"] if optax_expr else []) + ["torch"] + (["torch-fused"] if fused else [])
        runs = {}
        for impl in impls:
            try:
                runs[impl] = build(name, opt_shapes, impl)
            except Exception as e:  # an implementation missing in this environment: say so
                note = f"{note}; {impl} failed: {type(e).__name__}: {str(e)[:60]}".strip("; ")
        times = {impl: [] for impl in runs}
        for _ in range(args.reps):
            for impl, run in runs.items():
                t0 = time.perf_counter()
                run.step()
                times[impl].append(time.perf_counter() - t0)
        med = {impl: median_ms(t) for impl, t in times.items()}
        cell = lambda impl: f"{med[impl]:.2f}" if impl in med else "-"  # noqa: E731
        ratio = lambda impl: f"{med['ol'] / med[impl]:.2f}" if impl in med and "ol" in med else "-"  # noqa: E731
        compile_s = " / ".join(f"{runs[i].compile_s:.2f}" if i in runs else "-" for i in ("ol", "optax"))
        if name == "muon":
            note = (note + "; 2-D leaves only").strip("; ")
        if name == "sparse_adam":
            note = ("row-sparse grads (1/8 of rows); torch: sparse COO; " + note).strip("; ")
        print(f"| {name} | {cell('ol')} | {cell('optax')} | {cell('torch')} | {cell('torch-fused')} | "
              f"{ratio('optax')} | {ratio('torch')} | {ratio('torch-fused')} | {compile_s} | {note} |", flush=True)
    print(f"# load avg after: {load_avg()}")


if __name__ == "__main__":
    main()
