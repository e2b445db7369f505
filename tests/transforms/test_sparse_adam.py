"""sparse_adam's sparse semantics: untouched entries bit-identical, duplicates, forms, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse as jsparse

import optax_like as ol


def _step(tx):
    @jax.jit
    def step(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    return step


def test_untouched_rows_stay_bit_identical_under_jit():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((12, 3)).astype(np.float32)
    table[5] = [-0.0, 0.0, np.inf]  # signed zeros and infinities survive the -0.0 update
    # (not subnormals: XLA's CPU arithmetic flushes them to zero in any add, apply_updates' too)
    tx = ol.sparse_adam(lr=0.1)
    params = {"emb": jnp.asarray(table)}
    state = tx.init(params)
    step = _step(tx)
    touched = set()
    for t in range(5):
        ids = rng.integers(0, 4, 4)  # rows 4.. are never touched
        touched |= set(ids.tolist())
        grads = {"emb": ol.RowSparseGrad(jnp.asarray(ids, jnp.int32), jnp.asarray(rng.standard_normal((4, 3)), jnp.float32))}
        params, state = step(grads, state, params)
    assert step._cache_size() == 1
    untouched = [r for r in range(12) if r not in touched]
    new = np.asarray(params["emb"])
    assert np.array_equal(new[untouched].view(np.uint32), table[untouched].view(np.uint32))
    for buf in (state[0].exp_avg["emb"], state[0].exp_avg_sq["emb"]):
        assert np.array_equal(np.asarray(buf)[untouched].view(np.uint32), np.zeros((len(untouched), 3), np.uint32))
    assert not np.array_equal(new[sorted(touched)], table[sorted(touched)])
    assert int(state[0].step[0]) == 5


def test_duplicates_are_summed_and_forms_agree():
    params = [jnp.arange(12.0).reshape(4, 3)]
    vals = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3)), jnp.float32)
    dup = ol.RowSparseGrad(jnp.array([2, 0, 2]), vals)
    summed = ol.RowSparseGrad(jnp.array([2, 0]), jnp.stack([vals[0] + vals[2], vals[1]]))
    bcoo = jsparse.BCOO((vals, jnp.array([[2], [0], [2]])), shape=(4, 3))
    full = jsparse.BCOO.fromdense(jnp.zeros((4, 3)).at[2].set(vals[0] + vals[2]).at[0].set(vals[1]))
    tx = ol.sparse_adam(lr=0.05)
    results = []
    for g in (dup, summed, bcoo, full):
        updates, _ = tx.update([g], tx.init(params), params)
        results.append(np.asarray(updates[0]))
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-6, atol=0)
    assert np.all(results[0][[1, 3]] == 0) and np.all(results[0][[0, 2]] != 0)


def test_out_of_range_indices_are_ignored():
    params = [jnp.ones((3, 2))]
    tx = ol.sparse_adam(lr=0.1)
    g = ol.RowSparseGrad(jnp.array([1, 3, -1]), jnp.ones((3, 2)))
    updates, state = tx.update([g], tx.init(params), params)
    new = np.asarray(ol.apply_updates(params, updates)[0])
    assert np.array_equal(new[[0, 2]], np.ones((2, 2))) and np.all(new[1] < 1)
    assert np.array_equal(np.asarray(state[0].exp_avg[0])[[0, 2]], np.zeros((2, 2)))


def test_full_sparse_row_sparse_grad_with_2d_indices():
    params = [jnp.zeros((3, 4))]
    tx = ol.sparse_adam(lr=0.1)
    g = ol.RowSparseGrad(jnp.array([[0, 1], [2, 3]]), jnp.array([1.0, -1.0]))
    updates, _ = tx.update([g], tx.init(params), params)
    expected = np.zeros((3, 4), np.float32)
    expected[0, 1], expected[2, 3] = -0.1, 0.1  # first Adam step: -lr * sign(g)
    np.testing.assert_allclose(np.asarray(updates[0]), expected, rtol=1e-5)


def test_none_gradient_skips_the_leaf():
    params = {"a": jnp.ones((3, 2)), "b": jnp.ones((4,))}
    tx = ol.sparse_adam()
    state = ol.per_leaf_scalars(tx.init(params))  # a None gradient ahead
    g = {"a": ol.RowSparseGrad(jnp.array([0]), jnp.ones((1, 2))), "b": None}
    updates, state = tx.update(g, state, params)
    assert updates["b"] is None
    assert state[0].step.tolist() == [1, 0]


@pytest.mark.parametrize(
    "grad, error, match",
    [
        (ol.RowSparseGrad(jnp.array([0]), jnp.ones((1, 3))), ValueError, "values must have shape"),
        (ol.RowSparseGrad(jnp.array([0.0]), jnp.ones((1, 2))), TypeError, "integers"),
        (jsparse.BCOO.fromdense(jnp.ones((2, 2))), ValueError, "shape"),
        (jnp.ones((3, 2)), RuntimeError, "does not support dense gradients"),
    ],
)
def test_bad_gradients_are_rejected(grad, error, match):
    params = [jnp.ones((3, 2))]
    tx = ol.sparse_adam()
    with pytest.raises(error, match=match):
        tx.update([grad], tx.init(params), params)


def test_structure_mismatch_is_rejected():
    params = {"a": jnp.ones((3, 2))}
    tx = ol.sparse_adam()
    with pytest.raises(ValueError, match="structure"):
        tx.update({"b": ol.RowSparseGrad(jnp.array([0]), jnp.ones((1, 2)))}, tx.init(params), params)


def test_embedding_regression_converges():
    """Learn an embedding table from sparse lookups: loss drops by >100x."""
    rng = np.random.default_rng(0)
    vocab, dim, batch = 50, 4, 16
    target = jnp.asarray(rng.standard_normal((vocab, dim)), jnp.float32)
    params = {"emb": jnp.zeros((vocab, dim))}
    tx = ol.sparse_adam(lr=0.05)
    state = tx.init(params)

    @jax.jit
    def step(params, state, ids):
        rows = params["emb"][ids]
        loss = jnp.mean((rows - target[ids]) ** 2)
        row_grads = 2 * (rows - target[ids]) / rows.size
        updates, state = tx.update({"emb": ol.RowSparseGrad(ids, row_grads)}, state, params)
        return ol.apply_updates(params, updates), state, loss

    def full_loss(p):
        return float(jnp.mean((p["emb"] - target) ** 2))

    start = full_loss(params)
    for _ in range(600):
        params, state, _ = step(params, state, jnp.asarray(rng.integers(0, vocab, batch), jnp.int32))
    assert full_loss(params) < start / 100


def test_injected_hyperparams_keep_untouched_rows_bit_identical():
    params = [jnp.asarray(np.random.default_rng(3).standard_normal((5, 2)), jnp.float32).at[4].set(-0.0)]
    tx = ol.inject_hyperparams(ol.sparse_adam)(lr=0.1, betas=(0.8, 0.99))
    state = tx.init(params)
    g = [ol.RowSparseGrad(jnp.array([0, 0, 2]), jnp.ones((3, 2)))]
    updates, state = jax.jit(tx.update)(g, state, params)
    new = np.asarray(ol.apply_updates(params, updates)[0])
    old = np.asarray(params[0])
    assert np.array_equal(new[[1, 3, 4]].view(np.uint32), old[[1, 3, 4]].view(np.uint32))
    assert np.all(new[[0, 2]] < old[[0, 2]])
