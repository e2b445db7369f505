"""optax_like.adagrad against torch.optim.Adagrad, every option, float32 and float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_rejects_like_torch, run_parity, split_torch_ours

# torch's optim_inputs_func_adagrad, plus combinations of every option.
CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(lr=0.1, lr_decay=0.05, eps=1e-3),
    dict(lr=0.1, lr_decay=0.5, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-6, maximize=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_adagrad_matches_torch(config, parity_dtype):
    run_parity(torch.optim.Adagrad, config, ol.adagrad(**config), parity_dtype)


def test_adagrad_tensor_lr_matches_torch(parity_dtype):
    # torch's "Tensor lr" config: a float32 0-dim tensor; ours a float32 jax scalar.
    run_parity(torch.optim.Adagrad, dict(lr=torch.tensor(0.001), lr_decay=0.1),
               ol.adagrad(lr=jnp.asarray(0.001, jnp.float32), lr_decay=0.1), parity_dtype)


def test_adagrad_injected_hyperparams_match_torch(x64):
    config = dict(lr=0.1, lr_decay=0.5, weight_decay=0.1, eps=1e-6)
    run_parity(torch.optim.Adagrad, config, ol.inject_hyperparams(ol.adagrad)(**config), "float64")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(lr=1e-2, lr_decay=-0.5), "Invalid lr_decay value: -0.5"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (dict(initial_accumulator_value=-1.0), "Invalid initial_accumulator_value value: -1.0"),
        (dict(eps=-1e-10), "Invalid epsilon value: -1e-10"),
        (dict(lr=(torch.tensor([0.001, 0.001]), jnp.asarray([0.001, 0.001]))), "Tensor lr must be 1-element"),
    ],
)
def test_adagrad_rejects_what_torch_rejects(kwargs, message):
    assert_rejects_like_torch(torch.optim.Adagrad, ol.adagrad, message, *split_torch_ours(kwargs))


def least_squares_loss_ratio(tx, steps):
    """Fits x in min ||A x - b||^2 / n from zero; returns final / initial loss."""
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((32, 4)), jnp.float32)
    b = a @ jnp.asarray(rng.standard_normal(4), jnp.float32)
    loss = lambda p: jnp.mean((a @ p["x"] - b) ** 2)
    params = {"x": jnp.zeros(4, jnp.float32)}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return ol.apply_updates(params, updates), state

    first = loss(params)
    for _ in range(steps):
        params, state = step(params, state)
    return float(loss(params) / first)


def test_adagrad_fits_least_squares():
    assert least_squares_loss_ratio(ol.adagrad(lr=0.5), 300) < 1e-3
