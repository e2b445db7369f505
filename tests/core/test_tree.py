import jax.numpy as jnp
import numpy as np

from optax_like.core import tree


def test_update_leaves_skips_leaves_without_update_and_counts_per_leaf():
    state = {"a": jnp.zeros(2), "b": jnp.zeros(2), "frozen": None}
    counts = tree.init_counts(state)
    assert counts.shape == (2,)
    seen = []

    def fn(u, s, c):
        seen.append(int(c))
        return u * 2, s + u

    updates = {"a": jnp.ones(2), "b": None, "frozen": None}
    new_u, new_s = tree.update_leaves(fn, updates, state, counts=counts + jnp.asarray([5, 7]))
    assert seen == [5]
    assert new_u["b"] is None and new_u["frozen"] is None
    np.testing.assert_array_equal(new_u["a"], [2, 2])
    np.testing.assert_array_equal(new_s["a"], [1, 1])
    assert new_s["b"] is state["b"]
    np.testing.assert_array_equal(tree.increment_counts(counts, updates, state), [1, 0])
    np.testing.assert_array_equal(tree.increment_counts(counts, {"a": jnp.ones(2), "b": jnp.ones(2), "frozen": None}, state), [1, 1])


def test_check_same_structure_names_the_leaf():
    import pytest

    with pytest.raises(ValueError, match=r"\['x'\]\[1\] has shape \(3,\)"):
        tree.check_same_structure({"x": [jnp.ones(2), jnp.ones(2)]}, {"x": [jnp.ones(2), jnp.ones(3)]}, "params", "grads")
    tree.check_same_structure({"x": jnp.ones(2)}, {"x": None}, "params", "grads")  # no gradient: allowed


def test_zeros_like_keeps_dtype_and_none():
    z = tree.zeros_like({"a": jnp.ones(2, jnp.bfloat16), "n": None})
    assert z["a"].dtype == jnp.bfloat16 and z["n"] is None
