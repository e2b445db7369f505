"""Data-parallel training on 8 (virtual) devices, with replicated vs ZeRO-1 optimizer state.

    python examples/data_parallel.py            # 8 virtual CPU devices (set below)
    python examples/data_parallel.py --steps 200 --explicit

    # several processes (hosts), here 2 on this machine with 4 virtual CPU devices each:
    python examples/data_parallel.py --devices 4 --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0 &
    python examples/data_parallel.py --devices 4 --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 1

A small MLP regression model is trained with `optax_like.adamw`. The batch is split along the
mesh axis 'data'; params are replicated. Two layouts of the optimizer state are compared:

* replicated: every device holds the whole state (what `tx.init(params)` gives replicated
  params), i.e. 2 copies of the params per device for Adam;
* ZeRO-1: `optax_like.sharding.zero1_shardings` splits each state buffer along 'data', so each
  device holds 1/8 of it. The jitted step gets the state shardings as in/out_shardings and the
  params' replicated sharding as out_sharding: XLA computes each device's slice of the update
  and all-gathers the new params.

Both runs give the same losses (up to float32 reduction order); the per-device memory of the
optimizer state is printed for both.

Multi-host: with `--coordinator/--num-processes/--process-id` every process calls
`jax.distributed.initialize` (CPU collectives through gloo), the mesh spans all processes'
devices, each process feeds its own rows of every batch
(`jax.make_array_from_process_local_data`) and the code is otherwise unchanged; process 0
prints (memory figures are for its own devices). docs/multi_device.md, "Multi-host".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import sys

# The virtual device count must be set before jax is imported.
_devices = sys.argv[sys.argv.index("--devices") + 1] if "--devices" in sys.argv[:-1] else "8"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + f" --xla_force_host_platform_device_count={_devices}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optax_like as ol
from optax_like import sharding as osh


def init_mlp(key, sizes):
    params = {}
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        params[f"layer{i}"] = {
            "w": jax.random.normal(sub, (m, n), jnp.float32) / np.sqrt(m),
            "b": jnp.zeros((n,), jnp.float32),
        }
    return params


def mlp(params, x):
    layers = [params[k] for k in sorted(params)]
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def loss_fn(params, batch):
    x, y = batch
    return jnp.mean((mlp(params, x) - y) ** 2)


def make_data(n, d_in, d_out, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    w = rng.standard_normal((d_in, d_out)).astype(np.float32) / np.sqrt(d_in)
    y = np.sin(x @ w).astype(np.float32)
    return x, y


def global_batch(batch, sharding):
    """This process's rows of a batch every process can compute, as one global array (with
    one process: the whole batch)."""
    n = batch.shape[0] // jax.process_count()
    local = batch[jax.process_index() * n:(jax.process_index() + 1) * n]
    return jax.make_array_from_process_local_data(sharding, local, batch.shape)


def train(tx, params, batches, mesh, state_shardings):
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    p_shard = jax.tree.map(lambda _: replicated, params)

    def step(params, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state, loss

    step = jax.jit(
        step,
        in_shardings=(p_shard, state_shardings, (batch_sharding, batch_sharding)),
        out_shardings=(p_shard, state_shardings, replicated),
        donate_argnums=(0, 1),
    )
    params = jax.device_put(params, p_shard)
    state = jax.jit(tx.init, out_shardings=state_shardings)(params)
    state_bytes = osh.bytes_per_device(state)
    losses = []
    t0 = time.perf_counter()
    for batch in batches:
        params, state, loss = step(params, state, tuple(global_batch(b, batch_sharding) for b in batch))
        losses.append(jax.block_until_ready(loss))  # one step in flight: CPU collectives of 8 virtual devices share few cores
    losses = [float(l) for l in losses]
    return params, state, losses, state_bytes, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--explicit", action="store_true", help="use an Explicit mesh (default Auto)")
    parser.add_argument("--devices", type=int, default=8, help="virtual CPU devices of this process")
    parser.add_argument("--coordinator", help="host:port of process 0, to run several processes")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args()
    if args.coordinator:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    report = print if jax.process_index() == 0 else (lambda *a, **k: None)

    n_dev = jax.device_count()
    axis_type = AxisType.Explicit if args.explicit else AxisType.Auto
    mesh = jax.make_mesh((n_dev,), ("data",), axis_types=(axis_type,))
    sizes = [64, 512, 512, 16]
    params = jax.device_get(init_mlp(jax.random.key(0), sizes))  # host copy: each run donates its own
    x, y = make_data(args.steps * args.batch, sizes[0], sizes[-1])
    batches = [(x[i * args.batch:(i + 1) * args.batch], y[i * args.batch:(i + 1) * args.batch]) for i in range(args.steps)]
    tx = ol.adamw(1e-3, weight_decay=1e-2)

    replicated = NamedSharding(mesh, P())
    p_shard = jax.tree.map(lambda _: replicated, params)
    layouts = {
        "replicated": osh.state_shardings(tx, params, p_shard),
        "ZeRO-1": osh.zero1_shardings(tx, params, mesh, axis="data"),
    }
    n_params = sum(int(np.size(p)) for p in jax.tree.leaves(params))
    report(f"{n_dev} devices ({jax.devices()[0].platform}), mesh {dict(mesh.shape)} {axis_type.name}, "
          f"{n_params:,} params ({4 * n_params / 2**20:.2f} MiB float32), adamw, {args.steps} steps")
    results = {}
    with jax.set_mesh(mesh) if args.explicit else contextlib.nullcontext():
        for name, shardings in layouts.items():
            results[name] = train(tx, params, batches, mesh, shardings)
    report(f"{'layout':<12}{'opt state / device (MiB)':>26}{'total over devices':>20}{'final loss':>12}{'time (s)':>10}")
    for name, (_, _, losses, state_bytes, seconds) in results.items():
        per_dev = max(state_bytes.values()) / 2**20
        total = sum(state_bytes.values()) / 2**20
        report(f"{name:<12}{per_dev:>26.3f}{total:>20.3f}{losses[-1]:>12.5f}{seconds:>10.2f}")
    rep, zero = results["replicated"][2], results["ZeRO-1"][2]
    report(f"first loss {rep[0]:.5f}; max |loss difference| replicated vs ZeRO-1: "
          f"{max(abs(a - b) for a, b in zip(rep, zero)):.2e}")


if __name__ == "__main__":
    main()
