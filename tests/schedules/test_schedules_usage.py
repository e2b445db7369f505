"""Schedules as hyperparameters (jit, lax.scan, inject_hyperparams), float32, and torch's errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.optim.lr_scheduler as tls
import torch.optim.swa_utils as tswa

import optax_like as ol
import optax_like.schedules as S


def _params():
    return {"w": jnp.ones((3,)), "b": jnp.zeros(())}


def test_schedule_as_sgd_lr_in_scan_matches_python_loop():
    sched = S.one_cycle_lr(0.5, total_steps=40)
    opt = ol.sgd(lr=sched, momentum=0.9)
    params = _params()
    grads = {"w": jnp.full((3,), 0.1), "b": jnp.asarray(1.0)}

    def body(carry, _):
        p, s = carry
        u, s = opt.update(grads, s, p)
        return (ol.apply_updates(p, u), s), None

    (scanned, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=40)
    p, s = params, opt.init(params)
    expected_b = 0.0
    buf = 0.0
    for t in range(40):
        u, s = opt.update(grads, s, p)
        p = ol.apply_updates(p, u)
        buf = 1.0 if t == 0 else 0.9 * buf + 1.0
        expected_b -= float(sched(t)) * buf
    np.testing.assert_allclose(np.asarray(scanned["b"]), np.asarray(p["b"]), rtol=1e-6)
    np.testing.assert_allclose(float(p["b"]), expected_b, rtol=1e-5)


def test_momentum_companion_drives_inject_hyperparams():
    sched = S.cyclic_lr(0.01, 0.1, step_size_up=5)
    opt = ol.inject_hyperparams(ol.sgd)(lr=sched, momentum=sched.momentum)
    params = _params()
    state = opt.init(params)
    step = jax.jit(opt.update)
    grads = jax.tree.map(jnp.ones_like, params)
    for t in range(12):
        _, state = step(grads, state, params)
        np.testing.assert_allclose(float(state.hyperparams["lr"]), float(sched(t)), rtol=1e-6)
        np.testing.assert_allclose(float(state.hyperparams["momentum"]), float(sched.momentum(t)), rtol=1e-6)


ALL = [
    S.step_lr(0.1, 30), S.multi_step_lr(0.1, [100, 1000]), S.constant_lr(0.1), S.linear_lr(0.1),
    S.exponential_lr(0.1, 0.9999), S.polynomial_lr(0.1, 5000, 2.0), S.cosine_annealing_lr(0.1, 1000),
    S.cosine_annealing_warm_restarts(0.1, 10, 2), S.cyclic_lr(0.01, 0.1), S.one_cycle_lr(0.1, total_steps=100_000),
    S.lambda_lr(0.1, lambda n: 1 / (1 + n)), S.multiplicative_lr(0.1, lambda n: 0.9999),
    S.sequential_lr([S.linear_lr(0.1), S.cosine_annealing_lr(0.1, 500)], [5]),
    S.chained_scheduler([S.constant_lr(0.1), S.exponential_lr(0.1, 0.999)]), S.swa_lr(0.1, 0.01),
]


@pytest.mark.parametrize("index", range(len(ALL)))
def test_float32_tracks_float64(index):
    sched = ALL[index]
    counts = jnp.asarray([0, 1, 7, 99, 2047, 54321], jnp.int32)
    f32 = np.asarray(jax.jit(jax.vmap(sched))(counts))
    assert f32.dtype == np.float32
    with jax.enable_x64(True):
        f64 = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(counts, jnp.int64)))
    assert f64.dtype == np.float64
    # multiplicative_lr forms a running product: float32 compounds the rounding of each factor
    rtol = 2e-3 if index == 11 else 2e-5
    np.testing.assert_allclose(f32, f64, rtol=rtol, atol=1e-7)


def _error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return type(e), str(e)
    return None


def _opt():
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)


ERRORS = [
    (lambda: tls.ConstantLR(_opt(), factor=2.0), lambda: S.constant_lr(0.1, factor=2.0)),
    (lambda: tls.LinearLR(_opt(), start_factor=0.0), lambda: S.linear_lr(0.1, start_factor=0.0)),
    (lambda: tls.LinearLR(_opt(), end_factor=-0.1), lambda: S.linear_lr(0.1, end_factor=-0.1)),
    (lambda: tls.CosineAnnealingWarmRestarts(_opt(), 2.5), lambda: S.cosine_annealing_warm_restarts(0.1, 2.5)),
    (lambda: tls.CosineAnnealingWarmRestarts(_opt(), 5, 0), lambda: S.cosine_annealing_warm_restarts(0.1, 5, 0)),
    (lambda: tls.CosineAnnealingWarmRestarts(_opt(), 5, eta_min=None),
     lambda: S.cosine_annealing_warm_restarts(0.1, 5, eta_min=None)),
    (lambda: tls.CyclicLR(_opt(), 0.01, 0.1, mode="x"), lambda: S.cyclic_lr(0.01, 0.1, mode="x")),
    (lambda: tls.OneCycleLR(_opt(), 0.1), lambda: S.one_cycle_lr(0.1)),
    (lambda: tls.OneCycleLR(_opt(), 0.1, total_steps=-3), lambda: S.one_cycle_lr(0.1, total_steps=-3)),
    (lambda: tls.OneCycleLR(_opt(), 0.1, total_steps=5.0), lambda: S.one_cycle_lr(0.1, total_steps=5.0)),
    (lambda: tls.OneCycleLR(_opt(), 0.1, epochs=2.0, steps_per_epoch=3), lambda: S.one_cycle_lr(0.1, epochs=2.0, steps_per_epoch=3)),
    (lambda: tls.OneCycleLR(_opt(), 0.1, epochs=2, steps_per_epoch=0), lambda: S.one_cycle_lr(0.1, epochs=2, steps_per_epoch=0)),
    (lambda: tls.OneCycleLR(_opt(), 0.1, total_steps=9, pct_start=1), lambda: S.one_cycle_lr(0.1, total_steps=9, pct_start=1)),
    (lambda: tls.OneCycleLR(_opt(), 0.1, total_steps=9, anneal_strategy="x"),
     lambda: S.one_cycle_lr(0.1, total_steps=9, anneal_strategy="x")),
    (lambda: tls.MultiplicativeLR(_opt(), 0.5), lambda: S.multiplicative_lr(0.1, 0.5)),
    (lambda: tls.SequentialLR(_opt(), [], []), lambda: S.sequential_lr([], [])),
    (lambda: (lambda o: tls.SequentialLR(o, [tls.StepLR(o, 2)], [3]))(_opt()),
     lambda: S.sequential_lr([S.step_lr(0.1, 2)], [3])),
    (lambda: tls.ChainedScheduler([]), lambda: S.chained_scheduler([])),
    (lambda: tswa.SWALR(_opt(), 0.1, anneal_strategy="x"), lambda: S.swa_lr(0.1, 0.1, anneal_strategy="x")),
    (lambda: tswa.SWALR(_opt(), 0.1, anneal_epochs=-1), lambda: S.swa_lr(0.1, 0.1, anneal_epochs=-1)),
    (lambda: tls.ReduceLROnPlateau(_opt(), factor=1.0), lambda: S.reduce_lr_on_plateau(factor=1.0)),
    (lambda: tls.ReduceLROnPlateau(_opt(), mode="x"), lambda: S.reduce_lr_on_plateau(mode="x")),
    (lambda: tls.ReduceLROnPlateau(_opt(), threshold_mode="x"), lambda: S.reduce_lr_on_plateau(threshold_mode="x")),
]


@pytest.mark.parametrize("index", range(len(ERRORS)))
def test_error_parity(index):
    theirs, ours = ERRORS[index]
    t_err = _error(theirs)
    assert t_err is not None and _error(ours) == t_err
