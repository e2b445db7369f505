"""Unit tests of `scale_by_asgd`: the decayed step, float32 eta/mu, the averaged params `ax`."""

import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like.transforms.asgd import averaged_params


def test_first_steps_by_hand():
    lr, lambd, alpha, t0 = 0.1, 0.5, 0.75, 1.0
    tx = ol.scale_by_asgd(lr, lambd, alpha, t0)
    p = np.asarray([1.0, -2.0])
    state = tx.init({"w": jnp.asarray(p)})
    np.testing.assert_array_equal(state.eta, [np.float32(lr)])
    np.testing.assert_array_equal(state.mu, [1.0])
    g = np.asarray([0.5, 1.0])
    u, state = tx.update({"w": jnp.asarray(g)}, state, {"w": jnp.asarray(p)})
    p1 = p * (1 - lambd * lr) - lr * g
    np.testing.assert_allclose(p + u["w"], p1, rtol=1e-6)
    np.testing.assert_allclose(state.ax["w"], p1, rtol=1e-6)  # mu_0 = 1: ax is a copy
    eta1 = lr / (1 + lambd * lr * 1) ** alpha
    np.testing.assert_allclose(state.eta, [eta1], rtol=1e-6)
    np.testing.assert_array_equal(state.mu, [1.0])  # 1 / max(1, 1 - t0)
    u, state = tx.update({"w": jnp.asarray(g)}, state, {"w": jnp.asarray(p1)})
    p2 = p1 * (1 - lambd * eta1) - eta1 * g
    np.testing.assert_allclose(p1 + u["w"], p2, rtol=1e-6)
    np.testing.assert_allclose(state.mu, [1.0])  # 1 / max(1, 2 - 1)
    u, state = tx.update({"w": jnp.asarray(g)}, state, {"w": jnp.asarray(p2)})
    np.testing.assert_allclose(state.mu, [0.5])  # 1 / max(1, 3 - 1), used from the next step on
    p3 = p2 + np.asarray(u["w"])
    u, state = tx.update({"w": jnp.asarray(g)}, state, {"w": jnp.asarray(p3)})
    p4 = p3 + np.asarray(u["w"])
    np.testing.assert_allclose(state.ax["w"], p3 + 0.5 * (p4 - p3), rtol=1e-6)


def test_eta_and_mu_are_float32_even_for_float64_params(x64):
    state = ol.scale_by_asgd(0.1).init({"w": jnp.zeros(2, jnp.float64)})
    assert state.eta.dtype == jnp.float32 and state.mu.dtype == jnp.float32
    assert state.ax["w"].dtype == jnp.float64


def test_needs_params():
    tx = ol.scale_by_asgd()
    state = tx.init({"w": jnp.zeros(1)})
    with pytest.raises(ValueError, match="needs the params"):
        tx.update({"w": jnp.ones(1)}, state)


def test_averaged_params_finds_the_state_inside_wrappers():
    params = {"w": jnp.ones(2), "n": None}
    tx = ol.inject_hyperparams(ol.asgd)(lr=0.1, t0=0.0)
    state = tx.init(params)
    _, state = tx.update({"w": jnp.ones(2), "n": None}, state, params)
    ax = averaged_params(state)
    assert ax["n"] is None
    np.testing.assert_allclose(ax["w"], 1 - 0.1 * (1 + 1e-4), rtol=1e-6)
    masked = ol.masked(ol.scale_by_asgd(), {"w": True, "n": False})
    assert averaged_params(masked.init(params))["n"] is None
