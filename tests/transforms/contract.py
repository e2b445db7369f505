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
