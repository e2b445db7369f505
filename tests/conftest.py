"""Shared fixtures. The suite runs in JAX's default float32; float64 tests opt in with `x64`."""

import jax
import pytest


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled (scoped: the rest of the suite stays float32)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["float32", "float64"])
def parity_dtype(request):
    """Parametrizes a test over float32 and (scoped) float64."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield request.param
    else:
        yield request.param


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: its sparse and small-tensor kernels are much faster
    single-threaded on a busy 2-core machine (dense += sparse: ~20 ms per call with 2 threads,
    2 us with 1). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
