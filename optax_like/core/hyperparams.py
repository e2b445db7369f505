"""What each argument of an optimizer factory is: a number, a flag, or a compile-time option;
and what kind of value a hyperparameter is (the one classifier of values).

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
  not a number (None, strings, callables, tuples holding None). A number whose default is None
  (timm's Adafactor `lr=None`: relative step sizes) is declared with `@number_args(...)`: its
  None is a compile-time option, a number given is traced as any number.
- **value**-kind arguments: those without a default (`scale(step_size)`,
  `clip_by_global_norm(max_norm)`, `trace(momentum)`), whose signature says nothing. The
  value decides, as optax's `inject_hyperparams` decides: a number (or a tuple of numbers) is
  a number, a bool or anything else is static.

The kind is read from the factory's signature (its defaults) and its `integer_args`
declaration, never from the value a user passes (but for arguments without a default). `split_arguments` then sorts the values of one
call into traced numbers, compile-time options and schedules, for `inject_hyperparams` and the
`optim` adapter alike.

Kinds of values. Every "what is this value" question of the library is answered by the
predicates below (validation, numerics and the adapter re-export or call them). The callers
differ on purpose in what they count, and the differences live here, as parameters:

- `is_number(x)`: a real Python/NumPy scalar, never a bool; no arrays, complex values,
  tracers or tensors (`argument_kinds` reading defaults, `as_flag`, `check_hyperparam`).
- `is_number(x, arrays="0d", complex=True)`: also complex scalars and 0-d numeric arrays,
  concrete or traced, but no array of higher rank, no bool array and no PRNG key
  (`inject_hyperparams`: what it stores).
- `is_number(x, arrays="one")`: also a concrete one-element array of any rank and dtype and a
  torch tensor, no tracers (the adapter: an entry fed to its step as a float, which `as_number`
  then reads or refuses).
- `is_number_tuple(x, **same)`: a non-empty tuple or list of those.
- `is_host_scalar(x)`: every Python/NumPy scalar, bools and complex included, and every NumPy
  array: host values, whose math may run in float64 (`numerics`); no jax arrays or tracers.
- `is_python_number(x)`: `is_host_scalar`, or the adapter's `PreciseScalar` (torch would hold a
  Python number there, not a Tensor).
- `concrete_value(x)`: `float(x)` for a bool, a real scalar or a concrete one-element real array;
  None for complex values, tracers, schedules, tensors.
- `is_array(x)` (`concrete=True`: not a tracer) and `is_precise(x)` (`numerics.PreciseScalar`).

("real scalar": Python int/float and `numbers.Real` types, NumPy integer and floating scalars.)
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Iterable, Optional

import jax
from jax import core as jax_core
import numpy as np

NUMBER, FLAG, STATIC, VALUE = "number", "flag", "static", "value"

_INTEGER_ARGS = "__optax_like_integer_args__"
_NUMBER_ARGS = "__optax_like_number_args__"
_REAL = (numbers.Real, np.integer, np.floating)
_SCALAR = (numbers.Number, np.number)
_ARRAYS = (jax.Array, np.ndarray)
_HOST = (numbers.Number, np.number, np.ndarray, np.bool_)


# --------------------------------------------------------------------------- kinds of values
def is_number(x: Any, *, arrays: Optional[str] = None, complex: bool = False) -> bool:
    """Whether `x` is a number (never a bool): a real Python/NumPy scalar (`complex`: any
    scalar); `arrays="0d"`: also a 0-d numeric array (not bool, not a PRNG key), concrete or
    traced; `arrays="one"`: also a concrete one-element array or a torch tensor. See the table
    in the module docstring."""
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, _SCALAR if complex else _REAL):
        return True
    if arrays == "0d":
        return isinstance(x, _ARRAYS) and np.ndim(x) == 0 and _is_numeric_dtype(x.dtype)
    if arrays == "one":
        return hasattr(x, "detach") or (is_array(x, concrete=True) and np.size(x) == 1)
    return False


def _is_numeric_dtype(dtype: Any) -> bool:
    """An int, float or complex dtype (not bool, not an extended dtype such as a PRNG key's)."""
    try:
        return bool(jax.numpy.issubdtype(dtype, jax.numpy.number))
    except TypeError:
        return False


def is_number_tuple(x: Any, **kind: Any) -> bool:
    """Whether `x` is a non-empty tuple or list of numbers (`is_number(v, **kind)` each)."""
    return isinstance(x, (tuple, list)) and len(x) > 0 and all(is_number(v, **kind) for v in x)


def is_array(x: Any, *, concrete: bool = False) -> bool:
    """Whether `x` is a jax or NumPy array (`concrete`: not a tracer); a concrete array plays
    torch's Tensor hyperparameter."""
    return isinstance(x, _ARRAYS) and not (concrete and isinstance(x, jax_core.Tracer))


def is_precise(x: Any) -> bool:
    """Whether `x` is a `numerics.PreciseScalar` (a traced hyperparameter fed by the adapter)."""
    from optax_like.core.numerics import PreciseScalar  # numerics imports this module

    return isinstance(x, PreciseScalar)


def is_host_scalar(x: Any) -> bool:
    """True for Python/NumPy scalars and NumPy arrays (host values, whose arithmetic may be done
    in float64 before casting); False for jax arrays and tracers."""
    return isinstance(x, _HOST) and not isinstance(x, jax.Array)


def is_python_number(x: Any) -> bool:
    """True for a hyperparameter that torch would hold as a Python number: a host scalar, or a
    traced value the adapter passes for one (`PreciseScalar`); False for an array (a Tensor).
    torch rounds a step scalar formed with a Tensor lr in the lr's dtype (Adam's and NAdam's
    `differentiable=True` paths, SparseAdam)."""
    return is_host_scalar(x) or is_precise(x)


def concrete_value(x: Any) -> Optional[float]:
    """`float(x)` for a concrete real scalar (bools, one-element real arrays included), None for
    schedules, tracers and complex values.

    Raises a TypeError naming nothing for non-numeric input; callers use `check_hyperparam`.
    """
    if isinstance(x, (bool, np.bool_)) or is_number(x):
        return float(x)
    if is_array(x, concrete=True) and np.size(x) == 1 and not np.iscomplexobj(x):
        return float(np.asarray(x).reshape(()))
    return None


# --------------------------------------------------------------------------- kinds of arguments
def integer_args(*names: str) -> Callable:
    """Declares integer arguments of an optimizer factory that are compile-time constants
    (iteration counts: the program's shape depends on them), so views never trace them."""

    def mark(factory):
        setattr(factory, _INTEGER_ARGS, tuple(names))
        return factory

    return mark


def number_args(*names: str) -> Callable:
    """Declares arguments of an optimizer factory that are numbers although their default is
    not one (timm's Adafactor `lr=None`): NUMBER kind, so a number given is traced (no
    recompilation when it changes) while None stays a compile-time option (`split_arguments`)."""

    def mark(factory):
        setattr(factory, _NUMBER_ARGS, tuple(names))
        return factory

    return mark


def argument_kinds(factory: Callable) -> dict[str, str]:
    """`{argument name: NUMBER | FLAG | STATIC | VALUE}` for an optimizer factory, from its
    defaults (VALUE: no default, the value passed decides; see `split_arguments`)."""
    cached = getattr(factory, "__optax_like_kinds__", None)
    if cached is not None:
        return cached
    integers = set(getattr(factory, _INTEGER_ARGS, ()))
    numbers_ = set(getattr(factory, _NUMBER_ARGS, ()))
    kinds = {}
    for name, p in inspect.signature(factory).parameters.items():
        default = p.default
        if name in integers or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            kinds[name] = STATIC
        elif name in numbers_:
            kinds[name] = NUMBER
        elif default is inspect.Parameter.empty:
            kinds[name] = VALUE
        elif isinstance(default, bool):
            kinds[name] = FLAG
        elif is_number(default) or (isinstance(default, tuple) and is_number_tuple(default)):
            kinds[name] = NUMBER
        else:
            kinds[name] = STATIC
    try:
        factory.__optax_like_kinds__ = kinds
    except (AttributeError, TypeError):
        pass
    return kinds


def split_arguments(factory: Callable, arguments: dict[str, Any], static: Iterable[str] = (), *,
                    arrays: str = "0d") -> tuple[dict, dict, dict]:
    """One call's `arguments` as `(numbers, others, schedules)`: the values to trace (a NUMBER
    or VALUE argument whose value is a number or a tuple of numbers, `is_number(v,
    arrays=arrays)`), the compile-time ones (names in `static`, flags as `as_flag` bools, a
    bool given to a VALUE argument, everything else) and the schedules (callables). `inject_hyperparams` passes its `static_args` and counts 0-d arrays,
    tracers and complex scalars (`arrays="0d"`); the adapter passes its class's `_static` and counts one-element
    arrays and torch tensors (`arrays="one"`) and compiles schedules in."""
    kinds, static = argument_kinds(factory), frozenset(static)
    numbers_, others, schedules = {}, {}, {}
    for name, value in arguments.items():
        kind = kinds.get(name, STATIC)
        if name in static:
            others[name] = value
        elif kind == FLAG:
            others[name] = as_flag(value, name)
        elif callable(value) and not isinstance(value, jax.Array):
            schedules[name] = value
        elif kind in (NUMBER, VALUE) and (is_number(value, arrays=arrays, complex=arrays == "0d")
                                 or is_number_tuple(value, arrays=arrays, complex=arrays == "0d")):
            numbers_[name] = value
        else:
            others[name] = value
    return numbers_, others, schedules


def as_flag(value: Any, name: str) -> bool:
    """A flag argument as a Python bool, as torch's `if flag:` reads it; TypeError otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None:
        return False
    if isinstance(value, jax_core.Tracer):
        raise TypeError(
            f"{name} is a compile-time flag (it chooses the program), but got a traced value; "
            f"pass a Python bool (e.g. {name}=True)."
        )
    if is_number(value):
        return bool(value)
    if is_array(value) and np.size(value) == 1 and (
            np.issubdtype(np.asarray(value).dtype, np.number) or np.asarray(value).dtype == bool):
        return bool(np.asarray(value).reshape(()))
    raise TypeError(f"{name} must be a bool (a flag), but got {value!r} of type {type(value).__name__}.")


def as_number(value: Any, name: str) -> float:
    """A concrete numeric argument as a Python float (float64); TypeError naming it otherwise.
    Scalars are read by `concrete_value`; this adds torch tensors and the errors."""
    if hasattr(value, "detach"):  # a torch tensor, e.g. lr=torch.tensor(0.01) in a loaded group
        value = value.detach().cpu().numpy()
    if is_array(value):
        dtype = np.dtype(value.dtype)
        if np.size(value) == 1 and np.issubdtype(dtype, np.complexfloating):
            raise TypeError(f"{name} must be a real number, but got the complex value {value!r}.")
        numeric = np.issubdtype(dtype, np.number) or dtype == bool
    else:
        numeric = True
    number = concrete_value(value) if numeric else None
    if number is None:
        raise TypeError(f"{name} must be a real number, but got {value!r} of type {type(value).__name__}.")
    return number


def as_dtype(value: Any, name: str, *, allowed: Any = None) -> Optional[np.dtype]:
    """A dtype argument as a NumPy dtype (jnp's names: 'bfloat16' included), or None for None:
    a dtype, a scalar type (`jnp.float32`), its name, or a torch dtype (`torch.bfloat16`, read
    by its name). `allowed`: "floating" (real floating dtypes only) or a collection of dtype
    names; another dtype is a ValueError naming the argument, a value that is no dtype a
    TypeError. (A dtype is compared with None explicitly by callers: never `dtype or default`.)"""
    import jax.numpy as jnp

    if value is None:
        return None
    if type(value).__module__ == "torch":
        given: Any = str(value).removeprefix("torch.")
    else:
        given = value
    try:
        dtype = np.dtype(jnp.dtype(given))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a dtype, a dtype's name or a torch dtype, got {value!r}.") from None
    if allowed == "floating":
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"{name} must be a floating dtype, got {value!r} ({dtype.name}).")
    elif allowed is not None and dtype.name not in tuple(allowed):
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r} ({dtype.name}).")
    return dtype
