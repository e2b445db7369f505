"""Shared fixtures for the per-transform contract tests (skip semantics, dtypes, jit == eager)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like.core.leaf_scalars import LeafScalars

PARAMS = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.asarray([0.5, -2.0]), "frozen": jnp.ones(2)}


def grads(seed, like=PARAMS, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 3)
    return {k: jax.random.normal(key, like[k].shape).astype(dtype) for k, key in zip(("a", "b", "frozen"), keys)}


def run(tx, params, steps, jit, skip_frozen=False):
    state = ol.per_leaf_scalars(tx.init(params)) if skip_frozen else tx.init(params)
    structure = jax.tree.structure(state)
    update = jax.jit(tx.update) if jit else tx.update
    for i in range(steps):
        g = grads(i, params, params["a"].dtype)
        if skip_frozen:
            g["frozen"] = None
        u, state = update(g, state, params)
        assert jax.tree.structure(state) == structure, "update changed the state's pytree structure"
        params = ol.apply_updates(params, u)
    if jit:
        assert update._cache_size() == 1, "the jitted update compiled more than once"
    return params, state


def assert_skips_leaf_without_gradient(tx) -> None:
    """torch's `grad is None` rule: 3 jitted steps with no gradient for PARAMS['frozen'] leave
    that param, every params-shaped state buffer of it and its per-param scalars (step, ...)
    exactly as initialised, while the other leaves step; its update is None. Then, once it has
    stepped, a missing gradient again leaves its (no longer initial) state unchanged."""
    initial = tx.init(PARAMS)
    params, state = run(tx, PARAMS, 3, jit=True, skip_frozen=True)
    np.testing.assert_array_equal(params["frozen"], PARAMS["frozen"])
    np.testing.assert_array_equal(state.step, [3, 3, 0])
    frozen_index = list(PARAMS).index("frozen")

    def assert_frozen_state_kept(new, old):
        for field in new._fields:
            leaf, start = getattr(new, field), getattr(old, field)
            if isinstance(leaf, dict) and leaf["frozen"] is not None:
                np.testing.assert_array_equal(leaf["frozen"], start["frozen"], err_msg=field)
            elif isinstance(leaf, LeafScalars):
                np.testing.assert_array_equal(leaf[frozen_index], start[frozen_index], err_msg=field)

    assert_frozen_state_kept(state, initial)
    g = grads(0)
    g["frozen"] = None
    u, _ = tx.update(g, ol.per_leaf_scalars(initial), PARAMS)
    assert u["frozen"] is None
    # The shared form init returns refuses the same gradients at trace time, naming the leaf.
    if any(isinstance(n, LeafScalars) and n.is_shared for n in jax.tree.leaves(initial, is_leaf=lambda x: isinstance(x, LeafScalars))):
        with pytest.raises(ValueError, match=r"\['frozen'\].*per_leaf_scalars"):
            jax.jit(tx.update)(g, initial, PARAMS)
    # A leaf that has stepped keeps its (no longer initial) state when its gradient goes missing.
    update = jax.jit(tx.update)
    _, stepped = update(grads(5), state, params)
    g = grads(6)
    g["frozen"] = None
    u, after = update(g, stepped, params)
    assert u["frozen"] is None
    np.testing.assert_array_equal(after.step, [5, 5, 1])
    assert_frozen_state_kept(after, stepped)


def assert_jit_equals_eager(tx, steps: int) -> None:
    """`steps` updates of `tx` (with weight decay and maximize set by the caller) on a real and a
    complex leaf give the same updates eagerly and under jit (rtol 1e-6); complex stays complex."""
    params = [jnp.linspace(-1.0, 1.0, 5), jnp.asarray([1.0 + 2.0j, -0.5j])]
    grads = [jnp.linspace(0.3, -0.2, 5), jnp.asarray([0.1 - 0.2j, 0.3 + 0.0j])]
    s_eager = s_jit = tx.init(params)
    for _ in range(steps):
        u_eager, s_eager = tx.update(grads, s_eager, params)
        u_jit, s_jit = jax.jit(tx.update)(grads, s_jit, params)
        for a, b in zip(u_eager, u_jit):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        assert u_jit[1].dtype == jnp.complex64


def assert_reduces_loss(tx: ol.GradientTransformation, loss, params, factor: float, steps: int = 300) -> None:
    """`tx` reduces `loss` by more than `factor` from `params` in `steps` jitted steps."""
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return ol.apply_updates(params, updates), state

    start = float(loss(params))
    for _ in range(steps):
        params, state = step(params, state)
    assert float(loss(params)) < start / factor, (start, float(loss(params)))
