"""The grouped layout (optax_like.grouped) against torch: stacking leaves must not change results.

Shapes repeat so that stacks hold several members (members of one stack are distinct torch
params with their own state). Both the drop-in variant (ordinary trees, `grouped(tx, layout)`)
and the packed variant (params and grads kept stacked, `grouped(tx)`) are stepped against
torch.optim on the same gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like.core.leaf_scalars import LeafScalars
from tests.parity.harness import assert_close, make_problem, run_parity

SHAPES = ((4, 3), (5,), (4, 3), (), (5,), (4, 3))

ADAM = [
    dict(),
    dict(lr=0.01, amsgrad=True, weight_decay=0.1),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.01, maximize=True, amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True),
]
SGD = [
    dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
]
CASES = [(torch.optim.Adam, ol.adam, c) for c in ADAM] + [(torch.optim.SGD, ol.sgd, c) for c in SGD]


def layout_for(dtype, shapes=SHAPES):
    return ol.GroupedLayout([jax.ShapeDtypeStruct(s, jnp.dtype(dtype)) for s in shapes])


@pytest.mark.parametrize("torch_cls, factory, config", CASES, ids=lambda x: str(x) if isinstance(x, dict) else "")
def test_grouped_drop_in_matches_torch(torch_cls, factory, config, parity_dtype):
    layout = layout_for(parity_dtype)
    assert len(layout.groups) == 3
    tx = ol.grouped(factory(**config), layout)
    run_parity(torch_cls, config, tx, parity_dtype, shapes=SHAPES, steps=15)


@pytest.mark.parametrize("torch_cls, factory, config", [CASES[1], CASES[-1]], ids=lambda x: str(x) if isinstance(x, dict) else "")
def test_grouped_packed_matches_torch(torch_cls, factory, config, parity_dtype):
    params_np, grads_np = make_problem(parity_dtype, SHAPES, steps=15)
    torch_params = [torch.tensor(p, requires_grad=True) for p in params_np]
    torch_opt = torch_cls(torch_params, foreach=False, **config)
    layout = layout_for(parity_dtype)
    tx = ol.grouped(factory(**config))
    packed = layout.pack([jnp.asarray(p) for p in params_np])
    state = tx.init(packed)

    @jax.jit
    def step(packed, state, grads):
        updates, state = tx.update(grads, state, packed)
        return ol.apply_updates(packed, updates), state

    for t, grads in enumerate(grads_np):
        for p, g in zip(torch_params, grads):
            p.grad = torch.tensor(g)
        torch_opt.step()
        packed, state = step(packed, state, layout.pack([jnp.asarray(g) for g in grads]))
        assert_close(layout.unpack(packed), torch_params, parity_dtype, t + 1)
    # torch's per-param step counts survive the layout: one per member
    counts = state.inner["float32[4,3]" if parity_dtype == "float32" else "float64[4,3]"]
    is_counts = lambda x: isinstance(x, LeafScalars)
    steps = [node for node in jax.tree.leaves(counts, is_leaf=is_counts) if is_counts(node)]
    assert steps and all(len(s) == 1 and s[0].shape == (3,) and np.all(np.asarray(s[0]) == 15) for s in steps)


def test_grouped_adam_complex_params_match_torch(x64):
    config = dict(lr=0.01, amsgrad=True, weight_decay=0.1)
    layout = ol.GroupedLayout([jax.ShapeDtypeStruct(s, jnp.complex128) for s in SHAPES])
    run_parity(torch.optim.Adam, config, ol.grouped(ol.adam(**config), layout), "float64",
               shapes=SHAPES, steps=10, complex_params=True)

