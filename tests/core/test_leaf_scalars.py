import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_like.core import leaf_scalars


def test_counts_saturate_at_int32_max_and_are_a_pytree_of_scalars():
    import jax

    big = jnp.iinfo(jnp.int32).max
    counts = leaf_scalars.LeafScalars([jnp.asarray(big - 1, jnp.int32), jnp.asarray(big, jnp.int32)])
    ref = {"a": jnp.zeros(1), "b": jnp.zeros(1)}
    once = leaf_scalars.increment_counts(counts, ref, ref)
    np.testing.assert_array_equal(once, [big, big])
    np.testing.assert_array_equal(leaf_scalars.next_counts(once), [big, big])
    assert all(c.dtype == jnp.int32 for c in once)
    # a pytree node: jit, tree.map and key paths see one 0-d leaf per param
    doubled = jax.jit(lambda c: jax.tree.map(lambda x: x * 2, c))(leaf_scalars.init_counts(ref))
    assert isinstance(doubled, leaf_scalars.LeafScalars) and doubled.tolist() == [0, 0]
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(counts)[0]]
    assert paths == ["[0]", "[1]"]
    assert leaf_scalars.init_counts({"x": None}).tolist() == []


def _compiled_step_text(tx, n_leaves: int) -> str:
    """The compiled (XLA:CPU) HLO of the jitted, donated step over `n_leaves` same-shape leaves."""
    import optax_like as ol

    params = [jax.ShapeDtypeStruct((16,), jnp.float32) for _ in range(n_leaves)]
    state = jax.eval_shape(tx.init, params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return ol.apply_updates(p, u), s

    return jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()


def _distinct_fusions(tx, n_leaves: int) -> int:
    """Structurally distinct fused computations in the compiled step (names and metadata stripped)."""
    import re

    text = _compiled_step_text(tx, n_leaves)
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


def test_counters_keep_their_form_shared_refuses_a_partial_step_per_leaf_counts_each_leaf():
    ref = {"a": jnp.zeros(2), "b": jnp.zeros(3), "c": jnp.zeros(1), "frozen": None}
    counts = leaf_scalars.init_counts(ref)
    assert counts.is_shared and len(counts) == 3 and len(jax.tree.leaves(counts)) == 1
    full = {"a": jnp.ones(2), "b": jnp.ones(3), "c": jnp.ones(1), "frozen": None}
    once = leaf_scalars.increment_counts(counts, full, ref)
    assert once.is_shared and once.tolist() == [1, 1, 1]
    none = {"a": None, "b": None, "c": None, "frozen": None}
    assert leaf_scalars.increment_counts(once, none, ref) is once
    partial = {"a": jnp.ones(2), "b": None, "c": jnp.ones(1), "frozen": None}
    # the shared form cannot express unequal counts: refused at trace time, naming the leaf
    with pytest.raises(leaf_scalars.NoneGradientError, match=r"leaf \['b'\] is None.*per_leaf_scalars"):
        leaf_scalars.increment_counts(once, partial, ref)
    with pytest.raises(leaf_scalars.NoneGradientError):
        jax.jit(lambda c: leaf_scalars.increment_counts(c, partial, ref))(once)
    split = leaf_scalars.increment_counts(leaf_scalars.per_leaf_scalars(once), partial, ref)
    assert not split.is_shared and split.tolist() == [2, 1, 2]
    assert len(jax.tree.leaves(split)) == 3
    # a per-leaf node keeps its form whatever the gradients: the structure never changes
    assert jax.tree.structure(leaf_scalars.increment_counts(split, full, ref)) == jax.tree.structure(split)
    assert leaf_scalars.increment_counts(split, full, ref).tolist() == [3, 2, 3]
    # map: shared when every operand is shared, else per leaf
    assert once.map(lambda x, y: x + y, once).is_shared
    mixed = once.map(lambda x, y: x + y, split)
    assert not mixed.is_shared and mixed.tolist() == [3, 2, 3]
    # reads like a vector of n values in both forms
    assert [int(x) for x in once] == [1, 1, 1] and int(once[-1]) == 1 and once[1:].tolist() == [1, 1]
    with pytest.raises(IndexError):
        once[3]
    # pytree: the form is structure
    assert jax.tree.structure(once) != jax.tree.structure(split)
    # splitting a shared node gives distinct buffers (donatable state)
    split_eager = leaf_scalars.increment_counts(leaf_scalars.per_leaf_scalars(leaf_scalars.init_counts(ref)), partial, ref)
    buffers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(split_eager)]
    assert len(set(buffers)) == len(buffers) == 3
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(once)[0]]
    assert paths == ["[0]"]


