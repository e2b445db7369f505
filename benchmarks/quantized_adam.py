"""torchao's low-bit Adam (`adam8bit`, `adam4bit`, `adam_fp8`) against float32 Adam and bfloat16
moments: optimizer-state memory and step time on real model shapes.

    .venv/bin/python benchmarks/quantized_adam.py              # ResNet-50 and ViT-B/16 shapes (~3.5 min, 2 cpus, 8 GB)
    .venv/bin/python benchmarks/quantized_adam.py --quick      # smoke run: reduced shapes
    .venv/bin/python benchmarks/quantized_adam.py --shapes resnet50 --reps 5

Shapes: benchmarks/model_shapes.py's (float32 leaves with the models' own shapes; only the optimizer
step runs, jitted, params and state donated). Rows, all at lr 1e-3 without weight decay:

- `adam`: optax_like's float32 Adam (torch.optim.Adam); `adam bf16 moments`: the same with both
  moments stored in bfloat16 (`compact_state(adam, mu_dtype=bf16, nu_dtype=bf16)`, what a param
  group's `mu_dtype`/`nu_dtype` give the `optim` classes);
- `optax adam` and `optax adam(mu_dtype=bf16)`: optax's (its second moment stays float32);
- `adam8bit`, `adam4bit`, `adam_fp8`: torchao's formats (params of >= 4096 values whose size the
  block size divides are quantized; the others keep float32 moments, counted too).

Columns:
- state B/param, live: the bytes of `tx.init(params)`'s arrays (step counters included) per param;
- state B/param, compiled: the jitted step's state inputs per param, from XLA's memory analysis
  (`argument_size_in_bytes` minus the params' and gradients' bytes);
- temp B/param: XLA's temporaries of the step (`temp_size_in_bytes`) per param;
- step ms: each row's compiled step timed round-robin with the two baselines (`adam`, `optax
  adam(mu_dtype=bf16)`; `--reps` rounds of one step each, so load changes hit all three alike; the
  rows run one after another, so that at most three copies of params and state are alive), medians;
  `vs adam`, `vs optax bf16`: the medians of the per-round ratios (the baselines' own rows: over all
  rounds).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_shapes as ms  # noqa: E402

SHAPES = ("resnet50", "vit-b16")
LR = 1e-3


def factories() -> dict:
    import jax.numpy as jnp
    import optax

    import optax_like as ol
    from optax_like.transforms.mixed_precision import compact_state

    return {
        "adam": lambda: ol.adam(LR),
        "adam bf16 moments": lambda: compact_state(ol.adam(LR), mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
        "optax adam": lambda: optax.adam(LR),
        "optax adam(mu_dtype=bf16)": lambda: optax.adam(LR, mu_dtype=jnp.bfloat16),
        "adam8bit": lambda: ol.adam8bit(LR),
        "adam4bit": lambda: ol.adam4bit(LR),
        "adam_fp8": lambda: ol.adam_fp8(LR),
    }


def quantized_fraction(shapes, block_size: int) -> float:
    """The fraction of the params torchao quantizes at `block_size` (>= 4096 values, divisible)."""
    sizes = [int(np.prod(s)) for s in shapes]
    return sum(n for n in sizes if n >= 4096 and n % block_size == 0) / sum(sizes)


BASELINES = ("adam", "optax adam(mu_dtype=bf16)")


def rows(shape_name, args, device) -> list[str]:
    """One line per optimizer. The two baselines stay alive; each other row is compiled, timed
    round-robin against them (`--reps` rounds) and freed, so that at most three params copies and
    states are held (ViT-B/16: 86M params). Ratios: medians of the per-round ratios."""
    import gc

    import jax
    import optax

    import optax_like as ol

    shapes = ms.model_shapes(shape_name, args.quick)
    n = int(sum(np.prod(s) for s in shapes))
    param_bytes = 4 * n
    params, grads = ms.host_arrays(shapes)

    def build(name, factory):
        apply = optax.apply_updates if name.startswith("optax") else ol.apply_updates
        _, _, exe, tx = ms.fresh_compile(factory, apply, shapes, device)
        mem = exe.memory_analysis()
        assert mem is not None, "XLA gave no memory analysis"
        live = jax.eval_shape(tx.init, [jax.ShapeDtypeStruct(s, np.float32) for s in shapes])
        live_bytes = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(live))
        memory = (live_bytes / n, (mem.argument_size_in_bytes - 2 * param_bytes) / n, mem.temp_size_in_bytes / n)
        return ms.JaxRun(exe, tx, params, grads, device), memory

    made = factories()
    base = {name: build(name, made[name]) for name in BASELINES}
    results = {}
    for name, factory in made.items():
        if name in BASELINES:
            continue
        run, memory = build(name, factory)
        times = {k: [] for k in (*BASELINES, name)}
        runs = {**{k: r for k, (r, _) in base.items()}, name: run}
        for _ in range(args.reps):
            for k, r in runs.items():
                t0 = time.perf_counter()
                r.step()
                times[k].append(time.perf_counter() - t0)
        results[name] = (memory, times)
        del run, runs
        gc.collect()
    # the baselines: their times over every group's rounds
    pooled = {k: [t for _, times in results.values() for t in times[k]] for k in BASELINES}
    out = []
    for name in made:
        if name in BASELINES:
            memory, step = base[name][1], float(np.median(pooled[name]) * 1e3)
            ratios = [float(np.median(pooled[name]) / np.median(pooled[k])) for k in BASELINES]
        else:
            memory, times = results[name]
            step = float(np.median(times[name]) * 1e3)
            ratios = [float(np.median(np.array(times[name]) / np.array(times[k]))) for k in BASELINES]
        live, program, temp = memory
        out.append(f"| {shape_name} | {name} | {live:.2f} | {program:.2f} | {temp:.2f} | {step:.1f} "
                   f"| {ratios[0]:.2f} | {ratios[1]:.2f} |")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args(argv)
    import jax

    device = jax.devices("cpu")[0]
    shape_names = args.shapes.split(",")
    command = "`.venv/bin/python benchmarks/quantized_adam.py" + (" --quick" if args.quick else "") + "`"
    print(f"Run: {command}; {platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__}; "
          f"load avg {os.getloadavg()[0]:.1f} at start; {args.reps} rounds.")
    for shape_name in shape_names:
        shapes = ms.model_shapes(shape_name, args.quick)
        n = int(sum(np.prod(s) for s in shapes))
        print(f"{shape_name}: {len(shapes)} leaves, {n / 1e6:.1f}M params; quantized by torchao's rule: "
              f"{quantized_fraction(shapes, 256):.1%} (blocks of 256), {quantized_fraction(shapes, 128):.1%} (128).")
    print()
    print("| shape | optimizer | state B/param, live | state B/param, compiled | temp B/param | step ms | vs adam | vs optax bf16 |")
    print("|---|---|---|---|---|---|---|---|")
    for shape_name in shape_names:
        for line in rows(shape_name, args, device):
            print(line, flush=True)


if __name__ == "__main__":
    main()
