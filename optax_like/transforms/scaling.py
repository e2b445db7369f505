"""Scaling blocks: `scale`, `scale_by_learning_rate`, `scale_by_schedule`, `negate`."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import (
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    Schedule,
    stateless,
)
from optax_like.core.tree import map_params
from optax_like.core.torch_layout import declare_torch_state, STEPS_TAKEN


def _scaled(u, factor):
    dtype = numerics.compute_dtype(u.dtype)
    return jax.lax.mul(numerics.scalar(factor, dtype), numerics.cast(u, dtype))  # lax: see numerics.cast


def scale(step_size) -> GradientTransformation:
    """`u <- step_size * u`. `step_size` is a float or a traced scalar."""
    return stateless(lambda updates, params: map_params(lambda u: _scaled(u, step_size), updates))


def negate() -> GradientTransformation:
    """`u <- -u`: torch's `maximize=True` (ascend the objective) when placed first in a chain."""
    return stateless(lambda updates, params: map_params(jnp.negative, updates))


class ScaleByScheduleState(NamedTuple):
    count: jax.Array  # number of updates applied so far (int32)


declare_torch_state(
    ScaleByScheduleState,
    internal={"count": STEPS_TAKEN},
)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """`u <- step_size_fn(count) * u`, count = updates applied so far (0 on the first update)."""

    def init(params):
        del params
        return ScaleByScheduleState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        factor = step_size_fn(state.count)
        updates = map_params(lambda u: _scaled(u, factor), updates)
        return updates, ScaleByScheduleState(numerics.safe_increment(state.count))

    return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True) -> GradientTransformation:
    """`u <- -lr * u` (descent); `lr` is a float, a traced scalar, or a schedule `count -> lr`.

    The product is formed as torch's `param.add_(grad, alpha=-lr)` forms it: `(-lr) * g`, with
    `-lr` rounded once to the compute dtype.
    """
    sign = -1.0 if flip_sign else 1.0
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    if numerics.is_host_scalar(learning_rate):
        return scale(sign * float(learning_rate))
    return scale(sign * jnp.asarray(numerics.plain(learning_rate)))


__all__ = [
    "EmptyState",
    "ScaleByScheduleState",
    "negate",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
]
