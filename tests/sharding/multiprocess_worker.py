"""One process of tests/sharding/test_multiprocess.py (not collected: it is a script).

    python multiprocess_worker.py TASKS NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES WORKDIR

Each process gets LOCAL_DEVICES virtual CPU devices; with NUM_PROCESSES > 1 the processes join
through `jax.distributed.initialize` (coordinator on 127.0.0.1:PORT, gloo CPU collectives) and
the mesh spans every process's devices. TASKS is a comma-separated list of:

* `train`: a small MLP trained with AdamW, params replicated, state ZeRO-1 sharded over the
  global 'data' axis (optax_like.sharding.zero1_shardings), the batch split over the processes
  (`jax.make_array_from_process_local_data`). 3 steps, an orbax save of {params, opt_state}
  from every process to WORKDIR/ckpt_<NUM_PROCESSES>, 3 more steps.
* `restore`: restores WORKDIR/ckpt_2 onto this process's mesh (another topology) with
  `optax_like.sharding.abstract_state` as the target, then runs steps 3..5.
* `adapter`: the same training through `optax_like.optim.AdamW` with params as global arrays
  (w1 split over every device, the rest replicated); `state_dict()` after 3 steps (gathered to
  the host), an orbax save of the params and the state dict's tensors, 3 more steps; and a
  second optimizer resumed from the gathered state dict through an `optax_like.checkpoint`
  file, stepping beside it.
* `adapter_restore`: that orbax checkpoint restored onto this process's mesh, loaded with
  `load_state_dict`, steps 3..5.

Every process writes WORKDIR/<task>_<num_processes>_<process_id>.json: the losses and, for the
adapter, the state dict's numbers.
"""

from __future__ import annotations

import json
import os
import sys

TASK, NPROC, PID, PORT, LOCAL, WORKDIR = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={LOCAL}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

if NPROC > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{PORT}", num_processes=NPROC,
                               process_id=PID, initialization_timeout=60)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import optax_like as ol  # noqa: E402
from optax_like import sharding as osh  # noqa: E402

STEPS, SAVE_AT, BATCH = 6, 3, 16
LR, WEIGHT_DECAY = 1e-2, 1e-2


def host_params():
    rng = np.random.default_rng(0)
    return {"w1": (rng.standard_normal((8, 16)) / 3).astype(np.float32),
            "b1": np.zeros(16, np.float32),
            "w2": (rng.standard_normal((16, 4)) / 4).astype(np.float32)}


def data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((STEPS, BATCH, 8)).astype(np.float32)
    y = np.sin(x @ rng.standard_normal((8, 4)).astype(np.float32))
    return x, y


def loss_fn(params, x, y):
    return jnp.mean((jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] - y) ** 2)


def global_batch(array, sharding):
    """This process's rows of the global batch, assembled into one global array."""
    n = array.shape[0] // jax.process_count()
    local = array[jax.process_index() * n:(jax.process_index() + 1) * n]
    return jax.make_array_from_process_local_data(sharding, local, array.shape)


def functional(mesh):
    tx = ol.adamw(LR, weight_decay=WEIGHT_DECAY)
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    params = host_params()
    p_shard = jax.tree.map(lambda _: replicated, params)
    s_shard = osh.zero1_shardings(tx, params, mesh, axis="data")

    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state, loss

    step = jax.jit(step, in_shardings=(p_shard, s_shard, split, split),
                   out_shardings=(p_shard, s_shard, replicated), donate_argnums=(0, 1))
    return tx, params, p_shard, s_shard, split, step


def run_train(mesh, out):
    tx, params, p_shard, s_shard, split, step = functional(mesh)
    params = jax.device_put(params, p_shard)
    state = jax.jit(tx.init, out_shardings=s_shard)(params)
    out["state_shard_shape"] = list(state[0].exp_avg["w1"].addressable_shards[0].data.shape)
    x, y = data()
    for t in range(STEPS):
        if t == SAVE_AT:
            with ocp.StandardCheckpointer() as checkpointer:
                checkpointer.save(os.path.join(WORKDIR, f"ckpt_{NPROC}"), {"params": params, "opt_state": state})
            # optax_like.checkpoint: replicated global arrays save from any process, and load
            # onto the multi-process mesh (each process placing its shards).
            path = os.path.join(WORKDIR, f"params_{NPROC}_{PID}.safetensors")
            ol.checkpoint.save(path, params)
            loaded = ol.checkpoint.load(path, like=params, shardings=p_shard)
            zero1 = ol.checkpoint.load(path, like=params, shardings=split)
            out["checkpoint_round_trip"] = all(
                bool(jnp.array_equal(a, b)) and bool(jnp.array_equal(a, c)) and b.sharding == a.sharding and c.sharding == split
                for a, b, c in zip(jax.tree.leaves(params), jax.tree.leaves(loaded), jax.tree.leaves(zero1)))
        params, state, loss = step(params, state, global_batch(x[t], split), global_batch(y[t], split))
        out["losses"].append(float(loss))


