"""Unit tests of `scale_by_adadelta`: square_avg / acc_delta with eps inside both roots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from tests.transforms.contract import PARAMS, assert_skips_leaf_without_gradient, run


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


def test_leaf_without_gradient_is_skipped_with_its_state_untouched():
    assert_skips_leaf_without_gradient(ol.scale_by_adadelta(rho=0.8, eps=1e-3))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_state_keeps_the_params_dtype_and_tracks_float32(dtype):
    tx = ol.scale_by_adadelta(rho=0.8, eps=1e-3)
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
    tx = ol.scale_by_adadelta(rho=0.8, eps=1e-3)
    eager, eager_state = run(tx, PARAMS, 3, jit=False)
    jitted, jit_state = run(tx, PARAMS, 3, jit=True)
    for a, b in zip(jax.tree.leaves((eager, eager_state)), jax.tree.leaves((jitted, jit_state))):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
