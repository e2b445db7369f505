"""Checkpoints move between torch.optim and optax_like.optim and training continues identically."""

import io

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like.optim as optim
from optax_like.interop.torch import from_torch_state_dict, load_torch_state_dict, to_torch_state_dict
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


def test_bfloat16_tensors_convert_bit_for_bit_both_ways():
    """from_torch_state_dict keeps bf16/f16 buffers in their dtype (bits unchanged, copies) and
    turns 0-d hyperparameter tensors into numbers; to_torch_state_dict gives them back as torch
    tensors of the same dtype, `step` as a 0-d float32 tensor."""
    values = torch.tensor([1.0, -2.5, 3.140625, 1e-3], dtype=torch.bfloat16)
    sd = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": values.clone(),
                        "exp_avg_sq": values.to(torch.float16)}},
          "param_groups": [{"lr": torch.tensor(0.01), "betas": (0.9, 0.999), "params": [0]}]}
    ours = from_torch_state_dict(sd)
    entry = ours["state"][0]
    assert entry["exp_avg"].dtype == jnp.bfloat16 and entry["exp_avg_sq"].dtype == np.float16
    assert np.array_equal(entry["exp_avg"].view(np.int16), values.view(torch.int16).numpy())
    assert ours["param_groups"][0]["lr"] == pytest.approx(0.01) and isinstance(ours["param_groups"][0]["lr"], float)
    sd["state"][0]["exp_avg"].mul_(2)  # torch's step writes in place: the converted copy keeps its values
    assert float(entry["exp_avg"][1]) == -2.5
    back = to_torch_state_dict(ours)["state"][0]
    assert back["exp_avg"].dtype == torch.bfloat16 and torch.equal(back["exp_avg"], values)
    assert back["exp_avg_sq"].dtype == torch.float16
    assert back["step"].dtype == torch.float32 and back["step"].shape == () and float(back["step"]) == 3.0


def test_lbfgs_checkpoint_continues_in_torch(x64):
    """LBFGS's global state (lists of history tensors, Python numbers) converts element by
    element: torch's LBFGS loads our checkpoint and continues as it continues its own."""
    x0 = np.random.default_rng(1).uniform(-1.5, 1.5, 6)

    def rosenbrock(x, lib):
        return lib.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    opt = optim.LBFGS([jnp.asarray(x0)], history_size=3, lr=0.2)
    for _ in range(3):
        opt.step(lambda params: rosenbrock(params[0], jnp))

    def torch_from(state_dict):
        p = torch.tensor(np.asarray(opt.params[0]), requires_grad=True)
        topt = torch.optim.LBFGS([p], history_size=3, lr=0.2)
        topt.load_state_dict(state_dict)

        def closure():
            topt.zero_grad()
            loss = rosenbrock(p, torch)
            loss.backward()
            return loss

        return p, topt, closure

    saved = to_torch_state_dict(opt)
    assert isinstance(saved["state"][0]["old_dirs"], list)
    p, topt, closure = torch_from(saved)
    topt.step(closure)
    opt.step(lambda params: rosenbrock(params[0], jnp))
    np.testing.assert_allclose(p.detach().numpy(), np.asarray(opt.params[0]), rtol=1e-8, atol=1e-8)
