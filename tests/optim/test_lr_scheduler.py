"""optax_like.optim.lr_scheduler / swa_utils against live torch schedulers.

Each test drives a torch scheduler and ours, each on its own real torch optimizer with two param
groups (different lrs), for hundreds of steps, and requires identical group['lr'] (and momentum
or betas) after every step: our classes do torch's host float64 math, so they match bit for bit.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.optim.lr_scheduler as tls
import torch.optim.swa_utils as tswa

import optax_like.optim.lr_scheduler as ols
import optax_like.optim.swa_utils as oswa

STEPS = 300


def make_optimizer(kind="sgd"):
    p1 = torch.zeros(2, requires_grad=True)
    p2 = torch.zeros(3, requires_grad=True)
    groups = [{"params": [p1]}, {"params": [p2], "lr": 0.05}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=0.1, betas=(0.9, 0.999))
    return torch.optim.Adagrad(groups, lr=0.1)


def snapshot(opt):
    out = []
    for g in opt.param_groups:
        out.append((g["lr"], g.get("momentum"), g.get("betas")))
    return out


def assert_same(t_opt, o_opt, t_sched, o_sched, where):
    assert snapshot(o_opt) == snapshot(t_opt), f"{where}: {snapshot(o_opt)} != {snapshot(t_opt)}"
    assert o_sched.get_last_lr() == t_sched.get_last_lr(), where


def run_pair(torch_make, our_make, *, kind="sgd", steps=STEPS, edits=(), metrics=None, epochs=None):
    """Steps both schedulers; `edits` are steps after which both groups' lr is halved by hand."""
    t_opt, o_opt = make_optimizer(kind), make_optimizer(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_sched, o_sched = torch_make(t_opt), our_make(o_opt)
    assert_same(t_opt, o_opt, t_sched, o_sched, "construction")
    for t in range(steps):
        t_opt.step()
        o_opt.step()
        if t in edits:
            for opt in (t_opt, o_opt):
                for g in opt.param_groups:
                    g["lr"] = g["lr"] * 0.5
        args = () if metrics is None else (metrics(t),)
        if epochs is not None:
            args = args + (epochs(t),)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_sched.step(*args)
            o_sched.step(*args)
        assert_same(t_opt, o_opt, t_sched, o_sched, f"step {t + 1}")
    return t_opt, o_opt, t_sched, o_sched


def both(name, *args, module=("lr", "lr"), **kwargs):
    t_mod = tls if module[0] == "lr" else tswa
    o_mod = ols if module[1] == "lr" else oswa
    return (lambda opt: getattr(t_mod, name)(opt, *args, **kwargs),
            lambda opt: getattr(o_mod, name)(opt, *args, **kwargs))


CASES = [
    ("StepLR", (7,), dict(gamma=0.5), "sgd"),
    ("MultiStepLR", ([10, 30, 30, 80],), dict(gamma=0.5), "sgd"),
    ("ConstantLR", (), dict(factor=0.25, total_iters=20), "sgd"),
    ("ConstantLR", (), dict(factor=0.5, total_iters=0), "sgd"),
    ("LinearLR", (), dict(start_factor=0.1, end_factor=0.9, total_iters=40), "sgd"),
    ("LinearLR", (), dict(start_factor=0.5, end_factor=0.0, total_iters=30), "sgd"),
    ("ExponentialLR", (0.99,), {}, "sgd"),
    ("PolynomialLR", (), dict(total_iters=100, power=2.5), "sgd"),
    ("CosineAnnealingLR", (17,), dict(eta_min=0.001), "sgd"),
    ("CosineAnnealingLR", (50,), {}, "sgd"),
    ("CosineAnnealingWarmRestarts", (5,), dict(T_mult=2, eta_min=0.01), "sgd"),
    ("CosineAnnealingWarmRestarts", (13,), {}, "sgd"),
    ("CyclicLR", (0.01, 0.1), dict(step_size_up=20), "sgd"),
    ("CyclicLR", ([0.01, 0.02], [0.1, 0.3]), dict(step_size_up=15, step_size_down=5, mode="triangular2"), "adam"),
    ("CyclicLR", (0.01, 0.1), dict(step_size_up=10, mode="exp_range", gamma=0.995), "sgd"),
    ("CyclicLR", (0.01, 0.1), dict(step_size_up=10, scale_fn=lambda x: 1 / (1 + x), scale_mode="iterations"), "sgd"),
    ("CyclicLR", (0.01, 0.1), dict(step_size_up=7, cycle_momentum=False), "adagrad"),
    ("OneCycleLR", (0.3,), dict(total_steps=STEPS), "sgd"),
    ("OneCycleLR", ([0.3, 0.2],), dict(total_steps=STEPS, anneal_strategy="linear", three_phase=True), "adam"),
    ("OneCycleLR", (0.3,), dict(epochs=10, steps_per_epoch=30, pct_start=0.25, cycle_momentum=False), "adagrad"),
]


@pytest.mark.parametrize("name,args,kwargs,kind", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_with_hand_edits(name, args, kwargs, kind):
    edits = () if name in ("OneCycleLR", "CyclicLR", "CosineAnnealingWarmRestarts") else (45, 150)
    run_pair(*both(name, *args, **kwargs), kind=kind, edits=edits)


def test_closed_form_schedulers_ignore_hand_edits_like_torch():
    # torch's closed-form classes overwrite a hand edit at the next step: so do ours.
    run_pair(*both("CyclicLR", 0.01, 0.1, step_size_up=9), edits=(20, 21, 100))
    run_pair(*both("OneCycleLR", 0.3, total_steps=STEPS), edits=(20, 150))


def test_lambda_and_multiplicative():
    f1 = lambda e: 0.95 ** e
    f2 = lambda e: 1.0 / (1 + e // 10)
    run_pair(lambda o: tls.LambdaLR(o, [f1, f2]), lambda o: ols.LambdaLR(o, [f1, f2]), edits=(30,))
    m1 = lambda e: 0.99
    m2 = lambda e: 1.0 if e % 5 else 0.9
    run_pair(lambda o: tls.MultiplicativeLR(o, [m1, m2]), lambda o: ols.MultiplicativeLR(o, [m1, m2]), edits=(30,))


def test_sequential_and_chained():
    def seq(mod):
        def make(o):
            return mod.SequentialLR(o, [mod.LinearLR(o, 0.1, total_iters=10), mod.ExponentialLR(o, 0.98),
                                        mod.CosineAnnealingLR(o, 40)], milestones=[10, 100])
        return make

    run_pair(seq(tls), seq(ols), edits=(50,))

    def chained(mod):
        def make(o):
            return mod.ChainedScheduler([mod.ConstantLR(o, 0.5, total_iters=12), mod.ExponentialLR(o, 0.99),
                                         mod.StepLR(o, 30, 0.5)])
        return make

    run_pair(chained(tls), chained(ols), edits=(70,))


def test_swalr():
    run_pair(*both("SWALR", 0.05, anneal_epochs=20, module=("swa", "swa")), edits=(50,))
    run_pair(*both("SWALR", [0.02, 0.01], anneal_epochs=7, anneal_strategy="linear", module=("swa", "swa")), edits=(3,))
    run_pair(*both("SWALR", 0.05, anneal_epochs=0, module=("swa", "swa")))


@pytest.mark.parametrize("kwargs", [
    dict(), dict(mode="max", threshold_mode="abs", threshold=0.01, patience=3, cooldown=2),
    dict(factor=0.5, patience=2, cooldown=1, min_lr=[0.02, 0.001], eps=1e-3),
    dict(factor=0.5, patience=0, threshold_mode="abs", min_lr=0.004),
])
def test_reduce_lr_on_plateau(kwargs):
    metric = lambda t: 1.0 / (1 + t // 25) + 0.01 * math.sin(t)
    run_pair(lambda o: tls.ReduceLROnPlateau(o, **kwargs), lambda o: ols.ReduceLROnPlateau(o, **kwargs),
             metrics=metric, edits=(100,))


def test_deprecated_epoch_argument():
    epoch = lambda t: (t * 7) % 53
    for name, args in [("StepLR", (5,)), ("MultiStepLR", ([3, 9, 9],)), ("ConstantLR", ()), ("LinearLR", ()),
                       ("ExponentialLR", (0.9,)), ("PolynomialLR", ()), ("CosineAnnealingLR", (10,)),
                       ("CyclicLR", (0.01, 0.1))]:
        run_pair(*both(name, *args), epochs=epoch, steps=60)
    run_pair(*both("CosineAnnealingWarmRestarts", 4, T_mult=3), epochs=lambda t: t * 0.7, steps=80)
    run_pair(*both("CosineAnnealingWarmRestarts", 4), epochs=lambda t: t * 1.3, steps=80)
    run_pair(lambda o: tls.ReduceLROnPlateau(o, patience=1), lambda o: ols.ReduceLROnPlateau(o, patience=1),
             metrics=lambda t: 1.0, epochs=lambda t: 2 * t, steps=20)


def _round_trip(torch_make, our_make, kind="sgd", at=60, more=40):
    """Saves our scheduler mid-run, restores it into fresh objects, and checks the continuation."""
    t_opt, o_opt, t_sched, o_sched = run_pair(torch_make, our_make, kind=kind, steps=at)
    t_state, o_state = t_sched.state_dict(), o_sched.state_dict()
    assert set(o_state) == set(t_state)
    for key, value in t_state.items():
        if isinstance(value, (int, float, str, bool, list, tuple)) and key not in ("_schedulers",):
            assert o_state[key] == value, key
    saved = copy.deepcopy(o_state)
    groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in o_opt.param_groups])
    expected = []
    for _ in range(more):
        o_opt.step()
        o_sched.step()
        expected.append(snapshot(o_opt))
    fresh = make_optimizer(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = our_make(fresh)
    for g, saved_group in zip(fresh.param_groups, groups):
        g.update(saved_group)
    sched.load_state_dict(saved)
    for i in range(more):
        fresh.step()
        sched.step()
        assert snapshot(fresh) == expected[i], f"step {at + i + 1} after load_state_dict"


@pytest.mark.parametrize("name,args,kwargs,kind", [c for c in CASES if c[0] != "OneCycleLR"] + [
    ("OneCycleLR", (0.3,), dict(total_steps=200), "adam")], ids=lambda c: str(c)[:20])
def test_state_dict_round_trip(name, args, kwargs, kind):
    _round_trip(*both(name, *args, **kwargs), kind=kind)


def test_state_dict_round_trip_composites():
    def seq(mod):
        return lambda o: mod.SequentialLR(o, [mod.ConstantLR(o, 0.5, total_iters=5), mod.StepLR(o, 10)], [20])

    _round_trip(seq(tls), seq(ols))
    _round_trip(*both("SWALR", 0.05, anneal_epochs=20, module=("swa", "swa")), at=10)
    lam = lambda e: 0.9 ** e
    _round_trip(lambda o: tls.LambdaLR(o, lam), lambda o: ols.LambdaLR(o, lam))


def test_resume_with_last_epoch():
    t_opt, o_opt = make_optimizer(), make_optimizer()
    for opt in (t_opt, o_opt):
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = tls.CosineAnnealingLR(t_opt, 30, last_epoch=10)
        o = ols.CosineAnnealingLR(o_opt, 30, last_epoch=10)
    assert snapshot(o_opt) == snapshot(t_opt)
    for _ in range(50):
        t_opt.step(), o_opt.step()
        t.step(), o.step()
        assert snapshot(o_opt) == snapshot(t_opt)


def test_onecycle_overrun_raises_like_torch():
    _, _, t_sched, o_sched = run_pair(*both("OneCycleLR", 0.3, total_steps=20), steps=20)
    with pytest.raises(ValueError) as t_err:
        t_sched.step()
    with pytest.raises(ValueError) as o_err:
        o_sched.step()
    assert str(o_err.value) == str(t_err.value)


def test_plain_object_optimizer_and_warnings():
    class Plain:
        def __init__(self):
            self.param_groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.2, "momentum": 0.5}]
            self.defaults = {"lr": 0.1, "momentum": 0.9}

        def step(self):
            pass

    opt = Plain()
    sched = ols.OneCycleLR(opt, 1.0, total_steps=10)
    assert opt.param_groups[0]["initial_lr"] == 0.04 and opt.param_groups[0]["momentum"] == 0.95
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()


def _error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return type(e), str(e)
    return None


ERROR_CASES = [
    ("ConstantLR", (), dict(factor=1.5)),
    ("LinearLR", (), dict(start_factor=0)),
    ("LinearLR", (), dict(end_factor=2.0)),
    ("CosineAnnealingWarmRestarts", (0,), {}),
    ("CosineAnnealingWarmRestarts", (5,), dict(T_mult=0)),
    ("CosineAnnealingWarmRestarts", (5,), dict(eta_min="x")),
    ("CyclicLR", (0.01, 0.1), dict(mode="bogus")),
    ("CyclicLR", ([0.01], 0.1), {}),
    ("CyclicLR", (0.01, 0.1), dict(base_momentum=[0.1, 0.2, 0.3])),
    ("OneCycleLR", (0.1,), {}),
    ("OneCycleLR", (0.1,), dict(total_steps=0)),
    ("OneCycleLR", (0.1,), dict(epochs=0, steps_per_epoch=3)),
    ("OneCycleLR", (0.1,), dict(epochs=2, steps_per_epoch=-1)),
    ("OneCycleLR", (0.1,), dict(total_steps=10, pct_start=1.5)),
    ("OneCycleLR", (0.1,), dict(total_steps=10, pct_start=1)),
    ("OneCycleLR", (0.1,), dict(total_steps=10, anneal_strategy="tan")),
    ("OneCycleLR", ([0.1, 0.2, 0.3],), dict(total_steps=10)),
    ("ReduceLROnPlateau", (), dict(factor=1.0)),
    ("ReduceLROnPlateau", (), dict(mode="avg")),
    ("ReduceLROnPlateau", (), dict(threshold_mode="x")),
    ("ReduceLROnPlateau", (), dict(min_lr=[0.1])),
    ("LambdaLR", ([lambda e: 1.0],), {}),
    ("MultiplicativeLR", (3,), {}),
]


@pytest.mark.parametrize("name,args,kwargs", ERROR_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(ERROR_CASES)])
def test_error_parity(name, args, kwargs):
    t_err = _error(lambda: getattr(tls, name)(make_optimizer(), *args, **kwargs))
    o_err = _error(lambda: getattr(ols, name)(make_optimizer(), *args, **kwargs))
    assert t_err is not None and o_err == t_err


