"""optax_like.schedules against live torch schedulers (scoped float64, 1e-12 relative).

torch drives a real two-group optimizer (lrs 0.1 and 0.05); each schedule function is built with
one group's lr and evaluated at every count with jit + vmap (and at a few concrete counts).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.optim.lr_scheduler as tls
import torch.optim.swa_utils as tswa

import optax_like.schedules as S

STEPS = 300
LRS = (0.1, 0.05)
RTOL = 1e-12


def make_optimizer(kind="sgd"):
    groups = [{"params": [torch.zeros(2, requires_grad=True)]},
              {"params": [torch.zeros(3, requires_grad=True)], "lr": LRS[1]}]
    if kind == "adam":
        return torch.optim.Adam(groups, lr=LRS[0], betas=(0.9, 0.999))
    return torch.optim.SGD(groups, lr=LRS[0], momentum=0.9)


def torch_trajectory(make, steps=STEPS, kind="sgd"):
    """[(lr, momentum-or-beta1) per group] after construction and after each step."""
    opt = make_optimizer(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make(opt)

    def snap():
        return [(g["lr"], g["betas"][0] if kind == "adam" else g["momentum"]) for g in opt.param_groups]

    out = [snap()]
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append(snap())
    return np.array(out)  # (steps + 1, groups, 2)


def evaluate(schedule, steps=STEPS):
    values = np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(steps + 1)))
    counts = [1, steps // 3]  # the concrete-count path gives the same numbers
    eager = [np.asarray(schedule(n)) for n in counts]
    assert_close(eager, values[counts], "eager vs jit", scale=np.max(np.abs(values)))
    return values


def assert_close(ours, theirs, what, scale=None):
    ours, theirs = np.atleast_1d(np.asarray(ours, np.float64)), np.atleast_1d(np.asarray(theirs, np.float64))
    # relative error; values that vanish (below 1e-3 of the schedule's peak) are compared to that floor
    floor = 1e-3 * (np.max(np.abs(theirs)) if scale is None else scale)
    err = np.abs(ours - theirs) / np.maximum(np.abs(theirs), floor)
    err[(ours == theirs)] = 0.0
    worst = int(np.argmax(err))
    assert err[worst] <= RTOL, f"{what}: count {worst}: {ours[worst]!r} vs torch {theirs[worst]!r} (rel {err[worst]:.2e})"


# (torch factory on an optimizer, our factory of the group's lr)
CASES = {
    "step": (lambda o: tls.StepLR(o, 7, gamma=0.5), lambda lr: S.step_lr(lr, 7, gamma=0.5)),
    "multi_step_repeated": (lambda o: tls.MultiStepLR(o, [10, 30, 30, 80], 0.5),
                            lambda lr: S.multi_step_lr(lr, [80, 30, 10, 30], 0.5)),
    "constant": (lambda o: tls.ConstantLR(o, 0.25, total_iters=20), lambda lr: S.constant_lr(lr, 0.25, 20)),
    "constant_zero_iters": (lambda o: tls.ConstantLR(o, 0.5, total_iters=0), lambda lr: S.constant_lr(lr, 0.5, 0)),
    "linear": (lambda o: tls.LinearLR(o, 0.1, 0.9, total_iters=40), lambda lr: S.linear_lr(lr, 0.1, 0.9, 40)),
    "linear_to_zero": (lambda o: tls.LinearLR(o, 0.5, 0.0, total_iters=30), lambda lr: S.linear_lr(lr, 0.5, 0.0, 30)),
    "linear_zero_iters": (lambda o: tls.LinearLR(o, 0.5, total_iters=0), lambda lr: S.linear_lr(lr, 0.5, total_iters=0)),
    "exponential": (lambda o: tls.ExponentialLR(o, 0.99), lambda lr: S.exponential_lr(lr, 0.99)),
    "polynomial": (lambda o: tls.PolynomialLR(o, 100, 2.5), lambda lr: S.polynomial_lr(lr, 100, 2.5)),
    "polynomial_zero_iters": (lambda o: tls.PolynomialLR(o, 0), lambda lr: S.polynomial_lr(lr, 0)),
    "cosine_periodic": (lambda o: tls.CosineAnnealingLR(o, 17, eta_min=0.001),
                        lambda lr: S.cosine_annealing_lr(lr, 17, 0.001)),
    "cosine_to_zero": (lambda o: tls.CosineAnnealingLR(o, 50), lambda lr: S.cosine_annealing_lr(lr, 50)),
    "warm_restarts_tmult": (lambda o: tls.CosineAnnealingWarmRestarts(o, 5, T_mult=2, eta_min=0.01),
                            lambda lr: S.cosine_annealing_warm_restarts(lr, 5, 2, 0.01)),
    "warm_restarts_tmult3": (lambda o: tls.CosineAnnealingWarmRestarts(o, 3, T_mult=3),
                             lambda lr: S.cosine_annealing_warm_restarts(lr, 3, 3)),
    "warm_restarts": (lambda o: tls.CosineAnnealingWarmRestarts(o, 13),
                      lambda lr: S.cosine_annealing_warm_restarts(lr, 13)),
    "lambda": (lambda o: tls.LambdaLR(o, lambda e: 0.97 ** e + (e % 10) / 10),
               lambda lr: S.lambda_lr(lr, lambda e: 0.97 ** e + (e % 10) / 10)),
    "multiplicative": (lambda o: tls.MultiplicativeLR(o, lambda e: 0.9 if e % 5 == 0 else 0.995),
                       lambda lr: S.multiplicative_lr(lr, lambda e: jnp.where(e % 5 == 0, 0.9, 0.995))),
    "sequential": (lambda o: tls.SequentialLR(o, [tls.LinearLR(o, 0.1, total_iters=10), tls.ExponentialLR(o, 0.98),
                                                  tls.CosineAnnealingLR(o, 40)], milestones=[10, 100]),
                   lambda lr: S.sequential_lr([S.linear_lr(lr, 0.1, total_iters=10), S.exponential_lr(lr, 0.98),
                                               S.cosine_annealing_lr(lr, 40)], [10, 100])),
    "sequential_constant": (lambda o: tls.SequentialLR(o, [tls.ConstantLR(o, 0.2, total_iters=50),
                                                           tls.StepLR(o, 20, 0.7)], milestones=[30]),
                            lambda lr: S.sequential_lr([S.constant_lr(lr, 0.2, 50), S.step_lr(lr, 20, 0.7)], [30])),
    "chained": (lambda o: tls.ChainedScheduler([tls.ConstantLR(o, 0.5, total_iters=12), tls.ExponentialLR(o, 0.99),
                                                tls.StepLR(o, 30, 0.5)]),
                lambda lr: S.chained_scheduler([S.constant_lr(lr, 0.5, 12), S.exponential_lr(lr, 0.99),
                                                S.step_lr(lr, 30, 0.5)])),
    "swa_cos": (lambda o: tswa.SWALR(o, 0.02, anneal_epochs=20), lambda lr: S.swa_lr(lr, 0.02, 20)),
    "swa_linear": (lambda o: tswa.SWALR(o, 0.02, anneal_epochs=7, anneal_strategy="linear"),
                   lambda lr: S.swa_lr(lr, 0.02, 7, "linear")),
    "swa_no_anneal": (lambda o: tswa.SWALR(o, 0.02, anneal_epochs=0), lambda lr: S.swa_lr(lr, 0.02, 0)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lr_trajectory_matches_torch(name, x64):
    torch_make, ours = CASES[name]
    expected = torch_trajectory(torch_make)
    for g, lr in enumerate(LRS):
        assert_close(evaluate(ours(lr)), expected[:, g, 0], f"{name} group {g}")


CYCLIC = {
    "triangular": dict(step_size_up=20),
    "triangular2_asym": dict(step_size_up=15, step_size_down=5, mode="triangular2", base_momentum=0.7),
    "exp_range": dict(step_size_up=10, mode="exp_range", gamma=0.995),
    "custom_cycle": dict(step_size_up=8, scale_fn=lambda x: 1 / (1 + x)),
    "custom_iterations": dict(step_size_up=8, scale_fn=lambda x: 0.999 ** x, scale_mode="iterations"),
}


@pytest.mark.parametrize("name", sorted(CYCLIC))
def test_cyclic_lr_and_momentum(name, x64):
    kwargs = CYCLIC[name]
    kind = "adam" if name == "triangular2_asym" else "sgd"  # betas[0] cycles like momentum
    bases, peaks = (0.01, 0.02), (0.1, 0.3)
    expected = torch_trajectory(lambda o: tls.CyclicLR(o, list(bases), list(peaks), **kwargs), kind=kind)
    for g in range(2):
        sched = S.cyclic_lr(bases[g], peaks[g], **kwargs)
        assert_close(evaluate(sched), expected[:, g, 0], f"cyclic {name} lr group {g}")
        assert_close(evaluate(sched.momentum), expected[:, g, 1], f"cyclic {name} momentum group {g}")
    assert S.cyclic_lr(0.01, 0.1, cycle_momentum=False).momentum is None


ONE_CYCLE = {
    "cos": dict(total_steps=STEPS),
    "fractional_boundary": dict(total_steps=STEPS, pct_start=0.333, base_momentum=0.8, div_factor=10.0),
    "three_phase_linear": dict(total_steps=STEPS, anneal_strategy="linear", three_phase=True),
    "three_phase_cos": dict(epochs=30, steps_per_epoch=10, three_phase=True, final_div_factor=100.0),
}


@pytest.mark.parametrize("name", sorted(ONE_CYCLE))
def test_one_cycle_lr_and_momentum(name, x64):
    kwargs = ONE_CYCLE[name]
    kind = "adam" if name == "three_phase_linear" else "sgd"
    peaks = (0.3, 0.2)
    expected = torch_trajectory(lambda o: tls.OneCycleLR(o, list(peaks), **kwargs), kind=kind)
    for g in range(2):
        sched = S.one_cycle_lr(peaks[g], **kwargs)
        assert_close(evaluate(sched), expected[:, g, 0], f"one_cycle {name} lr group {g}")
        assert_close(evaluate(sched.momentum), expected[:, g, 1], f"one_cycle {name} momentum group {g}")


def test_one_cycle_past_total_steps():
    sched = S.one_cycle_lr(0.3, total_steps=20)
    opt = make_optimizer()
    torch_sched = tls.OneCycleLR(opt, 0.3, total_steps=20)
    for _ in range(20):
        opt.step()
        torch_sched.step()
    with pytest.raises(ValueError) as torch_err:
        torch_sched.step()
    with pytest.raises(ValueError) as err:
        sched(21)
    assert str(err.value) == str(torch_err.value)
    with pytest.raises(ValueError):
        sched.momentum(jnp.asarray(25))
    traced = jax.jit(sched)(jnp.arange(25))  # a traced count cannot raise: NaN past the end
    assert np.all(np.isfinite(traced[:21])) and np.all(np.isnan(traced[21:]))


def test_sequential_lr_with_one_cycle_only_evaluates_the_active_schedule():
    sched = S.sequential_lr([S.one_cycle_lr(0.3, total_steps=10), S.exponential_lr(0.3, 0.9)], [10])
    assert np.isfinite(sched(50))  # concrete: one_cycle is not evaluated at 50
    assert np.all(np.isfinite(jax.jit(jax.vmap(sched))(jnp.arange(60))))
