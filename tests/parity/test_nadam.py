"""optax_like.nadam against torch.optim.NAdam: every option, float32 and float64, state (constructor errors: tests/test_validation.py)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_converges_on_least_squares, run_parity

CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(lr=0.01),
    dict(lr=0.01, momentum_decay=6e-3),
    dict(lr=0.01, momentum_decay=0.0),
    dict(lr=0.01, momentum_decay=0.5, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, weight_decay=0.1, momentum_decay=6e-3, decoupled_weight_decay=True),
    dict(lr=0.01, decoupled_weight_decay=True),  # flag without decay: a no-op, as in torch
    dict(lr=0.01, maximize=True, weight_decay=0.1),
    dict(lr=0.01, maximize=True, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.01, betas=(0.0, 0.0)),
]


# float32 drift: torch adds NAdam's two terms to the param in two `addcdiv_` calls (two
# roundings of p per step); the chain applies their sum once. Measured worst relative error over
# 50 steps, default config: 7.2e-7 (torch itself, summing first, differs from torch by the same
# 7.18e-7), other configs 2e-7..4e-7; float64 <= 1.1e-15. Inherent to one update per step, within
# the 1e-6 tolerance, so no config is loosened.
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_nadam_matches_torch(config, parity_dtype):
    run_parity(torch.optim.NAdam, config, ol.nadam(**config), parity_dtype)


def test_nadam_with_traced_hyperparams_matches_torch(parity_dtype):
    # inject_hyperparams traces betas and momentum_decay: mu_t is then computed in the graph.
    config = dict(lr=0.01, betas=(0.9, 0.999), momentum_decay=6e-3, weight_decay=0.1)
    run_parity(torch.optim.NAdam, config, ol.inject_hyperparams(ol.nadam)(**config), parity_dtype)


def test_nadam_state_maps_to_torch_state(x64):
    # torch's mu_product is a float32 scalar even for float64 params; so is ours, bit for bit.
    config = dict(lr=0.01, momentum_decay=6e-3)
    _, state, torch_params, torch_opt = run_parity(
        torch.optim.NAdam, config, ol.nadam(**config), "float64", steps=9
    )
    inner = next(s for s in state if isinstance(s, ol.ScaleByNadamState))
    assert inner.mu_product.dtype == jnp.float32
    for i, p in enumerate(torch_params):
        torch_state = torch_opt.state[p]
        assert set(torch_state) == {"step", "mu_product", "exp_avg", "exp_avg_sq"}
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(getattr(inner, key)[i], torch_state[key].numpy(), rtol=1e-12)
        assert torch_state["mu_product"].dtype == torch.float32
        assert float(inner.mu_product[i]) == torch_state["mu_product"].item()
        assert int(inner.step[i]) == int(torch_state["step"].item()) == 9


def test_nadam_kernel_switches_are_accepted_and_ignored():
    # torch's kernel selectors change nothing here: same numbers as torch's reference path.
    config = dict(lr=0.01)
    run_parity(torch.optim.NAdam, config, ol.nadam(**config, foreach=True, capturable=True, differentiable=True), "float32", steps=10)


def test_nadam_converges_on_least_squares():
    assert_converges_on_least_squares(ol.nadam(lr=0.05))
