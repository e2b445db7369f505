"""optax_like.adadelta against torch.optim.Adadelta, every option, float32 and float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_rejects_like_torch, run_parity, split_torch_ours

# torch's optim_inputs_func_adadelta, plus combinations.
CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(lr=0.5, rho=0.5, eps=1e-3),
    dict(rho=1.0),
    dict(rho=0.0, eps=1e-4),
    dict(lr=2.0, rho=0.8, eps=1e-5, weight_decay=0.01, maximize=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_adadelta_matches_torch(config, parity_dtype):
    run_parity(torch.optim.Adadelta, config, ol.adadelta(**config), parity_dtype)


def test_adadelta_tensor_lr_matches_torch(parity_dtype):
    run_parity(torch.optim.Adadelta, dict(lr=torch.tensor(0.001)), ol.adadelta(lr=jnp.asarray(0.001, jnp.float32)), parity_dtype)


def test_adadelta_injected_hyperparams_match_torch(x64):
    config = dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1)
    run_parity(torch.optim.Adadelta, config, ol.inject_hyperparams(ol.adadelta)(**config), "float64")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(lr=1e-2, rho=1.1), "Invalid rho value: 1.1"),
        (dict(rho=-0.1), "Invalid rho value: -0.1"),
        (dict(eps=-1e-6), "Invalid epsilon value: -1e-06"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (dict(lr=(torch.tensor([0.001, 0.001]), jnp.asarray([0.001, 0.001]))), "Tensor lr must be 1-element"),
    ],
)
def test_adadelta_rejects_what_torch_rejects(kwargs, message):
    assert_rejects_like_torch(torch.optim.Adadelta, ol.adadelta, message, *split_torch_ours(kwargs))


def test_adadelta_fits_least_squares():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((32, 4)), jnp.float32)
    b = a @ jnp.asarray(rng.standard_normal(4), jnp.float32)
    loss = lambda p: jnp.mean((a @ p["x"] - b) ** 2)
    tx = ol.adadelta(eps=1e-4)  # torch's default lr=1.0
    params = {"x": jnp.zeros(4, jnp.float32)}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return ol.apply_updates(params, updates), state

    first = loss(params)
    for _ in range(300):
        params, state = step(params, state)
    assert float(loss(params)) < float(first) / 100
