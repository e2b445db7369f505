"""torch's scheduler test cases (pytorch's test/optim/test_lrscheduler.py) against both our views.

Each case below is one of torch's tests, named after it, with its scheduler configuration and
number of epochs (torch's test file is not in the wheel; the configurations are transcribed,
the expected values are not: torch 2.13 runs live as the oracle). torch's setUp: SGD over two
param groups, lr 0.05 and 0.5 (torch's second group has a Tensor lr; a float here).

- `class` view: the same builder runs with `optax_like.optim.lr_scheduler` over
  `optax_like.optim.SGD`; every group's lr (and momentum where CyclicLR/OneCycleLR cycle it)
  after construction and after each `step()` equals torch's within 1e-12 relative;
- `functional` view: the `optax_like.schedules` function for each group, evaluated at
  counts 0..epochs (scoped float64), within 1e-12 relative (1e-10 for 100-epoch recursions).

Cases without a functional analogue, each with its reason: ReduceLROnPlateau (it needs the
metric: `reduce_lr_on_plateau` is a transformation, tested in test_plateau.py) and compounds
that include it. torch's "compound" tests step several schedulers on one optimizer, which is
`chained_scheduler` functionally.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
import torch

from optax_like import optim
from optax_like import schedules as S
from optax_like.optim import lr_scheduler as ours_lrs
from torch.optim import lr_scheduler as torch_lrs

LRS = (0.05, 0.5)
RTOL = 1e-12


# name -> (epochs, class builder (L, optimizer) -> scheduler or list, functional builder
#          (lr, group index) -> schedule or None (not applicable), metrics or None)
CASES = {
    "test_step_lr": (10, lambda L, o: L.StepLR(o, gamma=0.1, step_size=3), lambda lr, g: S.step_lr(lr, 3, 0.1)),
    "test_multi_step_lr": (10, lambda L, o: L.MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9]),
                           lambda lr, g: S.multi_step_lr(lr, [2, 5, 9], 0.1)),
    "test_constantlr": (10, lambda L, o: L.ConstantLR(o, factor=1.0 / 2, total_iters=5),
                        lambda lr, g: S.constant_lr(lr, 1.0 / 2, 5)),
    "test_linearlr": (10, lambda L, o: L.LinearLR(o, start_factor=1.0 / 2, total_iters=4),
                      lambda lr, g: S.linear_lr(lr, 1.0 / 2, total_iters=4)),
    "test_get_last_lr_linearlr": (10, lambda L, o: L.LinearLR(o, start_factor=1.0 / 4, end_factor=3.0 / 5, total_iters=4),
                                  lambda lr, g: S.linear_lr(lr, 1.0 / 4, 3.0 / 5, 4)),
    "test_exp_lr": (10, lambda L, o: L.ExponentialLR(o, gamma=0.9), lambda lr, g: S.exponential_lr(lr, 0.9)),
    "test_poly_lr": (10, lambda L, o: L.PolynomialLR(o, power=0.9, total_iters=5),
                     lambda lr, g: S.polynomial_lr(lr, 5, 0.9)),
    "test_cos_anneal_lr": (10, lambda L, o: L.CosineAnnealingLR(o, T_max=10, eta_min=1e-10),
                           lambda lr, g: S.cosine_annealing_lr(lr, 10, 1e-10)),
    # test_closed_form_*: 20 epochs
    "test_closed_form_step_lr": (20, lambda L, o: L.StepLR(o, gamma=0.1, step_size=3), lambda lr, g: S.step_lr(lr, 3, 0.1)),
    "test_closed_form_linearlr": (20, lambda L, o: L.LinearLR(o, start_factor=1.0 / 3, end_factor=0.7, total_iters=4),
                                  lambda lr, g: S.linear_lr(lr, 1.0 / 3, 0.7, 4)),
    "test_closed_form_constantlr": (20, lambda L, o: L.ConstantLR(o, factor=1.0 / 3, total_iters=4),
                                    lambda lr, g: S.constant_lr(lr, 1.0 / 3, 4)),
    "test_closed_form_multi_step_lr": (20, lambda L, o: L.MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9]),
                                       lambda lr, g: S.multi_step_lr(lr, [2, 5, 9], 0.1)),
    "test_closed_form_exp_lr": (20, lambda L, o: L.ExponentialLR(o, gamma=0.9), lambda lr, g: S.exponential_lr(lr, 0.9)),
    "test_closed_form_poly_lr": (20, lambda L, o: L.PolynomialLR(o, power=0.9), lambda lr, g: S.polynomial_lr(lr, power=0.9)),
    "test_closed_form_cos_anneal_lr": (20, lambda L, o: L.CosineAnnealingLR(o, T_max=5, eta_min=1e-10),
                                       lambda lr, g: S.cosine_annealing_lr(lr, 5, 1e-10)),
    "test_sequentiallr1": (19, lambda L, o: L.SequentialLR(o, [L.ExponentialLR(o, gamma=0.8), L.StepLR(o, gamma=0.1, step_size=4)], milestones=[3]),
                           lambda lr, g: S.sequential_lr([S.exponential_lr(lr, 0.8), S.step_lr(lr, 4, 0.1)], [3])),
    "test_sequentiallr2": (13, lambda L, o: L.SequentialLR(o, [L.ConstantLR(o, factor=0.1, total_iters=3), L.ExponentialLR(o, gamma=0.9)], milestones=[3]),
                           lambda lr, g: S.sequential_lr([S.constant_lr(lr, 0.1, 3), S.exponential_lr(lr, 0.9)], [3])),
    "test_sequentiallr3": (12, lambda L, o: L.SequentialLR(o, [L.ConstantLR(o, factor=0.1, total_iters=3), L.ExponentialLR(o, gamma=0.8),
                                                               L.StepLR(o, gamma=0.1, step_size=2)], milestones=[3, 6]),
                           lambda lr, g: S.sequential_lr([S.constant_lr(lr, 0.1, 3), S.exponential_lr(lr, 0.8), S.step_lr(lr, 2, 0.1)], [3, 6])),
    "test_chained_lr1": (10, lambda L, o: L.ChainedScheduler([L.StepLR(o, gamma=0.1, step_size=3)]),
                         lambda lr, g: S.chained_scheduler([S.step_lr(lr, 3, 0.1)])),
    "test_chained_lr2": (10, lambda L, o: L.ChainedScheduler([L.LinearLR(o, start_factor=0.4, total_iters=3)]),
                         lambda lr, g: S.chained_scheduler([S.linear_lr(lr, 0.4, total_iters=3)])),
    "test_chained_lr3": (10, lambda L, o: L.ChainedScheduler([L.LinearLR(o, start_factor=0.4, total_iters=3),
                                                              L.MultiStepLR(o, milestones=[4, 8, 10], gamma=0.1)]),
                         lambda lr, g: S.chained_scheduler([S.linear_lr(lr, 0.4, total_iters=3), S.multi_step_lr(lr, [4, 8, 10], 0.1)])),
    "test_chained_lr4": (9, lambda L, o: L.ChainedScheduler([L.ExponentialLR(o, gamma=0.9), L.ConstantLR(o, factor=0.2, total_iters=4),
                                                             L.StepLR(o, gamma=0.1, step_size=3)]),
                         lambda lr, g: S.chained_scheduler([S.exponential_lr(lr, 0.9), S.constant_lr(lr, 0.2, 4), S.step_lr(lr, 3, 0.1)])),
    "test_chained_lr5": (10, lambda L, o: L.ChainedScheduler([L.PolynomialLR(o, power=0.9, total_iters=5), L.ConstantLR(o, factor=0.1)]),
                         lambda lr, g: S.chained_scheduler([S.polynomial_lr(lr, 5, 0.9), S.constant_lr(lr, 0.1)])),
    "test_compound_step_and_multistep_lr": (10, lambda L, o: [L.StepLR(o, gamma=0.1, step_size=3), L.MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9])],
                                            lambda lr, g: S.chained_scheduler([S.step_lr(lr, 3, 0.1), S.multi_step_lr(lr, [2, 5, 9], 0.1)])),
    "test_compound_step_and_exp_lr": (10, lambda L, o: [L.StepLR(o, gamma=0.1, step_size=3), L.ExponentialLR(o, gamma=0.9)],
                                      lambda lr, g: S.chained_scheduler([S.step_lr(lr, 3, 0.1), S.exponential_lr(lr, 0.9)])),
    "test_compound_exp_and_multistep_lr": (10, lambda L, o: [L.MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9]), L.ExponentialLR(o, gamma=0.9)],
                                           lambda lr, g: S.chained_scheduler([S.multi_step_lr(lr, [2, 5, 9], 0.1), S.exponential_lr(lr, 0.9)])),
    "test_compound_exp_and_linearlr": (10, lambda L, o: [L.LinearLR(o, start_factor=0.4, end_factor=0.9, total_iters=4), L.ExponentialLR(o, gamma=0.9)],
                                       lambda lr, g: S.chained_scheduler([S.linear_lr(lr, 0.4, 0.9, 4), S.exponential_lr(lr, 0.9)])),
    "test_compound_step_and_constantlr": (10, lambda L, o: [L.StepLR(o, gamma=0.1, step_size=3), L.ConstantLR(o, factor=0.4, total_iters=4)],
                                          lambda lr, g: S.chained_scheduler([S.step_lr(lr, 3, 0.1), S.constant_lr(lr, 0.4, 4)])),
    "test_compound_linearlr_and_multistep_lr": (10, lambda L, o: [L.MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9]), L.LinearLR(o, start_factor=0.4, total_iters=4)],
                                                lambda lr, g: S.chained_scheduler([S.multi_step_lr(lr, [2, 5, 9], 0.1), S.linear_lr(lr, 0.4, total_iters=4)])),
    "test_compound_cosanneal_and_step_lr": (10, lambda L, o: [L.CosineAnnealingLR(o, T_max=10, eta_min=1e-10), L.StepLR(o, gamma=0.1, step_size=3)],
                                            lambda lr, g: S.chained_scheduler([S.cosine_annealing_lr(lr, 10, 1e-10), S.step_lr(lr, 3, 0.1)])),
    "test_compound_cosanneal_and_multistep_lr": (10, lambda L, o: [L.CosineAnnealingLR(o, T_max=10, eta_min=1e-10), L.MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9])],
                                                 lambda lr, g: S.chained_scheduler([S.cosine_annealing_lr(lr, 10, 1e-10), S.multi_step_lr(lr, [2, 5, 9], 0.1)])),
    "test_compound_cosanneal_and_linearlr": (10, lambda L, o: [L.LinearLR(o, start_factor=0.4, total_iters=4), L.CosineAnnealingLR(o, T_max=10, eta_min=1e-10)],
                                             lambda lr, g: S.chained_scheduler([S.linear_lr(lr, 0.4, total_iters=4), S.cosine_annealing_lr(lr, 10, 1e-10)])),
    "test_compound_cosanneal_and_exp_lr": (10, lambda L, o: [L.CosineAnnealingLR(o, T_max=10, eta_min=1e-10), L.ExponentialLR(o, gamma=0.1)],
                                           lambda lr, g: S.chained_scheduler([S.cosine_annealing_lr(lr, 10, 1e-10), S.exponential_lr(lr, 0.1)])),
    # issue 15.6: eta_min large enough to show (torch adds it at each recursive step), past T_max.
    "compound_cosanneal_eta_min_and_exp_lr (ours)": (
        30, lambda L, o: [L.ExponentialLR(o, gamma=0.9), L.CosineAnnealingLR(o, T_max=10, eta_min=0.01)],
        lambda lr, g: S.chained_scheduler([S.exponential_lr(lr, 0.9), S.cosine_annealing_lr(lr, 10, 0.01)])),
    "test_cycle_lr_triangular_mode_one_lr": (11, lambda L, o: L.CyclicLR(o, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=True,
                                                                           base_momentum=1, max_momentum=5, mode="triangular"),
                                             lambda lr, g: S.cyclic_lr(1, 5, 4, cycle_momentum=True, base_momentum=1, max_momentum=5)),
    "test_cycle_lr_triangular_mode_one_lr_no_momentum": (11, lambda L, o: L.CyclicLR(o, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=False),
                                                         lambda lr, g: S.cyclic_lr(1, 5, 4, cycle_momentum=False)),
    "test_cycle_lr_triangular2_mode_one_lr": (22, lambda L, o: L.CyclicLR(o, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=True,
                                                                            base_momentum=1, max_momentum=5, mode="triangular2"),
                                              lambda lr, g: S.cyclic_lr(1, 5, 4, mode="triangular2", base_momentum=1, max_momentum=5)),
    "test_cycle_lr_exp_range_mode_one_lr": (13, lambda L, o: L.CyclicLR(o, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=True, base_momentum=1,
                                                                          max_momentum=5, mode="exp_range", gamma=0.9),
                                            lambda lr, g: S.cyclic_lr(1, 5, 4, mode="exp_range", gamma=0.9, base_momentum=1, max_momentum=5)),
    "test_cycle_lr_triangular_mode": (11, lambda L, o: L.CyclicLR(o, base_lr=[1, 2], max_lr=[5, 6], step_size_up=4, cycle_momentum=True,
                                                                   base_momentum=[1, 2], max_momentum=[5, 6], mode="triangular"),
                                      lambda lr, g: S.cyclic_lr([1, 2][g], [5, 6][g], 4, base_momentum=[1, 2][g], max_momentum=[5, 6][g])),
    "test_cycle_lr_triangular2_mode": (22, lambda L, o: L.CyclicLR(o, base_lr=[1, 3], max_lr=[5, 7], step_size_up=4, cycle_momentum=True,
                                                                    base_momentum=[1, 3], max_momentum=[5, 7], mode="triangular2"),
                                       lambda lr, g: S.cyclic_lr([1, 3][g], [5, 7][g], 4, mode="triangular2", base_momentum=[1, 3][g], max_momentum=[5, 7][g])),
    "test_cycle_lr_exp_range_mode": (13, lambda L, o: L.CyclicLR(o, base_lr=[1, 5], max_lr=[5, 12], step_size_up=4, cycle_momentum=True,
                                                                  base_momentum=[1, 5], max_momentum=[5, 12], mode="exp_range", gamma=0.9),
                                     lambda lr, g: S.cyclic_lr([1, 5][g], [5, 12][g], 4, mode="exp_range", gamma=0.9, base_momentum=[1, 5][g], max_momentum=[5, 12][g])),
    "test_cycle_lr_triangular_mode_step_size_up_down": (11, lambda L, o: L.CyclicLR(o, base_lr=1, max_lr=5, step_size_up=4, step_size_down=6, cycle_momentum=True,
                                                                                     base_momentum=1, max_momentum=5, mode="triangular"),
                                                        lambda lr, g: S.cyclic_lr(1, 5, 4, 6, base_momentum=1, max_momentum=5)),
    "test_cycle_lr_triangular2_mode_step_size_up_down": (24, lambda L, o: L.CyclicLR(o, base_lr=[1, 3], max_lr=[5, 7], step_size_up=2, step_size_down=6,
                                                                                      cycle_momentum=True, base_momentum=[1, 3], max_momentum=[5, 7], mode="triangular2"),
                                                         lambda lr, g: S.cyclic_lr([1, 3][g], [5, 7][g], 2, 6, mode="triangular2", base_momentum=[1, 3][g], max_momentum=[5, 7][g])),
    "test_cycle_lr_exp_range_mode_step_size_up_down": (13, lambda L, o: L.CyclicLR(o, base_lr=1, max_lr=5, step_size_up=2, step_size_down=6, cycle_momentum=True,
                                                                                    base_momentum=1, max_momentum=5, mode="exp_range", gamma=0.9),
                                                       lambda lr, g: S.cyclic_lr(1, 5, 2, 6, mode="exp_range", gamma=0.9, base_momentum=1, max_momentum=5)),
    "test_onecycle_lr_linear_annealing": (10, lambda L, o: L.OneCycleLR(o, max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10,
                                                                         anneal_strategy="linear"),
                                          lambda lr, g: S.one_cycle_lr(25, total_steps=10, final_div_factor=2, base_momentum=1, max_momentum=22, anneal_strategy="linear")),
    "test_onecycle_lr_cosine_annealing": (10, lambda L, o: L.OneCycleLR(o, max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10),
                                          lambda lr, g: S.one_cycle_lr(25, total_steps=10, final_div_factor=2, base_momentum=1, max_momentum=22)),
    "test_onecycle_lr_linear_annealing_three_phases": (10, lambda L, o: L.OneCycleLR(o, max_lr=25, div_factor=25, base_momentum=1, max_momentum=22, total_steps=10,
                                                                                      anneal_strategy="linear", pct_start=0.4, final_div_factor=4, three_phase=True),
                                                       lambda lr, g: S.one_cycle_lr(25, total_steps=10, div_factor=25, base_momentum=1, max_momentum=22,
                                                                                    anneal_strategy="linear", pct_start=0.4, final_div_factor=4, three_phase=True)),
    "test_CosineAnnealingWarmRestarts_lr1": (100, lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=1, eta_min=1e-10),
                                             lambda lr, g: S.cosine_annealing_warm_restarts(lr, 10, 1, 1e-10)),
    "test_CosineAnnealingWarmRestarts_lr2": (100, lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-10),
                                             lambda lr, g: S.cosine_annealing_warm_restarts(lr, 10, 2, 1e-10)),
    "test_lambda_lr": (10, lambda L, o: L.LambdaLR(o, lr_lambda=[lambda x1: 0.9**x1, lambda x2: 0.8**x2]),
                       lambda lr, g: S.lambda_lr(lr, [lambda x1: 0.9**x1, lambda x2: 0.8**x2][g])),
    "test_multiplicative_lr": (10, lambda L, o: L.MultiplicativeLR(o, lr_lambda=[lambda x1: 0.9, lambda x2: 0.8]),
                               lambda lr, g: S.multiplicative_lr(lr, [lambda x1: 0.9, lambda x2: 0.8][g])),
}

# ReduceLROnPlateau cases: (epochs, kwargs, metrics, a scheduler stepped beside it or None). Every
# group's lr starts at 0.5 (torch's test sets it). Class view only (see the module docstring).
PLATEAU = {
    "test_reduce_lr_on_plateau1": (20, dict(threshold_mode="abs", mode="min", threshold=0.01, patience=5, cooldown=5),
                                   [10 - i * 0.0167 for i in range(20)], None),
    "test_reduce_lr_on_plateau2": (22, dict(patience=5, cooldown=0, threshold_mode="abs", mode="min", threshold=0.1),
                                   [10 - i * 0.0165 for i in range(22)], None),
    "test_reduce_lr_on_plateau3": (22, dict(mode="max", patience=5, cooldown=5, threshold_mode="abs"),
                                   [-0.8] * 2 + [-0.234] * 20, None),
    "test_reduce_lr_on_plateau4": (20, dict(mode="max", patience=3, threshold_mode="rel", threshold=0.1),
                                   [1.5 * (1.025**i) for i in range(20)], None),
    "test_reduce_lr_on_plateau5": (20, dict(mode="max", threshold_mode="rel", threshold=0.1, patience=5, cooldown=5),
                                   [1.5 * (1.005**i) for i in range(20)], None),
    "test_reduce_lr_on_plateau6": (20, dict(mode="min", threshold_mode="rel", threshold=0.1),
                                   [1.5 * (0.85**i) for i in range(20)], None),
    "test_reduce_lr_on_plateau7": (20, dict(mode="min", threshold_mode="rel", threshold=0.1, patience=5, cooldown=5),
                                   [1] * 7 + [0.6] + [0.5] * 12, None),
    "test_reduce_lr_on_plateau8": (20, dict(mode="max", threshold_mode="rel", min_lr=[0.4, 0.3], threshold=0.1, patience=5, cooldown=5),
                                   [1.5 * (1.005**i) for i in range(20)], None),
    "test_compound_reduce_lr_on_plateau1": (10, dict(threshold_mode="abs", mode="min", threshold=0.01, patience=5, cooldown=5),
                                            [10 - i * 0.0167 for i in range(20)], lambda L, o: L.StepLR(o, gamma=0.1, step_size=3)),
    "test_compound_reduce_lr_on_plateau2": (22, dict(patience=5, cooldown=0, threshold_mode="abs", mode="min", threshold=0.1),
                                            [10 - i * 0.0165 for i in range(22)], lambda L, o: L.MultiStepLR(o, gamma=0.1, milestones=[3, 8, 12])),
    "test_compound_reduce_lr_on_plateau3": (22, dict(mode="max", patience=5, cooldown=5, threshold_mode="abs"),
                                            [-0.8] * 2 + [-0.234] * 20, lambda L, o: L.ExponentialLR(o, gamma=0.1)),
    "test_compound_reduce_lr_on_plateau5": (22, dict(patience=5, cooldown=0, threshold_mode="abs", mode="min", threshold=0.1),
                                            [10 - i * 0.0165 for i in range(22)], lambda L, o: L.LinearLR(o, start_factor=0.4, total_iters=4)),
}


def _torch_optimizer(lrs=LRS):
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    return torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": lrs[1]}], lr=lrs[0])


def _our_optimizer(lrs=LRS):
    return optim.SGD([{"params": [jax.numpy.zeros(2)]}, {"params": [jax.numpy.zeros(3)], "lr": lrs[1]}], lr=lrs[0])


def _snapshot(opt):
    return [(float(g["lr"]), float(g["momentum"])) for g in opt.param_groups]


def _run_class(L, opt, build, epochs, metrics=None, plateau=None):
    """[(lr, momentum) per group] after construction and after each of `epochs` steps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's step-order warning: no optimizer step is taken
        schedulers = []
        if plateau is not None:
            schedulers.append(L.ReduceLROnPlateau(opt, **plateau))
        if build is not None:
            built = build(L, opt)
            schedulers += built if isinstance(built, list) else [built]
        out = [_snapshot(opt)]
        for epoch in range(epochs):
            for s in schedulers:
                s.step(metrics[epoch]) if isinstance(s, L.ReduceLROnPlateau) else s.step()
            out.append(_snapshot(opt))
    return np.array(out)


