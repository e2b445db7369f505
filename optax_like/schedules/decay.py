"""Piecewise and smooth decays: StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR.

torch computes these recursively (`group['lr'] *= ratio`); here each is the closed form of that
recursion, `lr * factor(count)`, which agrees with torch's trajectory to ~1e-14 relative in
float64 (a few ulps of rounding per recursive step). Where torch's recursion and torch's own
`_get_closed_form_lr` disagree (`total_iters <= 0`), the function follows the recursion, i.e.
what `scheduler.step()` actually produces. The `*_factor` helpers are the formulas, shared with
the classes in `optax_like.optim.lr_scheduler` (which evaluate them with host math for
`step(epoch)`, torch's closed-form path).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

from optax_like.schedules._common import make_schedule


# ---------------------------------------------------------------- formulas (shared with the classes)
def step_factor(ops, n, step_size, gamma):
    return ops.power(gamma, ops.as_float(n // step_size))


def multi_step_factor(ops, n, sorted_milestones, gamma):
    return ops.power(gamma, ops.as_float(ops.count_le(sorted_milestones, n)))


def constant_factor(ops, n, factor, total_iters):
    return factor + ops.as_float(n >= total_iters) * (1 - factor)


def linear_factor(ops, n, start_factor, end_factor, total_iters):
    return start_factor + (end_factor - start_factor) * ops.minimum(total_iters, n) / total_iters


def exponential_factor(ops, n, gamma):
    return ops.power(gamma, ops.as_float(n))


def polynomial_factor(ops, n, total_iters, power):
    # the clamp is exact on the host (1 - x >= 0 there) and guards XLA's reciprocal rounding
    return ops.power(ops.maximum(0.0, 1.0 - ops.minimum(total_iters, n) / total_iters), power)


# ---------------------------------------------------------------- validation (torch's messages)
def check_constant(factor):
    if factor > 1.0 or factor < 0:
        raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")


def check_linear(start_factor, end_factor):
    if start_factor > 1.0 or start_factor <= 0:
        raise ValueError(
            "Starting multiplicative factor expected to be greater than 0 and less or equal to 1."
        )
    if end_factor > 1.0 or end_factor < 0:
        raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")


# ---------------------------------------------------------------- schedule functions
def step_lr(lr, step_size: int, gamma: float = 0.1):
    """torch.optim.lr_scheduler.StepLR: `lr * gamma ** (count // step_size)`.

    `step_size == 0` raises ZeroDivisionError here; torch raises it at the first `step()`.
    """
    if step_size == 0:
        raise ZeroDivisionError("integer modulo by zero")
    return make_schedule(lambda ops, n: lr * step_factor(ops, n, step_size, gamma), lr)


def multi_step_lr(lr, milestones: Iterable[int], gamma: float = 0.1):
    """torch.optim.lr_scheduler.MultiStepLR: `lr * gamma ** #{milestones <= count}`.

    A milestone repeated k times multiplies by `gamma**k` (torch keeps them in a Counter).
    """
    sorted_milestones = sorted(Counter(milestones).elements())
    return make_schedule(lambda ops, n: lr * multi_step_factor(ops, n, sorted_milestones, gamma), lr)


def constant_lr(lr, factor: float = 1.0 / 3, total_iters: int = 5):
    """torch.optim.lr_scheduler.ConstantLR: `lr * factor` for count < total_iters, then `lr`.

    Follows torch's recursion: with `total_iters <= 0` the factor is applied at count 0 and never
    removed (torch's `_get_closed_form_lr` would say `lr`). torch's recursion divides by
    `factor` at `total_iters`, so `factor == 0` raises ZeroDivisionError there in torch; here the
    value simply returns to `lr`.
    """
    check_constant(factor)
    end = total_iters if total_iters > 0 else math.inf
    return make_schedule(lambda ops, n: lr * constant_factor(ops, n, factor, end), lr)


def linear_lr(lr, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5):
    """torch.optim.lr_scheduler.LinearLR:
    `lr * (start + (end - start) * min(count, total_iters) / total_iters)`.

    With `total_iters <= 0` torch's recursion applies `start_factor` at count 0 and keeps it.
    """
    check_linear(start_factor, end_factor)
    if total_iters <= 0:
        return make_schedule(lambda ops, n: lr * linear_factor(ops, 0 * n, start_factor, end_factor, 1), lr)
    return make_schedule(lambda ops, n: lr * linear_factor(ops, n, start_factor, end_factor, total_iters), lr)


def exponential_lr(lr, gamma: float):
    """torch.optim.lr_scheduler.ExponentialLR: `lr * gamma ** count`."""
    return make_schedule(lambda ops, n: lr * exponential_factor(ops, n, gamma), lr)


def polynomial_lr(lr, total_iters: int = 5, power: float = 1.0):
    """torch.optim.lr_scheduler.PolynomialLR: `lr * (1 - min(count, total_iters) / total_iters) ** power`.

    With `total_iters <= 0` torch's recursion never changes the lr: the schedule is constant.
    """
    if total_iters <= 0:
        return make_schedule(lambda ops, n: lr * ops.as_float(0 * n + 1), lr)
    return make_schedule(lambda ops, n: lr * polynomial_factor(ops, n, total_iters, power), lr)


__all__ = [
    "constant_lr",
    "exponential_lr",
    "linear_lr",
    "multi_step_lr",
    "polynomial_lr",
    "step_lr",
]
