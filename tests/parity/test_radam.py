"""optax_like.radam against torch.optim.RAdam: every option, float32 and float64, state (constructor errors: tests/test_validation.py)."""

import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like.transforms.radam import radam_first_rectified_step
from tests.parity.harness import assert_converges_on_least_squares, run_parity

CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(lr=0.01),
    dict(lr=0.01, eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.01, decoupled_weight_decay=True),  # flag without decay: a no-op, as in torch
    dict(lr=0.01, maximize=True),
    dict(lr=0.01, maximize=True, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.01, betas=(0.8, 0.7)),  # rho_inf = 5.67: rectified from t = 10
    dict(lr=0.01, betas=(0.9, 0.6)),  # rho_inf = 4: never rectified
    dict(lr=0.01, betas=(0.0, 0.0)),  # rho_inf = 1: never rectified
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_radam_matches_torch(config, parity_dtype):
    run_parity(torch.optim.RAdam, config, ol.radam(**config), parity_dtype)


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.8, 0.7)], ids=str)
def test_radam_with_traced_betas_matches_torch(betas, parity_dtype):
    # inject_hyperparams traces beta2: rho_t and the rho_t > 5 switch are computed in the graph.
    config = dict(lr=0.01, betas=betas, weight_decay=0.1)
    run_parity(torch.optim.RAdam, config, ol.inject_hyperparams(ol.radam)(**config), parity_dtype)


@pytest.mark.parametrize("beta2", [0.999, 0.9999, 0.99, 0.9, 0.75, 0.7, 2 / 3, 0.5, 0.0])
def test_radam_switch_step_is_torchs(beta2):
    def torch_rho(step):
        rho_inf = 2 / (1 - beta2) - 1
        return rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)

    expected = next((t for t in range(1, 10_000) if torch_rho(float(t)) > 5), None)
    assert radam_first_rectified_step(beta2) == expected


def test_radam_state_maps_to_torch_state(x64):
    config = dict(lr=0.01)
    _, state, torch_params, torch_opt = run_parity(
        torch.optim.RAdam, config, ol.radam(**config), "float64", steps=7
    )
    inner = next(s for s in state if isinstance(s, ol.ScaleByRadamState))
    for i, p in enumerate(torch_params):
        torch_state = torch_opt.state[p]
        assert set(torch_state) == {"step", "exp_avg", "exp_avg_sq"}
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(getattr(inner, key)[i], torch_state[key].numpy(), rtol=1e-12)
        assert int(inner.step[i]) == int(torch_state["step"].item()) == 7


def test_radam_kernel_switches_are_accepted_and_ignored():
    # torch's kernel selectors change nothing here: same numbers as torch's reference path.
    config = dict(lr=0.01)
    run_parity(torch.optim.RAdam, config, ol.radam(**config, foreach=True, capturable=True, differentiable=True), "float32", steps=10)


def test_radam_converges_on_least_squares():
    assert_converges_on_least_squares(ol.radam(lr=0.05))
