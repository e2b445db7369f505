"""optax_like.adamw against torch.optim.AdamW: every option, float32 and float64, state (constructor errors: tests/test_validation.py)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_converges_on_least_squares, run_parity

CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(lr=0.01, weight_decay=0),
    dict(lr=0.01, weight_decay=0.5),
    dict(lr=0.01, betas=(0.8, 0.9999), eps=1e-6),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, maximize=True),
    dict(lr=0.01, maximize=True, amsgrad=True, weight_decay=0.5, betas=(0.5, 0.99)),
    dict(lr=0.01, betas=(0.0, 0.0)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_adamw_matches_torch(config, parity_dtype):
    run_parity(torch.optim.AdamW, config, ol.adamw(**config), parity_dtype)


def test_adamw_state_maps_to_torch_state(x64):
    config = dict(lr=0.01, amsgrad=True)
    _, state, torch_params, torch_opt = run_parity(
        torch.optim.AdamW, config, ol.adamw(**config), "float64", steps=7
    )
    adam_state = next(s for s in state if isinstance(s, ol.ScaleByAdamState))
    for i, p in enumerate(torch_params):
        torch_state = torch_opt.state[p]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            np.testing.assert_allclose(getattr(adam_state, key)[i], torch_state[key].numpy(), rtol=1e-12, atol=1e-300)
        assert int(adam_state.step[i]) == int(torch_state["step"].item()) == 7


def test_adamw_is_adam_with_decoupled_weight_decay():
    params = {"w": jnp.linspace(-1.0, 1.0, 6)}
    grads = {"w": jnp.linspace(0.5, -0.3, 6)}
    for kwargs in (dict(), dict(lr=0.02, weight_decay=0.3, amsgrad=True, maximize=True)):
        a = ol.adamw(**kwargs)
        b = ol.adam(**{"weight_decay": 1e-2, **kwargs}, decoupled_weight_decay=True)
        ua, _ = a.update(grads, a.init(params), params)
        ub, _ = b.update(grads, b.init(params), params)
        np.testing.assert_array_equal(ua["w"], ub["w"])


def test_adamw_kernel_switches_are_accepted_and_ignored():
    # torch's kernel selectors change nothing here: same numbers as torch's reference path.
    config = dict(lr=0.01)
    run_parity(torch.optim.AdamW, config, ol.adamw(**config, foreach=True, capturable=True, differentiable=True, fused=True), "float32", steps=10)


def test_adamw_converges_on_least_squares():
    assert_converges_on_least_squares(ol.adamw(lr=0.05, weight_decay=1e-4))
