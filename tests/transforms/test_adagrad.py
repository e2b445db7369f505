"""Unit tests of `scale_by_adagrad`: the accumulator, per-leaf lr decay, eps outside the root."""

import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_first_steps_by_hand():
    tx = ol.scale_by_adagrad(0.1, lr_decay=0.5, initial_accumulator_value=0.25, eps=1e-3)
    state = tx.init({"w": jnp.zeros(2)})
    g1, g2 = jnp.asarray([1.0, -2.0]), jnp.asarray([0.5, 0.5])
    u, state = tx.update({"w": g1}, state)
    s1 = 0.25 + np.square(g1)
    np.testing.assert_allclose(u["w"], -0.1 * g1 / (np.sqrt(s1) + 1e-3), rtol=1e-6)
    u, state = tx.update({"w": g2}, state)
    s2 = s1 + np.square(g2)
    np.testing.assert_allclose(u["w"], -(0.1 / 1.5) * g2 / (np.sqrt(s2) + 1e-3), rtol=1e-6)
    np.testing.assert_allclose(state.sum["w"], s2, rtol=1e-6)


def test_lr_decay_follows_each_leafs_own_step():
    tx = ol.scale_by_adagrad(1.0, lr_decay=1.0)
    state = ol.per_leaf_scalars(tx.init({"a": jnp.zeros(1), "b": jnp.zeros(1)}))  # None gradients ahead
    _, state = tx.update({"a": jnp.ones(1), "b": None}, state)
    u, state = tx.update({"a": jnp.ones(1), "b": jnp.ones(1)}, state)
    np.testing.assert_allclose(u["a"], [-0.5 / np.sqrt(2.0)], rtol=1e-6)  # a's 2nd step: clr = 1/2
    np.testing.assert_allclose(u["b"], [-1.0], rtol=1e-6)  # b's 1st step: clr = 1


def test_complex_accumulator_starts_at_v_plus_vj():
    state = ol.scale_by_adagrad(initial_accumulator_value=0.5).init({"z": jnp.zeros(2, jnp.complex64)})
    np.testing.assert_array_equal(state.sum["z"], [0.5 + 0.5j, 0.5 + 0.5j])
