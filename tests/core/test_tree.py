import jax.numpy as jnp
import numpy as np

from optax_like.core import tree


def test_update_leaves_skips_leaves_without_update_and_counts_per_leaf():
    state = {"a": jnp.zeros(2), "b": jnp.zeros(2), "frozen": None}
    counts = tree.init_counts(state)
    assert isinstance(counts, tree.LeafScalars) and len(counts) == 2
    assert all(c.shape == () and c.dtype == jnp.int32 for c in counts)
    seen = []

    def fn(u, s, c):
        seen.append(int(c))
        return u * 2, s + u

    updates = {"a": jnp.ones(2), "b": None, "frozen": None}
    shifted = counts.map(lambda c, k: c + k, tree.LeafScalars([jnp.asarray(5), jnp.asarray(7)]))
    new_u, new_s = tree.update_leaves(fn, updates, state, counts=shifted)
    assert seen == [5]
    assert new_u["b"] is None and new_u["frozen"] is None
    np.testing.assert_array_equal(new_u["a"], [2, 2])
    np.testing.assert_array_equal(new_s["a"], [1, 1])
    assert new_s["b"] is state["b"]
    np.testing.assert_array_equal(tree.increment_counts(counts, updates, state), [1, 0])
    np.testing.assert_array_equal(tree.increment_counts(counts, {"a": jnp.ones(2), "b": jnp.ones(2), "frozen": None}, state), [1, 1])


def test_counts_saturate_at_int32_max_and_are_a_pytree_of_scalars():
    import jax

    big = jnp.iinfo(jnp.int32).max
    counts = tree.LeafScalars([jnp.asarray(big - 1, jnp.int32), jnp.asarray(big, jnp.int32)])
    ref = {"a": jnp.zeros(1), "b": jnp.zeros(1)}
    once = tree.increment_counts(counts, ref, ref)
    np.testing.assert_array_equal(once, [big, big])
    np.testing.assert_array_equal(tree.next_counts(once), [big, big])
    assert all(c.dtype == jnp.int32 for c in once)
    # a pytree node: jit, tree.map and key paths see one 0-d leaf per param
    doubled = jax.jit(lambda c: jax.tree.map(lambda x: x * 2, c))(tree.init_counts(ref))
    assert isinstance(doubled, tree.LeafScalars) and doubled.tolist() == [0, 0]
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(counts)[0]]
    assert paths == ["[0]", "[1]"]
    assert tree.init_counts({"x": None}).tolist() == []


def test_check_same_structure_names_the_leaf():
    import pytest

    with pytest.raises(ValueError, match=r"\['x'\]\[1\] has shape \(3,\)"):
        tree.check_same_structure({"x": [jnp.ones(2), jnp.ones(2)]}, {"x": [jnp.ones(2), jnp.ones(3)]}, "params", "grads")
    tree.check_same_structure({"x": jnp.ones(2)}, {"x": None}, "params", "grads")  # no gradient: allowed


def test_zeros_like_keeps_dtype_and_none():
    z = tree.zeros_like({"a": jnp.ones(2, jnp.bfloat16), "n": None})
    assert z["a"].dtype == jnp.bfloat16 and z["n"] is None


def _distinct_fusions(tx, n_leaves: int) -> int:
    """Structurally distinct fused computations in the compiled (XLA:CPU) jitted, donated step
    over `n_leaves` same-shape leaves (names and metadata stripped)."""
    import re

    import jax

    import optax_like as ol

    params = [jax.ShapeDtypeStruct((16,), jnp.float32) for _ in range(n_leaves)]
    state = jax.eval_shape(tx.init, params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return ol.apply_updates(p, u), s

    text = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()
    bodies = set()
    for block in re.findall(r"^%fused\S* \(.*?^}", text, re.M | re.S):
        body = re.sub(r", metadata=\{[^}]*\}", "", block.split("\n", 1)[1])
        bodies.add(re.sub(r"(%?[A-Za-z_][\w\-]*)\.\d+", r"\1", body))
    assert bodies, "no fusions found: the HLO text format changed"
    return len(bodies)


def test_same_shape_leaves_compile_to_identical_kernels():
    """XLA:CPU compiles one kernel per distinct fusion (BENCHMARKS.md, compile time): the per-leaf
    step counters must not make same-shape leaves' kernels differ (as `step[i]` slices of one
    counter vector did), so the number of distinct fusions does not grow with the leaf count."""
    import optax_like as ol

    for tx in (ol.adam(1e-3), ol.sgd(1e-3, momentum=0.9), ol.nadam(1e-3)):
        assert _distinct_fusions(tx, 2) == _distinct_fusions(tx, 6)
