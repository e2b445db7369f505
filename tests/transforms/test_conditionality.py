import jax
import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_non_finite_gradient_gives_zero_update_and_keeps_inner_state():
    tx = ol.apply_if_finite(ol.adam(0.1), max_consecutive_errors=2)
    p = {"w": jnp.ones(2)}
    state = tx.init(p)
    update = jax.jit(tx.update)
    _, state = update({"w": jnp.ones(2)}, state, p)
    before = state.inner_state
    u, state = update({"w": jnp.asarray([1.0, jnp.nan])}, state, p)
    np.testing.assert_array_equal(u["w"], np.zeros(2))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.inner_state)):
        np.testing.assert_array_equal(a, b)
    assert int(state.notfinite_count) == 1 and int(state.total_notfinite) == 1 and not bool(state.last_finite)
    u, state = update({"w": jnp.ones(2)}, state, p)
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 1
    assert np.all(np.asarray(u["w"]) < 0)


def test_a_missing_gradient_keeps_that_params_state_in_both_branches():
    """With per-leaf scalars, a None gradient leaves that param's state alone in both branches
    (eager and jit), and the state's structure never changes."""
    tx = ol.apply_if_finite(ol.adam(0.1), max_consecutive_errors=2)
    p = {"a": jnp.ones(2), "b": jnp.ones(3)}
    for update in (tx.update, jax.jit(tx.update)):
        state = ol.per_leaf_scalars(tx.init(p))
        _, state = update({"a": jnp.ones(2), "b": None}, state, p)
        assert state.inner_state[0].step.tolist() == [1, 0]
        u, state = update({"a": jnp.asarray([1.0, jnp.nan]), "b": None}, state, p)
        assert state.inner_state[0].step.tolist() == [1, 0] and u["b"] is None
        _, state = update({"a": jnp.ones(2), "b": jnp.ones(3)}, state, p)
        assert state.inner_state[0].step.tolist() == [2, 1]


def test_after_max_consecutive_errors_the_update_is_applied():
    tx = ol.apply_if_finite(ol.sgd(0.1), max_consecutive_errors=1)
    p = {"w": jnp.ones(1)}
    state = tx.init(p)
    bad = {"w": jnp.asarray([jnp.inf])}
    u1, state = tx.update(bad, state, p)
    u2, state = tx.update(bad, state, p)
    assert float(u1["w"][0]) == 0.0 and np.isinf(float(u2["w"][0]))
