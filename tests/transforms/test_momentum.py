import jax
import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_buffer_starts_at_the_first_gradient_undamped():
    tx = ol.trace(0.9, dampening=0.5)
    state = tx.init({"w": jnp.zeros(2)})
    u, state = tx.update({"w": jnp.asarray([1.0, 2.0])}, state)
    np.testing.assert_array_equal(u["w"], [1.0, 2.0])  # optax.trace would give the same only without dampening
    u, state = tx.update({"w": jnp.asarray([1.0, 1.0])}, state)
    np.testing.assert_allclose(u["w"], [0.9 * 1 + 0.5 * 1, 0.9 * 2 + 0.5 * 1])


def test_nesterov():
    tx = ol.trace(0.9, nesterov=True)
    state = tx.init({"w": jnp.zeros(1)})
    u, state = tx.update({"w": jnp.ones(1)}, state)
    np.testing.assert_allclose(u["w"], [1 + 0.9 * 1])


def test_leaf_without_gradient_keeps_its_buffer_and_starts_later_like_torch():
    tx = ol.trace(0.5)
    state = tx.init({"a": jnp.zeros(1), "b": jnp.zeros(1)})
    update = jax.jit(tx.update)
    _, state = update({"a": jnp.ones(1), "b": None}, state)
    np.testing.assert_array_equal(state.count, [1, 0])
    np.testing.assert_array_equal(state.momentum_buffer["b"], [0.0])
    u, state = update({"a": jnp.ones(1), "b": jnp.full(1, 4.0)}, state)
    np.testing.assert_array_equal(u["b"], [4.0])  # b's first gradient initialises its buffer
    np.testing.assert_array_equal(u["a"], [1.5])


def test_bfloat16_buffers_keep_their_dtype():
    tx = ol.trace(0.9)
    state = tx.init({"w": jnp.zeros(3, jnp.bfloat16)})
    _, state = jax.jit(tx.update)({"w": jnp.ones(3, jnp.bfloat16)}, state)
    assert state.momentum_buffer["w"].dtype == jnp.bfloat16
