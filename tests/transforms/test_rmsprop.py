"""Unit tests of `scale_by_rmsprop`: centered normalisation, zero-initialised momentum."""

import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_centered_first_step_by_hand():
    tx = ol.scale_by_rmsprop(alpha=0.9, eps=1e-3, centered=True)
    state = tx.init({"w": jnp.zeros(2)})
    g = np.asarray([1.0, -2.0])
    u, state = tx.update({"w": jnp.asarray(g)}, state)
    sq, avg = 0.1 * g * g, 0.1 * g
    np.testing.assert_allclose(u["w"], g / (np.sqrt(sq - avg * avg) + 1e-3), rtol=1e-5)
    np.testing.assert_allclose(state.grad_avg["w"], avg, rtol=1e-6)
    assert state.momentum_buffer["w"] is None


def test_momentum_buffer_starts_at_zero_unlike_sgd():
    tx = ol.scale_by_rmsprop(alpha=0.0, eps=0.0, momentum=0.9)
    state = tx.init({"w": jnp.zeros(1)})
    u, state = tx.update({"w": jnp.asarray([2.0])}, state)
    np.testing.assert_allclose(u["w"], [1.0])  # b_1 = 0 * 0.9 + g / |g|
    u, state = tx.update({"w": jnp.asarray([-4.0])}, state)
    np.testing.assert_allclose(u["w"], [0.9 - 1.0], rtol=1e-6)
    np.testing.assert_allclose(state.momentum_buffer["w"], [-0.1], rtol=1e-5)


def test_no_buffers_without_momentum_or_centering():
    state = ol.scale_by_rmsprop().init({"w": jnp.zeros(1)})
    assert state.grad_avg["w"] is None and state.momentum_buffer["w"] is None