def _assert_close(ours, theirs, rtol=RTOL):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    err = np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)
    err[(ours == theirs)] = 0.0
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err[worst] <= rtol, f"at {worst}: {ours[worst]!r} vs torch's {theirs[worst]!r} (relative {err[worst]:.2e})"


@pytest.mark.parametrize("name", list(CASES))
def test_class_matches_torch(name):
    epochs, build, _ = CASES[name]
    theirs = _run_class(torch_lrs, _torch_optimizer(), build, epochs)
    ours = _run_class(ours_lrs, _our_optimizer(), build, epochs)
    _assert_close(ours, theirs)


@pytest.mark.parametrize("name", list(CASES))
def test_functional_matches_torch(name, x64):
    epochs, build, functional = CASES[name]
    theirs = _run_class(torch_lrs, _torch_optimizer(), build, epochs)
    for g, lr in enumerate(LRS):
        schedule = functional(lr, g)
        values = np.array([float(schedule(n)) for n in range(epochs + 1)])
        _assert_close(values, theirs[:, g, 0], RTOL if epochs < 100 else 1e-10)
        momentum = getattr(schedule, "momentum", None)
        if momentum is not None:
            _assert_close(np.array([float(momentum(n)) for n in range(epochs + 1)]), theirs[:, g, 1])


