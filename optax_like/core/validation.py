"""Argument checks with torch's messages, applied only to values known at construction.

A hyperparameter may be a Python/NumPy scalar, a concrete jax scalar, a schedule (callable),
or a tracer (inside `inject_hyperparams` or the stateful adapter). Only concrete values are
checked; a schedule's values and traced values are the caller's responsibility.

A jax.Array (or NumPy array) hyperparameter plays torch's Tensor hyperparameter: a value that
can change without rebuilding the program. It must be a real 0-d array: more than one element
raises torch's `ValueError("Tensor lr must be 1-element")`; a one-element array of higher rank
raises a ValueError in the functional factories, as it would broadcast every update to its rank
(the `optim` classes squeeze it first, as torch's `_to_scalar` does). Its value is checked like
a float, and messages show a 0-d array as torch shows a 0-d Tensor (`float(x)`: `Invalid
learning rate: -0.10000000149011612` for float32 -0.1). Of torch's kernel-specific Tensor rules,
Adam/AdamW's constructor check is kept (`lr as a Tensor is not supported for capturable=False
and foreach=True`): the same arguments fail the same way, although `foreach` picks no kernel here.
Wrong types raise a TypeError that names the argument (torch raises an anonymous
`'<=' not supported between ...`); pairs (`betas`, `etas`, ...) raise torch's IndexError
when too short, a TypeError when too long (torch fails unpacking them at the first step).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax import core as jax_core
import numpy as np

from optax_like.core import hyperparams
# The kinds of values (one classifier, core.hyperparams); re-exported for the factories.
from optax_like.core.hyperparams import concrete_value, is_array, is_precise


def check_hyperparam(value: Any, name: str, *, allow_schedule: bool = True) -> None:
    """Raises a TypeError naming `name` unless `value` is a real scalar (or schedule, or tracer)."""
    if callable(value) and not isinstance(value, jax.Array):
        if allow_schedule:
            return
        raise TypeError(f"{name} must be a number, not a schedule ({value!r}).")
    if isinstance(value, jax_core.Tracer) or is_precise(value):
        if value.ndim != 0:
            raise TypeError(f"{name} must be a scalar, got a traced array of shape {value.shape}.")
        return
    if is_array(value):
        if np.size(value) != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        if np.iscomplexobj(value) or not np.issubdtype(np.asarray(value).dtype, np.number):
            raise TypeError(f"{name} must be a real number, got an array of dtype {value.dtype}.")
        if np.ndim(value) != 0:
            raise ValueError(
                f"{name} must be a scalar (0-d) array, got shape {np.shape(value)}: pass "
                f"{name}.reshape(()) (a one-element array of higher rank would broadcast the updates)."
            )
        return
    if hyperparams.is_number(value) or isinstance(value, bool):
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
        raise ValueError(message.format(display(value)))


def display(value: Any) -> Any:
    """`value` as torch's f-string shows it: a 0-d array as its Python scalar (Tensor.__format__)."""
    if is_array(value, concrete=True) and np.ndim(value) == 0:
        return np.asarray(value).item()
    return value


def check_pair(value: Any, name: str, what: str, *, indexed: bool = True) -> None:
    """`value` must be a tuple or list of two entries (`what` describes them, e.g. "(beta1, beta2)").

    Too short: IndexError where torch's constructor indexes the pair (`indexed`: torch's
    `tuple index out of range`). Otherwise (not a sequence, too long, too short where torch only
    unpacks it at the first step): TypeError.
    """
    message = f"{name} must be a pair {what}, got {value!r}."
    if isinstance(value, (tuple, list)) and len(value) < 2 and indexed:
        raise IndexError(message)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(message)


def is_concrete_array(x: Any) -> bool:
    """Whether `x` is a concrete jax/NumPy array: what plays torch's Tensor hyperparameter."""
    return is_array(x, concrete=True)


def check_float_or_tensor_pair(values: Any) -> None:
    """torch.optim.Adam's rule: betas are both floats or both Tensors (here: arrays).

    Floats are Python floats and NumPy floating scalars (torch rejects `np.float32(0.9)`; this
    accepts it). Ints (`betas=(0, 0.99)`) and bools are rejected, as torch rejects them. A
    schedule (callable) is an extension torch lacks and pairs with either kind.
    """
    kinds = set()
    for x in values:
        tensor_like = is_array(x) or is_precise(x)
        if callable(x) and not tensor_like:
            continue
        if tensor_like:
            kinds.add("tensor")
        elif isinstance(x, (float, np.floating)):
            kinds.add("float")
        else:
            kinds.add("other")
    if "other" in kinds or len(kinds) > 1:
        raise ValueError("betas must be either both floats or both Tensors")


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
    if hyperparams.is_number(value, complex=True) or isinstance(value, bool):
        return float(value) != 0
    return True
