"""Cosine schedules: CosineAnnealingLR and CosineAnnealingWarmRestarts."""

from __future__ import annotations

import numpy as np

from optax_like.schedules._common import make_schedule


# ---------------------------------------------------------------- formulas (shared with the classes)
def cosine_value(ops, t, base_lr, eta_min, period):
    """`eta_min + (base_lr - eta_min) * (1 + cos(pi * t / period)) / 2` (torch's closed form)."""
    return eta_min + (base_lr - eta_min) * (1 + ops.cos(ops.pi * t / period)) / 2


def check_warm_restarts(T_0, T_mult, eta_min):
    if T_0 <= 0 or not isinstance(T_0, int):
        raise ValueError(f"Expected positive integer T_0, but got {T_0}")
    if T_mult < 1 or not isinstance(T_mult, int):
        raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
    if not isinstance(eta_min, (float, int)):
        raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")


# Restart boundaries are tabulated up to this count (int32 step counters).
_MAX_COUNT = 2**31 - 1


def warm_restart_position(ops, n, T_0, T_mult):
    """(T_cur, T_i) after `n` plain `step()`s of CosineAnnealingWarmRestarts, in closed form.

    Cycle k starts at `T_0 * (T_mult**k - 1) / (T_mult - 1)` and lasts `T_0 * T_mult**k`; the
    starts are tabulated as exact integers, so no logarithm rounds a boundary the wrong way.
    """
    if T_mult == 1:
        return ops.as_float(n % T_0), T_0
    starts, lengths = [0], [T_0]
    while starts[-1] + lengths[-1] <= _MAX_COUNT:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * T_mult)
    k = ops.count_le(starts, n) - 1
    t_cur = ops.as_float(n - ops.gather(starts, k))
    return t_cur, ops.as_float(ops.gather(lengths, k))


# ---------------------------------------------------------------- schedule functions
def cosine_annealing_lr(lr, T_max: int, eta_min: float = 0.0):
    """torch.optim.lr_scheduler.CosineAnnealingLR, including its behaviour past `T_max`:

        value(n) = eta_min + (lr - eta_min) * (1 + cos(pi * n / T_max)) / 2

    for every n: torch's recursive form (with its additive step at n = T_max + 1 (mod 2 T_max))
    keeps following this cosine, so the lr climbs back to `lr` at 2 T_max, and so on (optax's
    `cosine_decay_schedule` stays at the floor instead). For an integer `T_max` the count is
    reduced modulo `2 T_max` before the cosine, which keeps float32 accurate at large counts
    (where `2 T_max` does not fit the count's integer dtype, every count is below it: no
    reduction). Agrees with torch's recursion to ~1e-13 relative in float64 (its rounding
    accumulates).
    """
    # `torch_recursion`: what chained_scheduler needs to replay torch's recursive step, which
    # is affine (not a factor) in the current lr: eta_min is added at every step.
    recursion = dict(torch_recursion=(T_max, eta_min))
    if isinstance(T_max, int) and T_max > 0:
        # float(T_max): a Python int beyond int32 cannot enter jnp arithmetic (the same value in
        # float32 or float64 arithmetic as the int converted by jnp)
        return make_schedule(
            lambda ops, n: cosine_value(ops, ops.as_float(_mod(n, 2 * T_max)), lr, eta_min, float(T_max)),
            lr, **recursion)
    return make_schedule(lambda ops, n: cosine_value(ops, ops.as_float(n), lr, eta_min, T_max), lr, **recursion)


def _mod(n, period: int):
    """`n % period` for an integer count `n` (a Python int or an integer array); `n` itself
    when `period` exceeds the largest value of `n`'s dtype (every count is below it, and
    `period` as that dtype would overflow)."""
    dtype = getattr(n, "dtype", None)
    if dtype is not None and period > int(np.iinfo(dtype).max):
        return n
    return n % period


def cosine_annealing_warm_restarts(lr, T_0: int, T_mult: int = 1, eta_min: float = 0.0):
    """torch.optim.lr_scheduler.CosineAnnealingWarmRestarts (SGDR) after `count` plain steps:

        value(n) = eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

    with `T_cur` the steps since the last restart and `T_i = T_0 * T_mult**k` the current
    cycle's length (cycle boundaries at T_0 (T_mult**k - 1) / (T_mult - 1), exact integers).
    torch's fractional `step(epoch=1.5)` is a feature of the class only.
    """
    check_warm_restarts(T_0, T_mult, eta_min)

    def formula(ops, n):
        t_cur, t_i = warm_restart_position(ops, n, T_0, T_mult)
        return cosine_value(ops, t_cur, lr, eta_min, t_i)

    return make_schedule(formula, lr)


__all__ = ["cosine_annealing_lr", "cosine_annealing_warm_restarts"]
