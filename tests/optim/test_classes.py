"""Every table-driven optim class whose functional factory exists, against live torch."""

import jax.numpy as jnp
import pytest
import torch

import optax_like.optim as optim
from tests.parity.harness import assert_close, make_problem

CONFIGS = {
    "AdamW": dict(lr=0.01, weight_decay=0.1),
    "ASGD": dict(lr=0.01, t0=3),
    "Rprop": dict(lr=0.01),
    "Adagrad": dict(lr=0.1, lr_decay=0.01, weight_decay=0.1),
    "Adadelta": dict(lr=0.5, rho=0.8),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
    "Adamax": dict(lr=0.01),
    "NAdam": dict(lr=0.01),
    "RAdam": dict(lr=0.01),
}


@pytest.mark.parametrize("name", [n for n in CONFIGS if hasattr(optim, n)])
def test_class_matches_torch_with_lr_edit(name):
    config = CONFIGS[name]
    params_np, grads_np = make_problem("float32", steps=12)
    tp = [torch.tensor(p, requires_grad=True) for p in params_np]
    kwargs = dict(config, foreach=False) if "foreach" in getattr(torch.optim, name).__init__.__code__.co_varnames else config
    topt = getattr(torch.optim, name)(tp, **kwargs)
    opt = getattr(optim, name)([jnp.asarray(p) for p in params_np], **config)
    for t, grads in enumerate(grads_np):
        if t == 6:
            for o in (topt, opt):
                o.param_groups[0]["lr"] *= 0.5
        for p, g in zip(tp, grads):
            p.grad = torch.tensor(g)
        topt.step()
        opt.grad = [jnp.asarray(g) for g in grads]
        opt.step()
        assert_close(opt.params, tp, "float32", t + 1, rtol=1e-5)
    theirs = topt.state_dict()["state"]
    ours = opt.state_dict()["state"]
    assert {i: set(e) for i, e in ours.items()} == {i: set(e) for i, e in theirs.items()}
