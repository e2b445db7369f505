"""Every registry optimizer's adapter class against its reference, with an lr edit midway.

Each record with dense gradients and a plain `step()` (not SparseAdam's row-sparse gradients,
not LBFGS's closure) runs its `example` configuration for 12 float32 steps; both halve
`param_groups[0]["lr"]` after step 6; params within `rtol32` (default 1e-5) after every step and
the same state keys at the end."""

import inspect

import jax.numpy as jnp
import pytest
import torch

from optax_like import registry
from tests.parity.harness import assert_close, make_problem

RECORDS = [info for info in registry.OPTIMIZERS.values() if info.layout != "sparse" and not info.closure]


@pytest.mark.parametrize("info", [pytest.param(info, id=info.cls, marks=(pytest.mark.slow,) if info.slow else ())
                                  for info in RECORDS])  # a record marked `slow` (registry): under `slow`
def test_class_matches_reference_with_lr_edit(info):
    params_np, grads_np = make_problem("float32", shapes=info.shapes, steps=12)
    tp = [torch.tensor(p, requires_grad=True) for p in params_np]
    reference = info.reference_class()
    foreach = dict(foreach=False) if "foreach" in inspect.signature(reference).parameters else {}
    topt = info.new_reference(tp, **info.example, **foreach)
    opt = info.new_adapter([jnp.asarray(p) for p in params_np], **info.example)
    for t, grads in enumerate(grads_np):
        if t == 6:
            for o in (topt, opt):
                o.param_groups[0]["lr"] *= 0.5
        for p, g in zip(tp, grads):
            p.grad = torch.tensor(g)
        topt.step()
        opt.grad = [jnp.asarray(g) for g in grads]
        opt.step()
        assert_close(opt.params, tp, "float32", t + 1, rtol=info.rtol32 or 1e-5)
    theirs = topt.state_dict()["state"]
    ours = opt.state_dict()["state"]
    assert {i: set(e) for i, e in ours.items()} == {i: set(e) for i, e in theirs.items()}
