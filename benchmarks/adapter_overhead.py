"""Per-step overhead of `optax_like.optim` over the bare jitted functional step (microseconds).

Both run the same update on the same params with donation; the adapter additionally packs the
param groups' hyperparameters and dispatches through its step. Medians over repeats of N steps
(one device sync per repeat). Also counts traces across 100 lr edits. Writes
benchmarks/results/adapter.md.

    .venv/bin/python benchmarks/adapter_overhead.py
"""

from __future__ import annotations

import functools
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import optax_like as ol
import optax_like.optim as optim
from optax_like.optim import _step

N, REPEATS = 100, 21
_TRACES = [0]  # traces of the adapter's jitted step, reported by jax.monitoring


def _on_event(event, duration, **kwargs):
    if event == "/jax/core/compile/jaxpr_trace_duration" and kwargs.get("fun_name") == _step.adapter_step.__name__:
        _TRACES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


def make_params(leaves, size):
    keys = jax.random.split(jax.random.PRNGKey(0), leaves)
    return [jax.random.normal(k, (size, size)) for k in keys]


def time_loops(*fns) -> list[float]:
    """Median microseconds per step of each fn, timed round-robin (N steps of each per repeat,
    alternating) so that load changes on a shared machine hit all of them alike."""
    for fn in fns:
        jax.block_until_ready(fn())  # compile / warm up
    times = [[] for _ in fns]
    for _ in range(REPEATS):
        for fn, out_times in zip(fns, times):
            start = time.perf_counter()
            out = None
            for _ in range(N):
                out = fn()
            jax.block_until_ready(out)
            out_times.append((time.perf_counter() - start) / N * 1e6)
    return [statistics.median(t) for t in times]


def bench(name, factory, cls, kwargs, leaves, size):
    params = make_params(leaves, size)
    grads = make_params(leaves, size)
    tx = factory(**kwargs)
    state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def bare_step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    box = [params, state]

    def bare():
        box[0], box[1] = bare_step(box[0], box[1], grads)
        return box[0]

    opt = cls(make_params(leaves, size), **kwargs)

    def adapter():
        opt.grad = grads
        opt.step()
        return opt._groups[0].leaves

    # The adapter's own compiled step, called directly with prepared arguments: what step()
    # costs without its host work (grads check, hyperparameter cache, argument assembly).
    twin = cls(make_params(leaves, size), **kwargs)
    twin.grad = grads
    hypers = twin._hypers()
    groups = twin._groups
    config = _step.Config(_step.gradient_update, None, twin._layout, tuple(g.spec for g in groups),
                          bool(twin.skip_nonfinite))
    call_args = [tuple(g.leaves for g in groups), tuple(g.state for g in groups)]
    fixed = (tuple(twin._frozen), hypers, tuple(g.grads for g in groups), (), None)

    def direct():
        _, leaves_out, states_out, _ = _step.jitted_step(config, *call_args, *fixed)
        call_args[0], call_args[1] = leaves_out, states_out
        return leaves_out

    t_bare, t_direct, t_adapter = time_loops(bare, direct, adapter)
    return name, leaves, size, t_bare, t_direct, t_adapter


def recompiles_across_lr_edits(edits=100):
    opt = optim.Adam(make_params(4, 8), lr=1e-3)
    grads = make_params(4, 8)
    opt.grad = grads
    opt.step()
    before = _TRACES[0]
    for i in range(edits):
        for group in opt.param_groups:
            group["lr"] = 1e-3 * 0.99**i
            group["betas"] = (0.9, 0.999 - 1e-4 * (i % 3))
        opt.step()
    return _TRACES[0] - before


def main():
    rows = [
        bench("SGD momentum", ol.sgd, optim.SGD, dict(lr=0.01, momentum=0.9), 4, 32),
        bench("SGD momentum", ol.sgd, optim.SGD, dict(lr=0.01, momentum=0.9), 64, 32),
        bench("Adam", ol.adam, optim.Adam, dict(lr=1e-3), 4, 1),  # dispatch floor: host work only
        bench("Adam", ol.adam, optim.Adam, dict(lr=1e-3), 64, 1),
        bench("Adam", ol.adam, optim.Adam, dict(lr=1e-3), 4, 32),
        bench("Adam", ol.adam, optim.Adam, dict(lr=1e-3), 64, 32),
        bench("Adam", ol.adam, optim.Adam, dict(lr=1e-3), 8, 512),
    ]
    retraces = recompiles_across_lr_edits()
    lines = [
        "# Adapter overhead (`optax_like.optim` step vs bare jitted functional step)",
        "",
        f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()}), jax {jax.__version__}; "
        f"median of {REPEATS} x {N} steps (the three alternating), microseconds per step. "
        "Command: `.venv/bin/python benchmarks/adapter_overhead.py`.",
        "",
        "| optimizer | leaves | leaf shape | bare jitted step (us) | adapter's compiled step, called directly (us) | adapter step() (us) | host work of step() (us) | step() - bare (us) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, leaves, size, t_bare, t_direct, t_adapter in rows:
        lines.append(f"| {name} | {leaves} | {size}x{size} | {t_bare:.1f} | {t_direct:.1f} | {t_adapter:.1f} | "
                     f"{t_adapter - t_direct:.1f} | {t_adapter - t_bare:.1f} |")
    lines += ["", f"Traces (compilations) across 100 steps that edit `lr` and `betas` every step: **{retraces}**."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = pathlib.Path(__file__).parent / "results" / "adapter.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
