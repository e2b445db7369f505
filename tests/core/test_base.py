import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol


def test_apply_updates_keeps_each_leaf_dtype_and_passes_none():
    params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32), "frozen": None}
    updates = {"a": jnp.full(3, 1e-3, jnp.float32), "b": jnp.full(2, 0.5, jnp.float32), "frozen": None}
    out = jax.jit(ol.apply_updates)(params, updates)
    assert out["a"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32 and out["frozen"] is None
    # bf16 + f32 update is rounded once: 1 + 1e-3 rounds to 1 in bf16 (spacing 2**-7)
    np.testing.assert_array_equal(np.asarray(out["a"], np.float32), np.ones(3))
    np.testing.assert_array_equal(out["b"], np.full(2, 1.5))


def test_apply_updates_skips_leaves_without_update():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    out = ol.apply_updates(params, {"a": jnp.ones(2), "b": None})
    np.testing.assert_array_equal(out["a"], 2 * np.ones(2))
    np.testing.assert_array_equal(out["b"], np.ones(2))


def test_extra_args_are_forwarded_only_to_transforms_that_take_them():
    seen = {}

    def init(params):
        return ol.EmptyState()

    def update(updates, state, params=None, *, value=None):
        seen["value"] = value
        return updates, state

    plain = ol.scale(2.0)
    tx = ol.chain(plain, ol.GradientTransformationExtraArgs(init, update))
    updates, _ = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}), value=3.0)
    assert seen["value"] == 3.0
    np.testing.assert_array_equal(updates["w"], 2 * np.ones(2))
    wrapped = ol.with_extra_args_support(plain)
    out, _ = wrapped.update({"w": jnp.ones(2)}, plain.init(None), None, value=1.0)
    np.testing.assert_array_equal(out["w"], 2 * np.ones(2))


def test_identity_and_stateless():
    tx = ol.identity()
    u, s = tx.update({"w": jnp.ones(2)}, tx.init(None))
    np.testing.assert_array_equal(u["w"], np.ones(2))
    double = ol.stateless(lambda u, p: jax.tree.map(lambda x: 2 * x, u))
    u, _ = double.update({"w": jnp.ones(2)}, double.init(None))
    np.testing.assert_array_equal(u["w"], 2 * np.ones(2))


def test_optimizers_accept_namedtuples_lists_tuples_and_none_leaves():
    from typing import NamedTuple

    class Layer(NamedTuple):
        w: jax.Array
        b: jax.Array | None

    params = [Layer(jnp.ones((2, 2)), None), (jnp.ones(3), {"x": jnp.ones(())})]
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    for tx in (ol.sgd(0.1, momentum=0.9), ol.adam(0.1)):
        state = tx.init(params)
        updates, state = jax.jit(tx.update)(grads, state, params)
        new = ol.apply_updates(params, updates)
        assert jax.tree.structure(new, is_leaf=lambda x: x is None) == jax.tree.structure(params, is_leaf=lambda x: x is None)
        assert new[0].b is None
        assert float(new[0].w[0, 0]) < 1.0


def test_non_array_leaves_get_an_error_naming_the_leaf():
    with pytest.raises(TypeError, match=r"\['act'\] is a .*not an array"):
        ol.adam().init({"w": jnp.ones(3), "act": jnp.tanh})
    with pytest.raises(TypeError, match=r"\['n'\] has dtype int32"):
        ol.sgd().init({"w": jnp.ones(3), "n": jnp.ones(3, jnp.int32)})


def test_mismatched_updates_get_an_error_naming_the_leaf():
    tx = ol.adam()
    params = {"w": jnp.ones(3), "v": jnp.ones(2)}
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"updates leaf \['w'\] has shape \(4,\)"):
        jax.jit(tx.update)({"w": jnp.ones(4), "v": jnp.ones(2)}, state, params)
    with pytest.raises(ValueError, match=r"missing from updates: \['v'\]"):
        tx.update({"w": jnp.ones(3)}, state, params)
