"""What each argument of an optimizer factory is: a number, a flag, or a compile-time option.

torch's optimizers take three kinds of arguments, and every view of a factory (the function
itself, `inject_hyperparams`, the `optim` classes) must treat them alike:

- **numbers** (`lr`, `betas`, `weight_decay`, `momentum`, ...): floats in torch's float64 host
  math, whatever Python type the default or the user's value has (`weight_decay=0` is the float
  0.0; `momentum=1` is 1.0). Where they are traced they are non-weak floating scalars; an int
  default never makes an integer slot (which would silently truncate `weight_decay=1e-2` to 0).
- **flags** (`amsgrad`, `nesterov`, `maximize`, `centered`, ...; the default is a bool):
  compile-time Python bools. Anything torch's `if flag:` accepts as a scalar (0/1, NumPy
  scalars, 0-d or one-element arrays) is converted with `bool`; a traced value cannot choose a
  program and is a TypeError naming the argument.
- **static** options: integer counts that shape the program (Muon's `ns_steps`, L-BFGS's
  `max_iter`), declared by the factory with `@integer_args(...)`, and everything else that is
  not a number (None, strings, callables, tuples holding None).

The kind is read from the factory's signature (its defaults) and its `integer_args`
declaration, never from the value a user passes.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable

import jax
import numpy as np

from optax_like.core import validation

NUMBER, FLAG, STATIC = "number", "flag", "static"

_INTEGER_ARGS = "__optax_like_integer_args__"


def integer_args(*names: str) -> Callable:
    """Declares integer arguments of an optimizer factory that are compile-time constants
    (iteration counts: the program's shape depends on them), so views never trace them."""

    def mark(factory):
        setattr(factory, _INTEGER_ARGS, tuple(names))
        return factory

    return mark


def _is_number(x: Any) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return False
    return isinstance(x, (numbers.Real, np.integer, np.floating))


def argument_kinds(factory: Callable) -> dict[str, str]:
    """`{argument name: NUMBER | FLAG | STATIC}` for an optimizer factory, from its defaults."""
    cached = getattr(factory, "__optax_like_kinds__", None)
    if cached is not None:
        return cached
    integers = set(getattr(factory, _INTEGER_ARGS, ()))
    kinds = {}
    for name, p in inspect.signature(factory).parameters.items():
        default = p.default
        if name in integers:
            kinds[name] = STATIC
        elif isinstance(default, bool):
            kinds[name] = FLAG
        elif _is_number(default) or (
            isinstance(default, tuple) and default and all(_is_number(v) for v in default)
        ):
            kinds[name] = NUMBER
        else:
            kinds[name] = STATIC
    try:
        factory.__optax_like_kinds__ = kinds
    except (AttributeError, TypeError):
        pass
    return kinds


def as_flag(value: Any, name: str) -> bool:
    """A flag argument as a Python bool, as torch's `if flag:` reads it; TypeError otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None:
        return False
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} is a compile-time flag (it chooses the program), but got a traced value; "
            f"pass a Python bool (e.g. {name}=True)."
        )
    if _is_number(value):
        return bool(value)
    if isinstance(value, (jax.Array, np.ndarray)) and np.size(value) == 1 and (
            np.issubdtype(np.asarray(value).dtype, np.number) or np.asarray(value).dtype == bool):
        return bool(np.asarray(value).reshape(()))
    raise TypeError(f"{name} must be a bool (a flag), but got {value!r} of type {type(value).__name__}.")


def as_number(value: Any, name: str) -> float:
    """A concrete numeric argument as a Python float (float64); TypeError naming it otherwise.
    Scalars are read by `validation.concrete_value`; this adds torch tensors and the errors."""
    if hasattr(value, "detach"):  # a torch tensor, e.g. lr=torch.tensor(0.01) in a loaded group
        value = value.detach().cpu().numpy()
    if isinstance(value, (jax.Array, np.ndarray)):
        dtype = np.dtype(value.dtype)
        if np.size(value) == 1 and np.issubdtype(dtype, np.complexfloating):
            raise TypeError(f"{name} must be a real number, but got the complex value {value!r}.")
        numeric = np.issubdtype(dtype, np.number) or dtype == bool
    else:
        numeric = True
    number = validation.concrete_value(value) if numeric else None
    if number is None:
        raise TypeError(f"{name} must be a real number, but got {value!r} of type {type(value).__name__}.")
    return number