def test_error_parity_more():
    cases = [
        (lambda m, o: m.CyclicLR(o, 0.01, 0.1), "adagrad"),  # no momentum to cycle
        (lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10), "adagrad"),
        (lambda m, o: m.SequentialLR(o, [], []), "sgd"),
        (lambda m, o: m.SequentialLR(o, [m.StepLR(o, 3)], [4]), "sgd"),
        (lambda m, o: m.SequentialLR(o, [m.StepLR(o, 3), m.ReduceLROnPlateau(o)], [4]), "sgd"),
        (lambda m, o: m.SequentialLR(o, [m.StepLR(o, 3), 5], [4]), "sgd"),
        (lambda m, o: m.ChainedScheduler([]), "sgd"),
        (lambda m, o: m.ChainedScheduler([m.StepLR(o, 3), m.ReduceLROnPlateau(o)]), "sgd"),
        (lambda m, o: m.StepLR(o, 3, last_epoch=5), "sgd"),
        (lambda m, o: m.StepLR(object(), 3), "sgd"),
    ]
    for make, kind in cases:
        t_err = _error(lambda: make(tls, make_optimizer(kind)))
        o_err = _error(lambda: make(ols, make_optimizer(kind)))
        assert t_err is not None and o_err == t_err, (t_err, o_err)
    for args in [(0.05,), (0.05, 10, "tan"), (0.05, -1), (0.05, 2.5), ([0.1],)]:
        t_err = _error(lambda: tswa.SWALR(make_optimizer(), *args))
        o_err = _error(lambda: oswa.SWALR(make_optimizer(), *args))
        assert o_err == t_err, (args, t_err, o_err)
    # the step that divides by zero in torch divides by zero here
    t_err = _error(lambda: run_pair(*both("ConstantLR", factor=0.0, total_iters=3), steps=5))
    assert t_err is not None and t_err[0] is ZeroDivisionError