def run_restore(mesh, out):
    tx, params, p_shard, s_shard, split, step = functional(mesh)
    target = {"params": jax.tree.map(lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s), params, p_shard),
              "opt_state": osh.abstract_state(tx, params, s_shard)}
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(os.path.join(WORKDIR, "ckpt_2"), target)
    params, state = restored["params"], restored["opt_state"]
    assert jax.tree.structure(state) == jax.tree.structure(target["opt_state"])
    assert all(a.sharding == s for a, s in zip(jax.tree.leaves(state), jax.tree.leaves(s_shard)))
    out["state_shard_shape"] = list(state[0].exp_avg["w1"].addressable_shards[0].data.shape)
    x, y = data()
    for t in range(SAVE_AT, STEPS):
        params, state, loss = step(params, state, global_batch(x[t], split), global_batch(y[t], split))
        out["losses"].append(float(loss))


def adapter_shardings(mesh):
    """w1 split by rows over every device (so over the processes too), the rest replicated."""
    replicated = NamedSharding(mesh, P())
    return {"w1": NamedSharding(mesh, P("data")), "b1": replicated, "w2": replicated}


def gather(x):
    """A global array's full value on the host (a collective: every process calls it)."""
    from jax.experimental import multihost_utils

    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def run_adapter(mesh, out):
    split = NamedSharding(mesh, P("data"))
    shardings = adapter_shardings(mesh)
    opt = ol.optim.AdamW(jax.device_put(host_params(), shardings), lr=LR, weight_decay=WEIGHT_DECAY)
    resumed = None
    x, y = data()
    for t in range(STEPS):
        if t == SAVE_AT:
            sd = opt.state_dict()
            out["state_dict_addressable"] = {f"{pid}/{k}": bool(getattr(v, "is_fully_addressable", True))
                                             for pid, entry in sd["state"].items() for k, v in entry.items()}
            host = {pid: {k: gather(v) for k, v in entry.items()} for pid, entry in sd["state"].items()}
            out["state_dict"] = {f"{pid}/{k}": v.tolist() for pid, entry in host.items() for k, v in entry.items()}
            with ocp.StandardCheckpointer() as checkpointer:
                checkpointer.save(os.path.join(WORKDIR, f"adapter_ckpt_{NPROC}"),
                                  {"params": opt.params, "state": {str(k): v for k, v in sd["state"].items()}})
            # The gathered state dict through an optax_like.checkpoint file, into a new optimizer
            # (other hyperparameters: the file's param groups replace them) over the same mesh.
            path = os.path.join(WORKDIR, f"adapter_{NPROC}_{PID}.safetensors")
            ol.checkpoint.save_state_dict(path, {"state": host, "param_groups": sd["param_groups"]})
            resumed = ol.optim.AdamW(jax.device_put(jax.tree.map(gather, opt.params), shardings), lr=0.5, weight_decay=0.0)
            resumed.load_state_dict(ol.checkpoint.load_state_dict(path))
            out["resumed_losses"] = []
        batch = (global_batch(x[t], split), global_batch(y[t], split))
        out["losses"].append(float(opt.step(loss_fn, *batch)))
        if resumed is not None:
            out["resumed_losses"].append(float(resumed.step(loss_fn, *batch)))
    out["params_sharding_kept"] = all(
        p.sharding.is_equivalent_to(s, p.ndim) for p, s in zip(jax.tree.leaves(opt.params), jax.tree.leaves(shardings)))


def run_adapter_restore(mesh, out):
    """The adapter's orbax checkpoint of the 2-process run, restored onto this mesh."""
    split = NamedSharding(mesh, P("data"))
    shardings = adapter_shardings(mesh)
    params = host_params()
    abstract = lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s)  # noqa: E731
    state = {str(pid): {"exp_avg": abstract(params[k], shardings[k]), "exp_avg_sq": abstract(params[k], shardings[k]),
                        "step": abstract(np.float32(0), NamedSharding(mesh, P()))}
             for pid, k in enumerate(sorted(params))}  # param ids follow jax.tree.leaves (sorted keys)
    target = {"params": jax.tree.map(abstract, params, shardings), "state": state}
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(os.path.join(WORKDIR, "adapter_ckpt_2"), target)
    opt = ol.optim.AdamW(restored["params"], lr=LR, weight_decay=WEIGHT_DECAY)
    sd = opt.state_dict()
    sd["state"] = {int(k): v for k, v in restored["state"].items()}
    opt.load_state_dict(sd)
    x, y = data()
    for t in range(SAVE_AT, STEPS):
        loss = opt.step(loss_fn, global_batch(x[t], split), global_batch(y[t], split))
        out["losses"].append(float(loss))


def main():
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    tasks = {"train": run_train, "restore": run_restore, "adapter": run_adapter, "adapter_restore": run_adapter_restore}
    for task in TASK.split(","):
        out = {"losses": [], "devices": jax.device_count(), "processes": jax.process_count()}
        tasks[task](mesh, out)
        with open(os.path.join(WORKDIR, f"{task}_{NPROC}_{PID}.json"), "w") as f:
            json.dump(out, f)
    if NPROC > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
