"""Runs tests/sharding/multidevice_cases.py on 8 virtual CPU devices, in a subprocess.

XLA_FLAGS=--xla_force_host_platform_device_count=8 only takes effect if it is set before jax is
imported, and the rest of the suite must keep a single device, so the multi-device cases run
in their own `python -m pytest` process. Its report is shown when it fails.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("multidevice_cases.py")
ROOT = Path(__file__).resolve().parents[2]


def run_cases(*pytest_args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=8"])
    env["JAX_PLATFORMS"] = "cpu"  # the virtual devices are CPU devices, even on a GPU host
    env.pop("JAX_ENABLE_X64", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:cacheprovider", "-p", "no:randomly", str(CASES), *pytest_args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_multidevice_cases_on_8_virtual_cpu_devices():
    result = run_cases()
    if result.returncode != 0:
        pytest.fail(
            f"multi-device cases failed (rc={result.returncode}); rerun with\n"
            f"  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu "
            f"python -m pytest -q {CASES.relative_to(ROOT)}\n\n{result.stdout[-12000:]}\n{result.stderr[-3000:]}",
            pytrace=False,
        )
    assert " passed" in result.stdout and "skipped" not in result.stdout.split("\n")[-2], result.stdout[-2000:]
