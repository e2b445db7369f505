"""Unit tests of `scale_by_adagrad`: the accumulator, per-leaf lr decay, eps outside the root."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from tests.transforms.contract import PARAMS, assert_skips_leaf_without_gradient, run


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


def test_leaf_without_gradient_is_skipped_with_its_state_untouched():
    assert_skips_leaf_without_gradient(ol.scale_by_adagrad(0.1, lr_decay=0.5, initial_accumulator_value=0.1))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_state_keeps_the_params_dtype_and_tracks_float32(dtype):
    tx = ol.scale_by_adagrad(0.1, lr_decay=0.5, initial_accumulator_value=0.1)
    low = jax.tree.map(lambda p: p.astype(dtype), PARAMS)
    params, state = run(tx, low, 4, jit=True)
    for field in state._fields:
        leaf = getattr(state, field)
        if isinstance(leaf, dict):
            assert all(x is None or x.dtype == dtype for x in leaf.values()), field
    assert all(p.dtype == dtype for p in jax.tree.leaves(params))
    # A second jitted update function: `run` checks that its own compiled once.
    fresh = ol.GradientTransformation(tx.init, lambda *args: tx.update(*args))
    reference, _ = run(fresh, jax.tree.map(lambda p: p.astype(dtype).astype(jnp.float32), PARAMS), 4, jit=True)
    for k in PARAMS:
        np.testing.assert_allclose(np.asarray(params[k], np.float32), reference[k], rtol=0.05, atol=0.05)


def test_jit_matches_eager():
    tx = ol.scale_by_adagrad(0.1, lr_decay=0.5, initial_accumulator_value=0.1)
    eager, eager_state = run(tx, PARAMS, 3, jit=False)
    jitted, jit_state = run(tx, PARAMS, 3, jit=True)
    for a, b in zip(jax.tree.leaves((eager, eager_state)), jax.tree.leaves((jitted, jit_state))):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
