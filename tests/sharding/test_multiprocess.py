"""A real multi-process run: 2 processes x 2 CPU devices joined by `jax.distributed`, against a
1-process 4-device run, then restored into 1 process with 2 devices (another topology).

The processes run tests/sharding/multiprocess_worker.py (see its docstring for what each task
does). They talk over 127.0.0.1 only (the coordinator on a free port, gloo CPU collectives),
and every process is killed after a bounded time. The recipe is docs/multi_device.md's
"Multi-host" section.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("orbax.checkpoint")  # an optional (test) dependency; the workers use it

WORKER = Path(__file__).with_name("multiprocess_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180  # seconds per launch (each takes ~5-15 s on a busy 2-core machine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tasks: str, num_processes: int, local_devices: int, workdir: Path) -> list[dict]:
    """Runs the worker in `num_processes` processes; returns each task's results per process."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    env["JAX_PLATFORMS"] = "cpu"
    port = free_port() if num_processes > 1 else 0
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), tasks, str(num_processes), str(i), str(port), str(local_devices), str(workdir)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(num_processes)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        tails = "\n".join(f"--- process {i} ---\n{log[-4000:]}" for i, log in enumerate(logs))
        pytest.fail(f"worker processes {failed} failed or timed out ({tasks}, {num_processes} processes)\n{tails}", pytrace=False)
    return {task: [json.loads((workdir / f"{task}_{num_processes}_{i}.json").read_text()) for i in range(num_processes)]
            for task in tasks.split(",")}


@pytest.mark.slow
def test_two_processes_match_one_and_restore_on_another_topology(tmp_path):
    """Functional AdamW with ZeRO-1 state and the stateful adapter (params as global arrays):
    2 processes x 2 devices give one process x 4 devices' losses; the orbax checkpoints written
    by both processes restore into 1 process x 2 devices and continue the same trajectory."""
    multi = launch("train,adapter", 2, 2, tmp_path)
    single = launch("train,adapter", 1, 4, tmp_path)
    restored = launch("restore,adapter_restore", 1, 2, tmp_path)

    for task in ("train", "adapter"):
        runs = multi[task]
        assert [r["processes"] for r in runs] == [2, 2] and runs[0]["devices"] == 4
        assert runs[0]["losses"] == runs[1]["losses"]  # every process sees the same global loss
        reference = single[task][0]
        assert reference["processes"] == 1 and reference["devices"] == 4
        # Same program, same 4 devices; only the all-reduce of the loss and gradients crosses a
        # process boundary (gloo), so its summation order may differ: float32 ulps.
        np.testing.assert_allclose(runs[0]["losses"], reference["losses"], rtol=2e-6)
        assert runs[0]["losses"][-1] < runs[0]["losses"][0]

    # optax_like.checkpoint saved the replicated params from each process and loaded them
    # onto the global mesh, replicated and split.
    assert all(r["checkpoint_round_trip"] for r in multi["train"] + single["train"])
    # ZeRO-1: each of the 4 devices held 1/4 of the (8, 16) Adam buffers; after restoring onto
    # 2 devices each holds 1/2.
    assert multi["train"][0]["state_shard_shape"] == [2, 16]
    assert restored["restore"][0]["state_shard_shape"] == [4, 16]
    np.testing.assert_allclose(restored["restore"][0]["losses"], multi["train"][0]["losses"][3:], rtol=2e-6)

    adapter = multi["adapter"][0]
    assert adapter["params_sharding_kept"]
    # state_dict() holds global arrays spanning both processes (torch's full per-param values).
    assert not any(adapter["state_dict_addressable"].values())
    reference_sd = single["adapter"][0]["state_dict"]
    assert list(adapter["state_dict"]) == list(reference_sd) == [
        f"{i}/{k}" for i in range(3) for k in ("exp_avg", "exp_avg_sq", "step")]
    for key, value in adapter["state_dict"].items():
        np.testing.assert_allclose(value, reference_sd[key], rtol=2e-6, atol=1e-9, err_msg=key)
    np.testing.assert_allclose(restored["adapter_restore"][0]["losses"], adapter["losses"][3:], rtol=2e-6)
    # The gathered state dict, saved with optax_like.checkpoint in each process and loaded into a
    # new optimizer over the 2-process mesh, continues exactly.
    for run in multi["adapter"] + single["adapter"]:
        assert run["resumed_losses"] == run["losses"][3:]
