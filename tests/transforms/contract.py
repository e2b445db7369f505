"""Shared fixtures for the per-transform tests (jit == eager, loss reduction); skip semantics, dtypes and complex params are tests/test_generic.py's, for every registry record."""

import jax
import jax.numpy as jnp
import numpy as np

import optax_like as ol

PARAMS = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.asarray([0.5, -2.0]), "frozen": jnp.ones(2)}


def grads(seed, like=PARAMS, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 3)
    return {k: jax.random.normal(key, like[k].shape).astype(dtype) for k, key in zip(("a", "b", "frozen"), keys)}


def run(tx, params, steps, jit):
    state = tx.init(params)
    structure = jax.tree.structure(state)
    update = jax.jit(tx.update) if jit else tx.update
    for i in range(steps):
        g = grads(i, params, params["a"].dtype)
        u, state = update(g, state, params)
        assert jax.tree.structure(state) == structure, "update changed the state's pytree structure"
        params = ol.apply_updates(params, u)
    if jit:
        assert update._cache_size() == 1, "the jitted update compiled more than once"
    return params, state


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
