"""Plumbing shared by the schedule functions and the torch-style scheduler classes.

Every closed-form formula is written once, over an `ops` namespace:

- `HOST`: Python float64 math (`math.cos`, `min`, `a if c else b`), used by the classes in
  `optax_like.optim.lr_scheduler` so that their numbers are bit-identical to torch's;
- `JAX`: `jnp` math on a traced count, used by the schedule functions (jit, scan, vmap).

`lazy_where(c, f_true, f_false)` evaluates only the chosen branch on the host (so a division by
zero raises exactly where torch's would) and both branches under jax (where it yields inf/nan).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import core as jax_core
import numpy as np

from optax_like.core import numerics


class HostOps:
    """Python scalar math: the same operations torch's schedulers do on the host."""

    pi = math.pi
    cos = staticmethod(math.cos)
    floor = staticmethod(math.floor)
    minimum = staticmethod(min)
    maximum = staticmethod(max)

    @staticmethod
    def where(c, a, b):
        return a if c else b

    @staticmethod
    def lazy_where(c, f_true: Callable[[], Any], f_false: Callable[[], Any]):
        return f_true() if c else f_false()

    @staticmethod
    def power(x, y):
        return x**y

    @staticmethod
    def as_float(n):
        return n  # torch mixes its int `last_epoch` into float expressions as is

    @staticmethod
    def count_le(sorted_values, n):
        """How many of `sorted_values` are <= n (`bisect_right`)."""
        return bisect.bisect_right(sorted_values, n)

    @staticmethod
    def gather(values, i):
        return values[i]


class JaxOps:
    """jnp math on (possibly traced) scalars, in the default float dtype."""

    pi = math.pi
    cos = staticmethod(jnp.cos)
    floor = staticmethod(jnp.floor)
    minimum = staticmethod(jnp.minimum)
    maximum = staticmethod(jnp.maximum)
    where = staticmethod(jnp.where)

    @staticmethod
    def lazy_where(c, f_true, f_false):
        return jnp.where(c, f_true(), f_false())

    @staticmethod
    def power(x, y):
        """`x ** y`; for a positive host-scalar `x` as `exp(y * log(x))` with `log(x)` taken in
        float64 on the host, so float32 does not compound the rounding of `x` over large `y`."""
        if numerics.is_host_scalar(x) and float(x) > 0:
            dtype = numerics.float_dtype()
            return jnp.exp(jnp.asarray(y).astype(dtype) * jnp.asarray(np.log(np.float64(x)), dtype))
        return jnp.power(x, y)

    @staticmethod
    def as_float(n):
        return jnp.asarray(n).astype(numerics.float_dtype())

    @staticmethod
    def count_le(sorted_values, n):
        if len(sorted_values) == 0:
            return jnp.zeros((), jnp.asarray(n).dtype)
        return jnp.sum(jnp.asarray(sorted_values) <= n).astype(jnp.asarray(n).dtype)

    @staticmethod
    def gather(values, i):
        return jnp.asarray(values)[i]


HOST = HostOps()
JAX = JaxOps()


def concrete_count(count) -> int | None:
    """`count` as a Python int when it is concrete (not traced), else None."""
    if isinstance(count, jax_core.Tracer):
        return None
    try:
        return int(count)
    except (TypeError, ValueError):
        return None


def make_schedule(formula: Callable, initial_lr: Any, **attributes) -> Callable:
    """A schedule `count -> value` from `formula(ops, n)`, evaluated with jnp ops.

    The value is an array of the default float dtype (float64 under a scoped x64). The returned
    function carries `initial_lr` (the lr at count 0 before any factor, torch's `base_lrs`)
    and any extra `attributes` (e.g. `momentum`, the companion momentum schedule).
    """

    def schedule(count):
        n = jnp.asarray(count)
        if not jnp.issubdtype(n.dtype, jnp.integer):
            n = n.astype(jnp.asarray(0).dtype)  # the default int dtype
        return jnp.asarray(formula(JAX, n)).astype(numerics.float_dtype())

    schedule.initial_lr = initial_lr
    for name, value in attributes.items():
        setattr(schedule, name, value)
    return schedule
