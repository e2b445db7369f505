"""Shared fixtures for the per-transform contract tests (skip semantics, dtypes, jit == eager)."""

import jax
import jax.numpy as jnp

import optax_like as ol

PARAMS = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.asarray([0.5, -2.0]), "frozen": jnp.ones(2)}


def grads(seed, like=PARAMS, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 3)
    return {k: jax.random.normal(key, like[k].shape).astype(dtype) for k, key in zip(("a", "b", "frozen"), keys)}


def run(tx, params, steps, jit, skip_frozen=False):
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for i in range(steps):
        g = grads(i, params, params["a"].dtype)
        if skip_frozen:
            g["frozen"] = None
        u, state = update(g, state, params)
        params = ol.apply_updates(params, u)
    return params, state


def assert_skips_leaf_without_gradient(tx) -> None:
    """torch's `grad is None` rule: 3 jitted steps with no gradient for PARAMS['frozen'] leave
    that param, every params-shaped state buffer of it and its per-param scalars (step, ...)
    exactly as initialised, while the other leaves step; its update is None."""
    import numpy as np

    from optax_like.core.tree import LeafScalars

    initial = tx.init(PARAMS)
    params, state = run(tx, PARAMS, 3, jit=True, skip_frozen=True)
    np.testing.assert_array_equal(params["frozen"], PARAMS["frozen"])
    np.testing.assert_array_equal(state.step, [3, 3, 0])
    frozen_index = list(PARAMS).index("frozen")
    for field in state._fields:
        leaf, start = getattr(state, field), getattr(initial, field)
        if isinstance(leaf, dict) and leaf["frozen"] is not None:
            np.testing.assert_array_equal(leaf["frozen"], start["frozen"], err_msg=field)
        elif isinstance(leaf, LeafScalars):
            np.testing.assert_array_equal(leaf[frozen_index], start[frozen_index], err_msg=field)
    g = grads(0)
    g["frozen"] = None
    u, _ = tx.update(g, initial, PARAMS)
    assert u["frozen"] is None
