"""reduce_lr_on_plateau (transformation) against torch's ReduceLROnPlateau driving torch.optim.SGD."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like.schedules import reduce_lr_on_plateau

STEPS = 200


def metric(t):
    return 1.0 / (1 + t // 20) + 0.01 * math.sin(t) if t < 120 else 0.3 + 0.001 * (t % 3)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(factor=0.5, patience=3, cooldown=2, threshold_mode="abs", threshold=0.01),
    dict(mode="max", factor=0.5, patience=2),
    dict(factor=0.3, patience=0, min_lr=0.004, eps=1e-4),
    dict(factor=0.5, patience=1, min_lr=0.0249, eps=0.0),
])
def test_matches_torch_sgd(kwargs, x64):
    lr = 0.1
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(4)
    grads = rng.standard_normal((STEPS, 4))
    sign = -1.0 if kwargs.get("mode") == "max" else 1.0

    tp = torch.tensor(p0, requires_grad=True)
    t_opt = torch.optim.SGD([tp], lr=lr, momentum=0.9)
    t_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, **kwargs)

    opt = ol.chain(ol.sgd(lr=lr, momentum=0.9), reduce_lr_on_plateau(**kwargs, initial_lr=lr))
    params = jnp.asarray(p0)
    state = opt.init(params)

    @jax.jit
    def step(g, state, params, value):
        updates, state = opt.update(g, state, params, value=value)
        return ol.apply_updates(params, updates), state

    for t in range(STEPS):
        tp.grad = torch.tensor(grads[t])
        t_opt.step()
        t_sched.step(sign * metric(t))
        params, state = step(jnp.asarray(grads[t]), state, params, jnp.asarray(sign * metric(t)))
        plateau = state[1]
        assert float(plateau.lr) == t_opt.param_groups[0]["lr"], f"step {t}"
        assert int(plateau.num_bad_epochs) == t_sched.num_bad_epochs
        assert int(plateau.cooldown_counter) == t_sched.cooldown_counter
        assert float(plateau.best) == t_sched.best
        np.testing.assert_allclose(np.asarray(params), tp.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert float(state[1].scale) < 1.0  # the schedules above do reduce
    np.testing.assert_allclose(float(state[1].scale), t_opt.param_groups[0]["lr"] / lr, rtol=1e-15)


def test_float32_state_and_missing_value():
    opt = ol.chain(ol.sgd(lr=1.0), reduce_lr_on_plateau(patience=0, factor=0.5))
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    grads = {"w": jnp.ones(3)}
    update = jax.jit(opt.update)
    for t in range(4):
        updates, state = update(grads, state, params, value=jnp.asarray(1.0, jnp.float32))
        np.testing.assert_allclose(np.asarray(updates["w"]), -(0.5 ** max(t - 1, 0)) * np.ones(3))
    assert state[1].scale.dtype == jnp.float32 and float(state[1].scale) == 0.125
    with pytest.raises(TypeError, match="value="):
        reduce_lr_on_plateau().update(grads, reduce_lr_on_plateau().init(params))
    with pytest.raises(TypeError, match="one min_lr"):
        reduce_lr_on_plateau(min_lr=[0.1, 0.2])