def test_leaf_scalars_like_splits_and_merges_to_the_reference_form():
    ref = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    shared = leaf_scalars.init_counts(ref)
    split = leaf_scalars.increment_counts(leaf_scalars.per_leaf_scalars(shared), {"a": jnp.ones(2), "b": None}, ref)
    as_split = leaf_scalars.leaf_scalars_like({"s": shared}, {"s": split})["s"]
    assert not as_split.is_shared and as_split.tolist() == [0, 0]
    assert leaf_scalars.leaf_scalars_like({"s": split}, {"s": split})["s"] is split
    # merging: only entries that are one object (or equal non-arrays, e.g. shardings)
    merged = leaf_scalars.leaf_scalars_like(leaf_scalars.LeafScalars(["x", "x"]), shared)
    assert merged.is_shared and merged[1] == "x"
    with pytest.raises(ValueError, match="cannot merge"):
        leaf_scalars.leaf_scalars_like(split, shared)


def test_per_leaf_scalars_splits_every_shared_node_into_fresh_buffers():
    import optax_like as ol

    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    state = ol.nadam(1e-3).init(params)
    split = ol.per_leaf_scalars(state)
    nodes = [n for n in jax.tree.leaves(split, is_leaf=leaf_scalars.is_leaf_scalars) if isinstance(n, leaf_scalars.LeafScalars)]
    assert len(nodes) == 2 and not any(n.is_shared for n in nodes)
    buffers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(split)]
    assert len(set(buffers)) == len(buffers)  # donatable: no two state leaves share a buffer
    for a, b in zip(jax.tree.leaves(jax.tree.map(np.asarray, state, is_leaf=leaf_scalars.is_leaf_scalars)),
                    jax.tree.leaves(jax.tree.map(np.asarray, split, is_leaf=leaf_scalars.is_leaf_scalars))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["adam", "nadam", "asgd", "sgd"])
def test_scan_over_steps_with_a_missing_gradient_starts_from_per_leaf_scalars(name):
    """Steps leaving a gradient None need per-leaf counters, chosen at init: a `lax.scan` from
    `per_leaf_scalars(init)` matches eager steps; from the shared init it fails at trace time
    with an error naming the leaf and the fix (not jax's carry-structure error)."""
    import optax_like as ol

    tx = {"adam": ol.adam(1e-2), "nadam": ol.nadam(1e-2), "asgd": ol.asgd(1e-2),
          "sgd": ol.sgd(1e-2, momentum=0.9)}[name]
    params = {"a": jnp.ones(3), "b": jnp.full(2, 2.0)}

    def step(carry, g):
        p, s = carry
        u, s = tx.update({"a": g, "b": None}, s, p)
        return (ol.apply_updates(p, u), s), None

    grads = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
    (p_scan, s_scan), _ = jax.lax.scan(step, (params, ol.per_leaf_scalars(tx.init(params))), grads)
    p, s = params, ol.per_leaf_scalars(tx.init(params))
    for g in grads:
        (p, s), _ = step((p, s), g)
    for a, b in zip(jax.tree.leaves((p_scan, s_scan)), jax.tree.leaves((p, s))):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\['b'\].*per_leaf_scalars"):
        jax.lax.scan(step, (params, tx.init(params)), grads)


def _scalar_ops(tx, n_leaves: int) -> int:
    """Instructions producing a 0-d value in the compiled step's entry computation (kernels for
    counters, bias corrections, ...; parameters and the output tuple excluded)."""
    import re

    text = _compiled_step_text(tx, n_leaves)
    entry = text[text.index("\nENTRY"):]
    return len(re.findall(r"^\s+%\S+ = [a-z0-9]+\[\]\S* (?!parameter\()", entry, re.M))


@pytest.mark.parametrize("name", ["adam", "sgd", "nadam", "radam", "asgd", "adagrad"])
def test_scalar_work_is_done_once_not_per_leaf(name):
    """torch keeps a step per param; while every param steps they are equal and stored shared,
    so the step's scalar kernels (counter increment, bias corrections, NAdam's mu products,
    ASGD's eta/mu, Adagrad's lr decay) do not grow with the leaf count (optax's cost profile;
    BENCHMARKS.md "Shared step counters")."""
    import optax_like as ol

    tx = {"adam": ol.adam(1e-3), "sgd": ol.sgd(1e-3, momentum=0.9), "nadam": ol.nadam(1e-3),
          "radam": ol.radam(1e-3), "asgd": ol.asgd(1e-3), "adagrad": ol.adagrad(1e-2, lr_decay=1e-3)}[name]
    assert _scalar_ops(tx, 2) == _scalar_ops(tx, 8) > 0
