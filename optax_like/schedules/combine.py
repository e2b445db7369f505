"""Schedule combinators: SequentialLR and ChainedScheduler."""

from __future__ import annotations

import bisect
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core import numerics
from optax_like.schedules._common import JAX, concrete_count


def check_sequential(schedulers, milestones, name="SequentialLR"):
    if len(schedulers) < 1:
        raise ValueError(f"{name} expects at least one scheduler, but got no scheduler.")
    if len(milestones) != len(schedulers) - 1:
        raise ValueError(
            "Sequential Schedulers expects number of schedulers provided to be one more than the "
            f"number of milestone points, but got number of schedulers {len(schedulers)} and the "
            f"number of milestones to be equal to {len(milestones)}"
        )


def sequential_lr(schedules: Sequence[Callable], milestones: Sequence[int]):
    """torch.optim.lr_scheduler.SequentialLR: `schedules[i](count - milestones[i-1])` for
    `milestones[i-1] <= count < milestones[i]` (i = bisect_right(milestones, count)).

    Each schedule restarts from its own count 0 at its milestone, as torch's `_update_lr(0)`
    does. Build all of them with the same `lr` (torch's schedulers share the group's
    `initial_lr`). One difference: torch restarts a MultiplicativeLR from the lr the previous
    scheduler left, times `lr_lambda(0)`; `multiplicative_lr` restarts from its own `lr`.
    Only the active schedule is evaluated (`lax.switch`; plain Python for a concrete count).
    """
    schedules = list(schedules)
    milestones = list(milestones)
    check_sequential(schedules, milestones)
    offsets = [0] + milestones

    def schedule(count):
        concrete = concrete_count(count)
        if concrete is not None:
            i = bisect.bisect_right(milestones, concrete)
            return jnp.asarray(schedules[i](concrete - offsets[i])).astype(numerics.float_dtype())
        n = jnp.asarray(count)
        index = JAX.count_le(milestones, n).astype(jnp.int32)
        branches = [
            (lambda m, s=s, o=o: jnp.asarray(s(m - o)).astype(numerics.float_dtype()))
            for s, o in zip(schedules, offsets)
        ]
        return jax.lax.switch(index, branches, n)

    schedule.initial_lr = getattr(schedules[0], "initial_lr", None)
    return schedule


def chained_scheduler(schedules: Sequence[Callable]):
    """torch.optim.lr_scheduler.ChainedScheduler: the schedulers' factors multiply,

        value(n) = lr * prod_i (schedules[i](n) / schedules[i].initial_lr)

    which is torch's result when the chained schedulers are its multiplicative (recursive) ones
    (StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR, MultiplicativeLR).
    torch's CosineAnnealingLR step is affine in the current lr, not a factor:
    `lr <- eta_min + (lr - eta_min) * (1 + cos(pi n / T_max)) / (1 + cos(pi (n - 1) / T_max))`,
    and `lr <- lr + (initial_lr - eta_min) (1 - cos(pi / T_max)) / 2` at its restart steps, so
    in a chain eta_min is added at every step, after the other schedulers' factors. A chain of
    several schedules containing a `cosine_annealing_lr` replays torch's recursion step by step
    (each schedule's step in the chain's order, the others as the factor
    `schedule(n) / schedule(n - 1)`): O(count) work per evaluation, in Python floats as torch
    for a concrete count, a `lax.fori_loop` under jit.
    torch's closed-form schedulers (LambdaLR, CyclicLR, OneCycleLR, CosineAnnealingWarmRestarts,
    SWALR) overwrite the lr instead of scaling it, so a chain containing them is order-dependent
    in torch and not reproduced here. Each schedule must carry `initial_lr` (all of
    `optax_like.schedules` do); `lr` is the first one's.
    """
    schedules = list(schedules)
    if len(schedules) < 1:
        raise ValueError("ChainedScheduler expects at least one scheduler to be chained, but got no scheduler.")
    for i, s in enumerate(schedules):
        if not callable(s) or getattr(s, "initial_lr", None) is None:
            raise TypeError(
                f"ChainedScheduler at index {i} should be a schedule from optax_like.schedules "
                "(a callable with an `initial_lr` attribute)."
            )
    lr = schedules[0].initial_lr

    def product(count):
        value = jnp.asarray(schedules[0](count))
        for s in schedules[1:]:
            value = value * (s(count) / s.initial_lr)
        return value.astype(numerics.float_dtype())

    if len(schedules) == 1 or not any(hasattr(s, "torch_recursion") for s in schedules):
        product.initial_lr = lr
        return product

    def torch_step(s, n, value):
        """Scheduler `s`'s torch step at count n >= 1, applied to the current lr `value`."""
        dtype = value.dtype
        if not hasattr(s, "torch_recursion"):
            prev, cur = jnp.asarray(s(n - 1), dtype), jnp.asarray(s(n), dtype)
            return value * jnp.where(prev == 0, jnp.ones((), dtype), cur / jnp.where(prev == 0, 1, prev))
        T_max, eta_min = s.torch_recursion
        nf = n.astype(dtype)
        period = float(T_max)  # a Python int beyond int32 cannot enter jnp arithmetic
        if isinstance(T_max, int) and T_max > int(np.iinfo(n.dtype).max):
            restart = jnp.zeros((), bool)  # n - 1 < T_max for every count (T_max overflows n's dtype)
        else:
            restart = (n - 1 - T_max) % (2 * T_max) == 0
        added = value + (s.initial_lr - eta_min) * (1 - jnp.cos(jnp.pi / period)) / 2
        ratio = (1 + jnp.cos(jnp.pi * nf / period)) / (1 + jnp.cos(jnp.pi * (nf - 1) / period))
        return jnp.where(restart, added, ratio * (value - eta_min) + eta_min)

    def host_recursion(count):
        """torch's own arithmetic: Python floats, for a concrete count."""
        value = float(product(0))
        previous = [float(s(0)) for s in schedules]
        for n in range(1, count + 1):
            for i, s in enumerate(schedules):
                if hasattr(s, "torch_recursion"):
                    T_max, eta_min = s.torch_recursion
                    if (n - 1 - T_max) % (2 * T_max) == 0:
                        value = value + (s.initial_lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
                    else:
                        value = ((1 + math.cos(math.pi * n / T_max)) / (1 + math.cos(math.pi * (n - 1) / T_max))
                                 * (value - eta_min) + eta_min)
                    continue
                current = float(s(n))
                if previous[i] != 0:  # a factor stuck at 0 keeps the lr (torch's recursions)
                    value = value * (current / previous[i])
                previous[i] = current
        return jnp.asarray(value, numerics.float_dtype())

    def recursive(count):
        def body(n, value):
            for s in schedules:
                value = torch_step(s, n, value)
            return value

        concrete = concrete_count(count)
        if concrete is not None:
            return host_recursion(concrete)
        n = jnp.asarray(count)
        if not jnp.issubdtype(n.dtype, jnp.integer):
            n = n.astype(jnp.asarray(0).dtype)
        return jax.lax.fori_loop(jnp.ones((), n.dtype), n + 1, body, product(0)).astype(numerics.float_dtype())

    recursive.initial_lr = lr
    return recursive


__all__ = ["chained_scheduler", "sequential_lr"]
