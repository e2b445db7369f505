"""A whole jitted train step, gradients computed inside it: optax_like vs optax.

    .venv/bin/python benchmarks/train_step.py                  # 6 x 4096^2 + 6 x 4096 params
    .venv/bin/python benchmarks/train_step.py --size 1024 --rounds 3

The step computes elementwise gradients of the params (producers XLA may fuse into the
optimizer's kernels), clips them by their global norm (1.0) and applies Adam (lr 1e-3), params
and state donated. What it guards: nothing the optimizer adds to the program may make XLA write
a gradient computed in the same jit to memory instead of fusing it (on an H100 an
`optimization_barrier` on the gradient did: 46 fusions and 1.87-1.92 ms against optax's 33 and
1.63-1.67 ms; see `_pinned_to_leaf` in optax_like/transforms/_per_param.py).

Each library runs in its own process (a fresh compile, no shared caches), alternately, `--rounds`
times; per run: compile seconds (lower + compile), fusions in the compiled program, and the
median / min of 30 timed steps after 5 warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_one(library: str, size: int) -> dict:
    import jax
    import jax.numpy as jnp

    shapes = [(size, size)] * 6 + [(size,)] * 6
    key = jax.random.PRNGKey(0)
    params = [jax.random.normal(jax.random.fold_in(key, i), s, jnp.float32) for i, s in enumerate(shapes)]
    target = [p * 0.5 for p in params]
    if library == "optax":
        import optax

        tx, apply = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)), optax.apply_updates
    else:
        import optax_like

        tx, apply = optax_like.chain(optax_like.clip_by_global_norm(1.0), optax_like.adam(1e-3)), optax_like.apply_updates

    def step(params, state, target):
        grads = [2.0 * (p - t) * p for p, t in zip(params, target)]
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    state = tx.init(params)
    t0 = time.perf_counter()
    compiled = jitted.lower(params, state, target).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(5):
        params, state = compiled(params, state, target)
    jax.block_until_ready(params)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        params, state = compiled(params, state, target)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
    return dict(library=library, median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times),
                compile_s=compile_s, fusions=compiled.as_text().count(" fusion("), device=str(jax.devices()[0]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=("optax", "optax_like"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args.child, args.size)))
        return
    rows = []
    for r in range(args.rounds):
        order = ("optax", "optax_like") if r % 2 == 0 else ("optax_like", "optax")
        for library in order:
            out = subprocess.run([sys.executable, __file__, "--child", library, "--size", str(args.size)],
                                 capture_output=True, text=True, env=os.environ.copy())
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if not lines:
                raise SystemExit(f"{library} failed:\n{out.stderr[-2000:]}")
            rows.append(json.loads(lines[-1]))
    print(f"# train step (in-jit gradients, clip_by_global_norm, Adam): 6 x {args.size}^2 + 6 x {args.size} "
          f"float32 params on {rows[0]['device']}")
    print("| library | step ms (median) | step ms (min) | compile s | fusions |")
    print("|---|---|---|---|---|")
    for library in ("optax", "optax_like"):
        mine = [row for row in rows if row["library"] == library]
        print(f"| {library} | {statistics.median(r['median_ms'] for r in mine):.3f} | "
              f"{min(r['min_ms'] for r in mine):.3f} | {statistics.median(r['compile_s'] for r in mine):.2f} | "
              f"{mine[0]['fusions']} |")


if __name__ == "__main__":
    main()
