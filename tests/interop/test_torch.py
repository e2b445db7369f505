"""Checkpoints move between torch.optim and optax_like.optim and training continues identically."""

import io

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like.optim as optim
from optax_like.interop.torch import load_torch_state_dict, to_torch_state_dict
from tests.parity.harness import assert_close, make_problem


@pytest.mark.parametrize("cls, kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.02, amsgrad=True, weight_decay=0.1)),
])
def test_torch_checkpoint_continues_in_both(cls, kwargs, parity_dtype):
    n, m = 10, 15
    params_np, grads_np = make_problem(parity_dtype, steps=n + m)
    tp = [torch.tensor(p, requires_grad=True) for p in params_np]
    topt = getattr(torch.optim, cls)(tp, foreach=False, **kwargs)
    for grads in grads_np[:n]:
        for p, g in zip(tp, grads):
            p.grad = torch.tensor(g)
        topt.step()
    buffer = io.BytesIO()
    torch.save(topt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    opt = getattr(optim, cls)([jnp.asarray(p.detach().numpy()) for p in tp], lr=123.0)
    load_torch_state_dict(opt, saved)
    assert opt.param_groups[0]["lr"] == kwargs["lr"]
    for t, grads in enumerate(grads_np[n:]):
        for p, g in zip(tp, grads):
            p.grad = torch.tensor(g)
        topt.step()
        opt.grad = [jnp.asarray(g) for g in grads]
        opt.step()
        assert_close(opt.params, tp, parity_dtype, n + t + 1)

    # ... and back: torch resumes from our checkpoint.
    tp2 = [torch.tensor(np.asarray(p), requires_grad=True) for p in opt.params]
    topt2 = getattr(torch.optim, cls)(tp2, foreach=False, lr=123.0)
    topt2.load_state_dict(to_torch_state_dict(opt))
    for o, ps in ((topt, tp), (topt2, tp2)):
        for p, g in zip(ps, grads_np[0]):
            p.grad = torch.tensor(g)
        o.step()
    for a, b in zip(tp, tp2):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6 if parity_dtype == "float32" else 1e-12)
