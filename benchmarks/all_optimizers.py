"""One jitted step of EVERY optax_like optimizer, next to its optax and torch counterparts.

    .venv/bin/python benchmarks/all_optimizers.py --markdown
    .venv/bin/python benchmarks/all_optimizers.py --optimizers adam,nadam --layers 4 --d-model 512
    .venv/bin/python benchmarks/all_optimizers.py --optimizers adopt,adan --program   # + compiled-program columns

The tree is transformer-like (benchmarks/optimizer_step.py's `make_shapes`, smaller by
default: 2 blocks, d_model 256, vocab 4096: 38 leaves, 2.6M float32 params). Every JAX step is
`step(params, state, grads) -> (params, state)`, jitted with params and state donated. The
torch columns run the record's reference (`torch.optim.<Class>`, or timm's class: the row says
so) with its default implementation on CPU (foreach where it picks it) and, where the record
says torch has one, `fused=True`. The implementations of one optimizer are timed round-robin
(one step each, repeated) so load changes hit them alike, the JAX ones among themselves (the
first of each round alternating) and torch's after them: the step that runs right after a
torch step is slower on this machine whichever it is (AdamWLegacy, 2 cpus: optax_like 1.2-1.85x
optax's when run right after torch's step, 0.64-0.75x with optax there instead; a 50 ms pause
after torch does not remove it), which charged optax_like, run first, in the earlier tables.
Medians are reported.

The rows are optax_like.registry's records (not LBFGS, whose step is a closure); the optax
counterpart is the record's `optax` expression (`optax.sgd(lr, momentum=0.9)`, `optax.adam(lr)`,
...), its note where optax's algorithm differs (its `adafactor`, `muon`), `-` where optax has
none (ASGD, Rprop, SparseAdam). A "matrix" layout (Muon) runs on the 2-D leaves only, as torch's
Muon requires; a "sparse" one (SparseAdam) gets row-sparse gradients touching 1/8 of the rows of
every 2-D leaf (torch: sparse COO grads) and is left out of the dense comparisons.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from optimizer_step import make_shapes, median_ms

# Every registry record with a plain step (not LBFGS's closure), in the registry's order. Each is
# run with its record's example lr (the lr does not change what a step computes, only a constant
# in it) plus BENCH_OPTIONS, the options that make ours compute what its optax counterpart
# (`info.optax`) computes; the reference is `info.reference_class()` (torch.optim, or timm),
# with `fused=True` beside it where `info.fused`.
BENCH_OPTIONS = {"sgd": dict(momentum=0.9)}


def records():
    from optax_like import registry

    return {name: info for name, info in registry.OPTIMIZERS.items() if not info.closure}


def bench_kwargs(info):
    return dict(lr=info.example["lr"], **BENCH_OPTIONS.get(info.name, {}))


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
        self.lowered = fn.lower(params, state, grads)
        self.compiled = self.lowered.compile()
        self.compile_s = time.perf_counter() - t0
        self.n_leaves = len(jax.tree.leaves(params))
        self.param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
        self.params, self.state, self.grads = params, state, grads
        for _ in range(2):
            self.step()

    def step(self):
        self.params, self.state = self.compiled(self.params, self.state, self.grads)
        self.jax.block_until_ready((self.params, self.state))


class TorchStep:
    compile_s = None

    def __init__(self, reference, kwargs, shapes, sparse_rows, fused):
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
        self.opt = reference(self.params, **kwargs, **extra)
        for _ in range(2):
            self.step()

    def step(self):
        self.opt.step()


def build(name, shapes, impl):
    """An object with .step() and .compile_s for one implementation of optimizer `name`."""
    import jax.numpy as jnp
    import optax

    import optax_like as ol

    info = records()[name]
    kwargs = bench_kwargs(info)
    rng = np.random.default_rng(0)
    params = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    grads = [jnp.asarray(rng.standard_normal(s) * 1e-2, jnp.float32) for s in shapes]
    sparse_rows = None
    if info.layout == "sparse":
        sparse_rows = lambda n: np.arange(0, n, 8)  # noqa: E731
        grads = [ol.RowSparseGrad(jnp.asarray(sparse_rows(g.shape[0])), g[sparse_rows(g.shape[0])]) for g in grads]
    if impl == "ol":
        return JaxStep(info.factory(**kwargs), ol.apply_updates, params, grads)
    if impl == "optax":
        return JaxStep(eval(info.optax.format(lr=kwargs["lr"]), {"optax": optax}), optax.apply_updates, params, grads)
    return TorchStep(info.new_reference, kwargs, shapes, sparse_rows, fused=(impl == "torch-fused"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", default=",".join(records()))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--program", action="store_true",
                        help="add the compiled programs' statistics (model_shapes.program_stats): values read "
                             "and written per param, fusions, distinct kernels, for optax_like / optax")
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
    program_head = " values moved/param (ol / optax) | fusions (ol / optax) | kernels (ol / optax) |" if args.program else ""
    print("| optimizer | optax_like ms | optax ms | torch ms | torch fused ms | vs optax | vs torch | vs torch fused | "
          f"compile s (ol / optax) |{program_head} note |")
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * (3 if args.program else 0) + "---|")
    for name in args.optimizers.split(","):
        info = records()[name]
        note = info.optax_note
        if info.reference_package != "torch":
            note = f"{note}; torch columns: {info.reference}".strip("; ")
        opt_shapes = [s for s in shapes if len(s) == 2] if info.layout == "matrix" else shapes
        impls = ["ol"] + (["optax"] if info.optax else []) + ["torch"] + (["torch-fused"] if info.fused else [])
        runs = {}
        for impl in impls:
            try:
                runs[impl] = build(name, opt_shapes, impl)
            except Exception as e:  # an implementation missing in this environment: say so
                note = f"{note}; {impl} failed: {type(e).__name__}: {str(e)[:60]}".strip("; ")
        times = timed(runs, args.reps)
        med = {impl: median_ms(t) for impl, t in times.items()}
        cell = lambda impl: f"{med[impl]:.2f}" if impl in med else "-"  # noqa: E731
        ratio = lambda impl: f"{med['ol'] / med[impl]:.2f}" if impl in med and "ol" in med else "-"  # noqa: E731
        compile_s = " / ".join(f"{runs[i].compile_s:.2f}" if i in runs else "-" for i in ("ol", "optax"))
        if info.layout == "matrix":
            note = (note + "; 2-D leaves only").strip("; ")
        if info.layout == "sparse":
            note = ("row-sparse grads (1/8 of rows); torch: sparse COO; " + note).strip("; ")
        program = ""
        if args.program:
            stats = {i: program_stats(runs[i]) for i in ("ol", "optax") if i in runs}
            cells = lambda key, fmt: " / ".join(fmt.format(stats[i][key]) if i in stats else "-" for i in ("ol", "optax"))  # noqa: E731
            program = f" {cells('values_per_param', '{:.1f}')} | {cells('fusions', '{}')} | {cells('kernels', '{}')} |"
        print(f"| {name} | {cell('ol')} | {cell('optax')} | {cell('torch')} | {cell('torch-fused')} | "
              f"{ratio('optax')} | {ratio('torch')} | {ratio('torch-fused')} | {compile_s} |{program} {note} |", flush=True)
    print(f"# load avg after: {load_avg()}")


def timed(runs: dict, reps: int) -> dict:
    """Seconds per step of each implementation, `reps` rounds: the JAX implementations
    round-robin among themselves (the first of each round alternating), then torch's."""
    jax_impls = [impl for impl, run in runs.items() if isinstance(run, JaxStep)]
    times = {impl: [] for impl in runs}
    for group in (jax_impls, [impl for impl in runs if impl not in jax_impls]):
        for r in range(reps):
            for impl in group[r % max(len(group), 1):] + group[:r % max(len(group), 1)]:
                t0 = time.perf_counter()
                runs[impl].step()
                times[impl].append(time.perf_counter() - t0)
    return times


def program_stats(run: JaxStep) -> dict:
    """model_shapes.program_stats of a JAX step (deterministic facts of its compiled program)."""
    from model_shapes import program_stats as stats

    return stats(run.lowered, run.compiled, run.n_leaves, run.param_bytes)


if __name__ == "__main__":
    main()
