"""optax_like.adamax against torch.optim.Adamax: every option, float32 and float64, state (constructor errors: tests/test_validation.py)."""

import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_converges_on_least_squares, run_parity

CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, maximize=True),
    dict(lr=0.1, maximize=True, weight_decay=0.1),
    dict(lr=0.1, betas=(0.5, 0.9), eps=1e-3),  # eps large enough to win the max
    dict(lr=0.1, betas=(0.0, 0.0)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_adamax_matches_torch(config, parity_dtype):
    run_parity(torch.optim.Adamax, config, ol.adamax(**config), parity_dtype)


def test_adamax_with_traced_hyperparams_matches_torch(parity_dtype):
    config = dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    run_parity(torch.optim.Adamax, config, ol.inject_hyperparams(ol.adamax)(**config), parity_dtype)


def test_adamax_matches_torch_foreach_path():
    config = dict(lr=0.1, weight_decay=0.1, foreach=True)
    run_parity(torch.optim.Adamax, config, ol.adamax(**config), "float32")


def test_adamax_state_maps_to_torch_state(x64):
    config = dict(lr=0.1, weight_decay=0.1)
    _, state, torch_params, torch_opt = run_parity(
        torch.optim.Adamax, config, ol.adamax(**config), "float64", steps=7
    )
    inner = next(s for s in state if isinstance(s, ol.ScaleByAdamaxState))
    for i, p in enumerate(torch_params):
        torch_state = torch_opt.state[p]
        assert set(torch_state) == {"step", "exp_avg", "exp_inf"}
        for key in ("exp_avg", "exp_inf"):
            np.testing.assert_allclose(getattr(inner, key)[i], torch_state[key].numpy(), rtol=1e-12)
        assert int(inner.step[i]) == int(torch_state["step"].item()) == 7


def test_adamax_kernel_switches_are_accepted_and_ignored():
    # torch's kernel selectors change nothing here: same numbers as torch's reference path.
    config = dict(lr=0.1)
    run_parity(torch.optim.Adamax, config, ol.adamax(**config, foreach=True, capturable=True, differentiable=True), "float32", steps=10)


def test_adamax_converges_on_least_squares():
    assert_converges_on_least_squares(ol.adamax(lr=0.05))