@pytest.mark.parametrize("name", list(PLATEAU))
def test_plateau_class_matches_torch(name):
    epochs, kwargs, metrics, beside = PLATEAU[name]
    theirs = _run_class(torch_lrs, _torch_optimizer((0.5, 0.5)), beside, epochs, metrics, kwargs)
    ours = _run_class(ours_lrs, _our_optimizer((0.5, 0.5)), beside, epochs, metrics, kwargs)
    _assert_close(ours, theirs)


def test_cases_are_torch_tests():
    """Each case is named after the torch test it transcribes (ours are marked `(ours)`)."""
    names = list(CASES) + list(PLATEAU)
    assert all(n.startswith("test_") or n.endswith("(ours)") for n in names)
    assert len(names) == len(set(names)) >= 60


@pytest.mark.parametrize("name", [n for n in CASES if "cosanneal" in n])
def test_chained_cosine_under_jit_matches_torch(name, x64):
    """A chain holding a cosine_annealing_lr replays torch's recursion: on Python floats for a
    concrete count, in a `lax.fori_loop` for a traced one (issue 15.6); both match torch."""
    epochs, build, functional = CASES[name]
    theirs = _run_class(torch_lrs, _torch_optimizer(), build, epochs)
    schedule = jax.jit(functional(LRS[0], 0))
    _assert_close(np.array([float(schedule(n)) for n in range(epochs + 1)]), theirs[:, 0, 0], 1e-12)
