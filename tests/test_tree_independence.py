"""A leaf's update does not depend on the other leaves of its tree, bit for bit.

Every registry record's configurations (those of tests/parity/test_optim_db.py: torch's optimizer
database for a torch reference, the record's example and variants otherwise) step a param `a` three times with `jax.jit(update)` + `apply_updates`, once alone in its tree
and once beside a param of the same shape and one of another shape (with the per-param step
counters stored shared, the default, and apart: `per_leaf_scalars`). The params and state
buffers of `a` must be the same bits in every run.

XLA rewrites `x / broadcast(s)` into `x * broadcast(1 / s)` (and `sqrt(v) / sqrt(s)` into
`sqrt(v) * rsqrt(s)`) when the step scalar `s` has a single use: in a tree of one leaf, with
per-leaf counters, or for the one leaf of a dtype. Before such scalars got a second use
(`per_param_update(step_scalars=...)`), Adam's first step on a lone float32 leaf of 200,000
elements differed from the same leaf in a two-leaf tree in 0.34% of its elements (21 of torch's configurations failed this test).
torch's result for a param never depends on its neighbours (its loops are per param), so ours
must not either. (A record's `coupling` arguments, by which the reference itself couples its
params, timm Lamb's one gradient clip over all of them, take their uncoupled values here.)

The same holds for the adapter (`optax_like.optim.<Class>`, whose hyperparameters are traced
scalars): a param alone in the optimizer and the same param beside two others. The default run
takes each record's first configuration; `slow` runs all of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like import registry
from tests.parity import test_optim_db as db

SHAPE, OTHER = (6, 5), (4, 7)  # 2-D: Muon takes matrices only
STEPS = 3
# A closure-driven optimizer (LBFGS couples its params through one line search) and sparse
# gradients (SparseAdam: tested with dense-shaped params in its own suite) are out of scope.
# (every case of a record marked `slow` in the registry runs under `slow`)
CASES = [pytest.param(info, desc, id=f"{info.name}-{desc}", marks=() if i == 0 and not info.slow else (pytest.mark.slow,))
         for info in registry.OPTIMIZERS.values() if not info.closure and info.layout != "sparse"
         for i, (desc, _) in enumerate(db._configs(info.cls))]


def _run(factory, kwargs, params, grads, per_leaf=False):
    tx = factory(**kwargs)
    state = tx.init(params)
    if per_leaf:  # each leaf's step counters stored apart (`per_leaf_scalars`)
        state = ol.per_leaf_scalars(state)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    history = []
    for g in grads:
        params, state = step(params, state, g)
        history.append((params, state))
    return history


def _buffers_of(state, key):
    """The buffers of `state` that belong to param `key` (arrays under a dict entry `key`; not
    the 0-d step counters, which only per-leaf storage files under the param)."""
    found = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if np.ndim(leaf) and any(isinstance(k, jax.tree_util.DictKey) and k.key == key for k in path):
            found.append((jax.tree_util.keystr(path), np.asarray(leaf)))
    return found


@pytest.mark.parametrize("info,desc", CASES)
def test_a_leaf_alone_gets_the_bits_it_gets_in_a_tree(info, desc):
    # a record's `coupling` arguments (timm Lamb's one clip over every gradient) at their uncoupled value
    kwargs = {**db._our_kwargs(db._kwargs(info.cls, desc)), **info.coupling}
    rng = np.random.default_rng(0)
    a = rng.standard_normal(SHAPE).astype(np.float32)
    b = rng.standard_normal(SHAPE).astype(np.float32)
    c = rng.standard_normal(OTHER).astype(np.float32)
    grads = [{k: jnp.asarray(rng.standard_normal(np.shape(v)).astype(np.float32)) for k, v in
              dict(a=a, b=b, c=c).items()} for _ in range(STEPS)]
    alone = _run(info.factory, kwargs, {"a": jnp.asarray(a)}, [{"a": g["a"]} for g in grads])
    tree = {"a": jnp.asarray(a), "b": jnp.asarray(b), "c": jnp.asarray(c)}
    for per_leaf in (False, True):
        beside = _run(info.factory, kwargs, tree, grads, per_leaf)
        for t, ((p1, s1), (p2, s2)) in enumerate(zip(alone, beside)):
            where = f"step {t + 1}, per-leaf counters: {per_leaf}"
            np.testing.assert_array_equal(np.asarray(p1["a"]), np.asarray(p2["a"]), err_msg=f"params, {where}")
            for (path1, x1), (path2, x2) in zip(_buffers_of(s1, "a"), _buffers_of(s2, "a"), strict=True):
                assert path1 == path2
                np.testing.assert_array_equal(x1, x2, err_msg=f"state {path1}, {where}")


def _class_run(info, kwargs, params, grads):
    opt = info.new_adapter(params, **kwargs)
    history = []
    for g in grads:
        opt.zero_grad()
        opt.backward(g)
        opt.step()
        history.append([np.asarray(p) for p in opt.params])
    return history


@pytest.mark.parametrize("info,desc", CASES)
def test_adapter_a_param_alone_gets_the_bits_it_gets_beside_others(info, desc):
    """The adapter's path: hyperparameters travel as traced scalars (`optax_like.optim`)."""
    kwargs = {**db._our_kwargs(db._kwargs(info.cls, desc)), **info.coupling}
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in (SHAPE, SHAPE, OTHER)]
    grads = [[jnp.asarray(rng.standard_normal(np.shape(p)).astype(np.float32)) for p in params] for _ in range(STEPS)]
    alone = _class_run(info, kwargs, [jnp.asarray(params[0])], [g[:1] for g in grads])
    beside = _class_run(info, kwargs, [jnp.asarray(p) for p in params], grads)
    for t, (one, many) in enumerate(zip(alone, beside)):
        np.testing.assert_array_equal(one[0], many[0], err_msg=f"step {t + 1}")
