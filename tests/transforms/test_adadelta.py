"""Unit tests of `scale_by_adadelta`: square_avg / acc_delta with eps inside both roots."""

import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_first_steps_by_hand():
    rho, eps = 0.8, 1e-3
    tx = ol.scale_by_adadelta(rho, eps)
    state = tx.init({"w": jnp.zeros(2)})
    g = np.asarray([1.0, -2.0])
    u, state = tx.update({"w": jnp.asarray(g)}, state)
    v = (1 - rho) * g * g
    delta = np.sqrt(eps) / np.sqrt(v + eps) * g
    np.testing.assert_allclose(u["w"], delta, rtol=1e-6)
    np.testing.assert_allclose(state.acc_delta["w"], (1 - rho) * delta * delta, rtol=1e-6)
    u, state = tx.update({"w": jnp.asarray(g)}, state)
    v2 = rho * v + (1 - rho) * g * g
    np.testing.assert_allclose(u["w"], np.sqrt((1 - rho) * delta * delta + eps) / np.sqrt(v2 + eps) * g, rtol=1e-6)
