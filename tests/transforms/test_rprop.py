"""Unit tests of `scale_by_rprop`: sign logic, step-size clamps, gradient zeroed on a sign change."""

import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_sign_logic_and_clamping_by_hand():
    tx = ol.scale_by_rprop(0.1, etas=(0.5, 1.5), step_sizes=(0.04, 0.2))
    state = tx.init({"w": jnp.zeros(3)})
    u, state = tx.update({"w": jnp.asarray([1.0, -1.0, 0.0])}, state)
    np.testing.assert_allclose(u["w"], [-0.1, 0.1, 0.0])  # first step: factor 1 (prev = 0)
    u, state = tx.update({"w": jnp.asarray([2.0, 3.0, 1.0])}, state)
    # same sign: 0.1 * 1.5; sign change: 0.1 * 0.5, no move, prev zeroed; from zero: factor 1
    np.testing.assert_allclose(state.step_size["w"], [0.15, 0.05, 0.1], rtol=1e-6)
    np.testing.assert_allclose(u["w"], [-0.15, 0.0, -0.1], rtol=1e-6)
    np.testing.assert_array_equal(state.prev["w"], [2.0, 0.0, 1.0])
    u, state = tx.update({"w": jnp.asarray([2.0, 3.0, -1.0])}, state)
    np.testing.assert_allclose(state.step_size["w"], [0.2, 0.05, 0.05], rtol=1e-6)  # 0.225 clamped to 0.2
    np.testing.assert_allclose(u["w"], [-0.2, -0.05, 0.0], rtol=1e-6)
    _, state = tx.update({"w": jnp.asarray([-2.0, -3.0, 1.0])}, state)
    np.testing.assert_allclose(state.step_size["w"], [0.1, 0.04, 0.05], rtol=1e-6)  # 0.025 clamped to 0.04


def test_learning_rate_is_only_the_initial_step_size():
    state = ol.scale_by_rprop(0.3).init({"w": jnp.zeros(2), "z": jnp.zeros(1, jnp.complex64)})
    np.testing.assert_allclose(state.step_size["w"], [0.3, 0.3])
    np.testing.assert_allclose(state.step_size["z"], [0.3 + 0.3j])
