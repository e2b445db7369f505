"""optax_like.rmsprop against torch.optim.RMSprop, every option, float32 and float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_rejects_like_torch, run_parity, split_torch_ours

# torch's optim_inputs_func_rmsprop, plus every option alone and combined.
CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(momentum=0.9),
    dict(alpha=0.5, eps=1e-3, centered=True),
    dict(lr=0.001, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.5, centered=True, maximize=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_rmsprop_matches_torch(config, parity_dtype):
    run_parity(torch.optim.RMSprop, config, ol.rmsprop(**config), parity_dtype)


def test_rmsprop_tensor_lr_matches_torch(parity_dtype):
    run_parity(torch.optim.RMSprop, dict(lr=torch.tensor(0.001), momentum=0.5),
               ol.rmsprop(lr=jnp.asarray(0.001, jnp.float32), momentum=0.5), parity_dtype)


def test_rmsprop_injected_hyperparams_match_torch(x64):
    # momentum traced: the buffer path runs even at momentum 0 (same numbers as torch's no-buffer path).
    for config in [dict(lr=0.01, weight_decay=0.1, centered=True, momentum=0.3), dict(lr=0.01, momentum=0.0)]:
        run_parity(torch.optim.RMSprop, config, ol.inject_hyperparams(ol.rmsprop)(**config), "float64")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
        (dict(lr=1e-2, momentum=-1.0), "Invalid momentum value: -1.0"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (dict(alpha=-0.5), "Invalid alpha value: -0.5"),
        (dict(lr=(torch.tensor([0.001, 0.001]), jnp.asarray([0.001, 0.001]))), "Tensor lr must be 1-element"),
    ],
)
def test_rmsprop_rejects_what_torch_rejects(kwargs, message):
    assert_rejects_like_torch(torch.optim.RMSprop, ol.rmsprop, message, *split_torch_ours(kwargs))


def test_rmsprop_fits_logistic_regression():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((128, 3)), jnp.float32)
    y = (x @ jnp.asarray([2.0, -1.0, 0.5]) > 0).astype(jnp.float32)

    def loss(p):
        logits = x @ p["w"] + p["b"]
        return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)

    tx = ol.rmsprop(lr=0.01, momentum=0.5, centered=True)
    params = {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return ol.apply_updates(params, updates), state

    first = loss(params)
    for _ in range(300):
        params, state = step(params, state)
    assert float(loss(params)) < float(first) / 5
