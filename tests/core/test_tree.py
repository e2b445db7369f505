import jax.numpy as jnp
import numpy as np
import pytest

from optax_like.core import leaf_scalars, tree


def test_update_leaves_skips_leaves_without_update_and_counts_per_leaf():
    state = {"a": jnp.zeros(2), "b": jnp.zeros(2), "frozen": None}
    counts = leaf_scalars.init_counts(state)
    assert isinstance(counts, leaf_scalars.LeafScalars) and len(counts) == 2
    assert all(c.shape == () and c.dtype == jnp.int32 for c in counts)
    seen = []

    def fn(u, s, c):
        seen.append(int(c))
        return u * 2, s + u

    updates = {"a": jnp.ones(2), "b": None, "frozen": None}
    shifted = counts.map(lambda c, k: c + k, leaf_scalars.LeafScalars([jnp.asarray(5), jnp.asarray(7)]))
    new_u, new_s = tree.update_leaves(fn, updates, state, counts=shifted)
    assert seen == [5]
    assert new_u["b"] is None and new_u["frozen"] is None
    np.testing.assert_array_equal(new_u["a"], [2, 2])
    np.testing.assert_array_equal(new_s["a"], [1, 1])
    assert new_s["b"] is state["b"]
    per_leaf = leaf_scalars.per_leaf_scalars(counts)
    np.testing.assert_array_equal(leaf_scalars.increment_counts(per_leaf, updates, state), [1, 0])
    np.testing.assert_array_equal(leaf_scalars.increment_counts(counts, {"a": jnp.ones(2), "b": jnp.ones(2), "frozen": None}, state), [1, 1])
    with pytest.raises(leaf_scalars.NoneGradientError, match=r"\['b'\]"):
        leaf_scalars.increment_counts(counts, updates, state)


def test_check_same_structure_names_the_leaf():
    import pytest

    with pytest.raises(ValueError, match=r"\['x'\]\[1\] has shape \(3,\)"):
        tree.check_same_structure({"x": [jnp.ones(2), jnp.ones(2)]}, {"x": [jnp.ones(2), jnp.ones(3)]}, "params", "grads")
    tree.check_same_structure({"x": jnp.ones(2)}, {"x": None}, "params", "grads")  # no gradient: allowed


def test_zeros_like_keeps_dtype_and_none():
    z = tree.zeros_like({"a": jnp.ones(2, jnp.bfloat16), "n": None})
    assert z["a"].dtype == jnp.bfloat16 and z["n"] is None
