"""optax_like.rprop against torch.optim.Rprop where the generic suites do not reach (its
configurations, clamps binding included, run in tests/parity/test_optim_db.py): malformed
pairs, NaN gradients."""

import jax
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_single_param_trajectory_is_torchs

def test_rprop_rejects_malformed_pairs():
    with pytest.raises(TypeError, match="etas must be a pair"):
        ol.rprop(etas=0.5)
    with pytest.raises(TypeError, match="step_sizes must be a pair"):
        ol.rprop(step_sizes=(1e-6, 50, 3))


def test_rprop_nan_gradient_keeps_going_like_torch(x64):
    """torch.sign(nan) == 0: an element whose gradient is NaN does not move and keeps its step
    size; its NaN `prev` gives factor 1 at the next step (jnp.sign(nan) would poison it)."""
    p0 = np.array([1.0, -2.0, 0.5, 3.0])
    grads = [[1.0, 1.0, 1.0, -1.0], [np.nan, 1.0, -1.0, np.nan], [1.0, 1.0, 1.0, -1.0], [1.0, np.nan, 1.0, -1.0], [1.0, 1.0, 1.0, -1.0]]
    torch_p = torch.tensor(p0, requires_grad=True)
    torch_opt = torch.optim.Rprop([torch_p], lr=0.01, foreach=False)

    def check(state):
        (rprop_state,) = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, ol.ScaleByRpropState))
                          if isinstance(s, ol.ScaleByRpropState)]
        np.testing.assert_array_equal(np.asarray(rprop_state.step_size), torch_opt.state[torch_p]["step_size"].numpy())

    assert_single_param_trajectory_is_torchs(torch_opt, torch_p, ol.rprop(0.01), p0, grads, check)
    assert np.isfinite(torch_p.detach().numpy()).all()
