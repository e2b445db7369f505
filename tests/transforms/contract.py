"""Shared helpers of the per-transform tests (loss reduction). Jit against eager is
tests/test_properties.py's; skip semantics, dtypes and complex params tests/test_generic.py's,
for every registry record."""

import jax

import optax_like as ol


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
