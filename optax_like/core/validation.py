"""Argument checks with torch's messages, applied only to values known at construction.

A hyperparameter may be a Python/NumPy scalar, a concrete jax scalar, a schedule (callable),
or a tracer (inside `inject_hyperparams` or the stateful adapter). Only concrete values are
checked; a schedule's values and traced values are the caller's responsibility.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import jax
import numpy as np


def concrete_value(x: Any) -> Optional[float]:
    """`float(x)` for a concrete real scalar, None for schedules and tracers.

    Raises a TypeError naming nothing for non-numeric input; callers use `check_hyperparam`.
    """
    if isinstance(x, (bool, np.bool_)):
        return float(x)
    if isinstance(x, (numbers.Real, np.integer, np.floating)):
        return float(x)
    if isinstance(x, (np.ndarray, jax.Array)) and not isinstance(x, jax.core.Tracer):
        if np.size(x) == 1 and not np.iscomplexobj(x):
            return float(np.asarray(x).reshape(()))
    return None


def check_hyperparam(value: Any, name: str, *, allow_schedule: bool = True) -> None:
    """Raises a TypeError naming `name` unless `value` is a real scalar (or schedule, or tracer)."""
    if callable(value) and not isinstance(value, jax.Array):
        if allow_schedule:
            return
        raise TypeError(f"{name} must be a number, not a schedule ({value!r}).")
    if isinstance(value, jax.core.Tracer):
        if value.ndim != 0:
            raise TypeError(f"{name} must be a scalar, got a traced array of shape {value.shape}.")
        return
    if isinstance(value, (np.ndarray, jax.Array)):
        if np.size(value) != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        if np.iscomplexobj(value) or not np.issubdtype(np.asarray(value).dtype, np.number):
            raise TypeError(f"{name} must be a real number, got an array of dtype {value.dtype}.")
        return
    if isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(value, (str, bytes)):
        return
    raise TypeError(f"{name} must be a real number{' or a schedule' if allow_schedule else ''}, got {type(value).__name__} {value!r}.")


def check(value: Any, name: str, predicate: Callable[[float], bool], message: str) -> None:
    """Type-checks `value`, then raises ValueError(message) when `predicate(value)` is False.

    `message` is a format string with `{}` standing for the value as the user gave it
    (torch's `f"Invalid learning rate: {lr}"`).
    """
    check_hyperparam(value, name)
    v = concrete_value(value)
    if v is not None and not predicate(v):
        raise ValueError(message.format(value))


def nonnegative(v: float) -> bool:
    return 0.0 <= v


def in_unit_interval(v: float) -> bool:
    """0 <= v < 1 (torch's beta check)."""
    return 0.0 <= v < 1.0


def maybe_nonzero(value: Any) -> bool:
    """False only for a host zero (Python/NumPy scalar): other values keep their block in a chain.

    A chain's structure must not depend on the value of a jax array: `inject_hyperparams` and
    the adapter build the chain once with concrete arrays (init) and once with tracers (update),
    and both must give the same state structure.
    """
    if isinstance(value, (numbers.Number, np.number)) and not isinstance(value, jax.Array):
        return float(value) != 0
    return True
