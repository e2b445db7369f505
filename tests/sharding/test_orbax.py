"""Optimizer state pytrees through orbax.checkpoint, restored with
`optax_like.sharding.abstract_state` as the target (one process, one device: the fast check;
tests/sharding/test_multiprocess.py saves from 2 processes and restores on another topology)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like import sharding as osh

ocp = pytest.importorskip("orbax.checkpoint")

# (name, optimizer, per-param step counters): a NamedTuple chain with None leaves, both forms
# of per-param counters, a HyperparamsDict, factored buffers.
STATES = [
    ("adam_amsgrad_shared", lambda: ol.adam(1e-2, amsgrad=True), False),
    ("adam_amsgrad_per_param", lambda: ol.adam(1e-2, amsgrad=True), True),
    ("inject_sgd", lambda: ol.inject_hyperparams(ol.sgd)(lr=0.1, momentum=0.9), False),
    ("adafactor", lambda: ol.adafactor(1e-2), False),
]


def _params():
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.standard_normal((4, 6)), jnp.float32),
            "b": jnp.asarray(rng.standard_normal(6), jnp.bfloat16), "frozen": None}


def _grads(t):
    rng = np.random.default_rng(t + 1)
    return {"w": jnp.asarray(rng.standard_normal((4, 6)), jnp.float32),
            "b": jnp.asarray(rng.standard_normal(6), jnp.bfloat16), "frozen": None}


def _bits(tree):
    return [np.asarray(x).reshape(-1).view(np.uint8) for x in jax.tree.leaves(tree)]


def test_orbax_round_trip_into_abstract_state(tmp_path):
    """States of several optimizers (bfloat16 buffers included) saved in one orbax checkpoint
    and restored bit for bit into `abstract_state` targets, placed as the target says, and
    continuing identically."""
    params = _params()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    states, targets, steps = {}, {}, {}
    for key, make, per_param in STATES:
        tx = make()
        steps[key] = jax.jit(tx.update)
        state = tx.init(params)
        shardings = osh.state_shardings(tx, params, device)
        if per_param:
            state, shardings = ol.per_leaf_scalars(state), ol.per_leaf_scalars(shardings)
        for t in range(2):
            _, state = steps[key](_grads(t), state, params)
        states[key] = state
        targets[key] = osh.abstract_state(tx, params, shardings)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "states", states)
        restored = checkpointer.restore(tmp_path / "states", targets)

    for key, state in states.items():
        got = restored[key]
        assert jax.tree.structure(got) == jax.tree.structure(state), key
        assert type(got) is type(state), key
        for a, b in zip(_bits(got), _bits(state)):
            np.testing.assert_array_equal(a, b, err_msg=key)
        assert all(x.sharding == device for x in jax.tree.leaves(got)), key
        grads = _grads(5)
        for a, b in zip(_bits(steps[key](grads, got, params)), _bits(steps[key](grads, state, params))):
            np.testing.assert_array_equal(a, b, err_msg=key)
