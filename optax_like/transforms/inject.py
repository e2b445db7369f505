"""`inject_hyperparams`: hyperparameters as state, editable between jitted steps."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterable, NamedTuple

import jax
from jax import core as jax_core
import jax.numpy as jnp

from optax_like.core import hyperparams, numerics
from optax_like.core.base import GradientTransformationExtraArgs, with_extra_args_support


def as_hyperparam(value: Any, dtype=None) -> jax.Array:
    """A hyperparameter as a non-weak scalar array (so edits never change a jit signature).

    Python scalars and bools get the default float dtype (`numerics.float_dtype()`) unless `dtype` is
    given; arrays keep their own float dtype unless `dtype` is given.
    """
    if isinstance(value, jax.Array) and dtype is None and not value.weak_type:
        if jnp.issubdtype(value.dtype, jnp.floating):
            return value
    if dtype is None:
        src = getattr(value, "dtype", None)
        dtype = src if src is not None and jnp.issubdtype(src, jnp.floating) else numerics.float_dtype()
    return jnp.asarray(value, dtype=jax.dtypes.canonicalize_dtype(dtype))


def _normalize(value: Any, like: Any, name: str = "hyperparameter") -> Any:
    """`value` as an array (or tuple of arrays) of the dtype of `like` (a float dtype); a value
    that does not fit it (1e308 in float32) or is not a real number is an error naming `name`."""
    if isinstance(like, tuple):
        if not isinstance(value, (tuple, list)) or len(value) != len(like):
            raise ValueError(f"{name}: expected a sequence of {len(like)} values, got {value!r}.")
        return tuple(_normalize(v, l, name) for v, l in zip(value, like))
    if callable(value) and not isinstance(value, jax.Array):
        raise TypeError(f"{name}: a hyperparameter injected as a value cannot be replaced by a schedule.")
    if isinstance(value, jax_core.Tracer):
        return value.astype(like.dtype) if value.dtype != like.dtype else value
    if not isinstance(value, jax.Array):
        hyperparams.as_number(value, name)  # a TypeError naming it for strings, None, ...
    numerics.check_representable(value, like.dtype, name)
    return jnp.asarray(value, dtype=like.dtype)


def _place_like(value: Any, like: Any) -> Any:
    """`value` on `like`'s devices and sharding when `like` is a committed array (e.g. the
    replicated output of a jitted step on a mesh), so that an edit does not change the jitted
    step's input placement (which would recompile it)."""
    if isinstance(like, tuple):
        return tuple(_place_like(v, l) for v, l in zip(value, like))
    if (
        isinstance(like, jax.Array)
        and not isinstance(like, jax_core.Tracer)
        and not isinstance(value, jax_core.Tracer)
        and getattr(like, "_committed", False)
    ):
        return jax.device_put(value, like.sharding)
    return value


def _companions(given: Any, stored: Any) -> Any:
    """A stored hyperparameter's `(1 - x, log x)` (a pair, or a tuple of pairs for a tuple such as
    `betas`), in `stored`'s dtype: from the float64 value of `given` (the number as the user gave
    it: Python's 0.999, not its float32 rounding) where it is a host number or a concrete array
    (torch's host math), else in the graph."""
    if isinstance(stored, tuple):
        return tuple(_companions(g, s) for g, s in zip(given, stored))
    precise = numerics.precise_scalar(given, stored.dtype)
    return precise.one_minus_value, precise.log_value


@jax.tree_util.register_pytree_with_keys_class
class HyperparamsDict(dict):
    """A dict of hyperparameter arrays that keeps each entry's dtype (and non-weak type) on edit.

    `state.hyperparams['lr'] = 0.01` stores `jnp.asarray(0.01, float32)`, not a Python float,
    so the next call of a jitted step sees the same signature and does not recompile, whatever
    scalar type was assigned (Python float, NumPy scalar, jax array).

    Each stored (not scheduled) entry also carries, out of sight, its `1 - x` and `log x`
    computed from the assigned number in float64 and rounded once (`numerics.PreciseScalar`,
    what the stateful adapter feeds its factories): the injected step then does torch's float64
    scalar math (`1 - beta2` of the Python float 0.999, not of its float32 rounding). They are
    pytree children under the node's `precise` key (a dict of pairs).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.precise: dict[str, Any] = {}  # key -> _companions of its value (stored entries only)

    def __setitem__(self, key, value):
        given = value
        if key in self:
            value = _place_like(_normalize(value, self[key], key), self[key])
        if key in self.precise:  # from the value given (Python's 0.99, not its float32 rounding)
            self.precise[key] = _place_like(_companions(given, value), self.precise[key])
        super().__setitem__(key, value)

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def precise_value(self, key: str, value: Any) -> Any:
        """`value` (this entry's value, cast for the step) as a `PreciseScalar` (a tuple of them
        for a tuple) with the entry's stored companions; `value` itself for a scheduled entry."""
        pairs = self.precise.get(key)
        if pairs is None:
            return value
        if isinstance(value, tuple):
            return tuple(numerics.PreciseScalar(v, *(c.astype(v.dtype) for c in pair)) for v, pair in zip(value, pairs))
        return numerics.PreciseScalar(value, *(c.astype(value.dtype) for c in pairs))

    def tree_flatten_with_keys(self):
        keys = sorted(self)
        children = [(jax.tree_util.DictKey(k), dict.__getitem__(self, k)) for k in keys]
        children.append((jax.tree_util.GetAttrKey("precise"), dict(self.precise)))
        return children, tuple(keys)

    @classmethod
    def tree_unflatten(cls, keys, values):
        out = cls()
        for k, v in zip(keys, values):
            dict.__setitem__(out, k, v)
        out.precise = dict(values[len(keys)]) if len(values) > len(keys) else {}
        return out

    def __copy__(self):
        out = type(self)(self)
        out.precise = dict(self.precise)
        return out

    def __reduce__(self):
        return _rebuild_hyperparams, (dict(self), dict(self.precise))


def _rebuild_hyperparams(values: dict, precise: dict) -> HyperparamsDict:
    out = HyperparamsDict(values)
    out.precise = precise
    return out


class InjectHyperparamsState(NamedTuple):
    count: jax.Array  # updates applied so far (schedules are evaluated at it)
    hyperparams: HyperparamsDict  # current values; edit them between steps
    inner_state: Any


def inject_hyperparams(
    factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype=None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """Wraps an optimizer factory so its numeric hyperparameters live in the state.

        opt = inject_hyperparams(adam)(lr=1e-3, betas=(0.9, 0.999))
        state = opt.init(params)
        state.hyperparams['lr'] = 3e-4         # next step uses it; no recompile

    Numeric arguments (scalars and tuples of scalars such as `betas`; see
    `core.hyperparams.argument_kinds`) become non-weak floating arrays of `hyperparam_dtype`
    (default: float32, or float64 under x64), whatever the Python type of the value or default
    (`weight_decay=0` gives a float slot: assigning 1e-2 later is not truncated). An argument
    without a default is numeric when its value is a number, as in optax
    (`inject_hyperparams(clip_by_global_norm)(1.0)` has `hyperparams['max_norm']`). Flags
    (`amsgrad`, `nesterov`, ...) are compile-time bools (`amsgrad=1` is True, as in torch);
    integer counts a factory declares (`ns_steps`) and names in `static_args` (a name or an
    iterable of names of the factory's arguments; another name is a ValueError) stay static;
    callable arguments are schedules of the step count, evaluated every update and shown in
    `state.hyperparams`. A value that cannot be stored (a string for `lr`, 1e308 in float32) is
    an error naming the argument.
    The factory is called once with the given values to validate them up front.

    Each stored number reaches the factory as a `numerics.PreciseScalar`, with `1 - x` and `log x`
    computed from the value given (or assigned later) in float64 and rounded once, as the stateful
    adapter feeds its groups' hyperparameters: `1 - beta2` and the bias corrections are torch's
    float64 host math also in float32 (`HyperparamsDict`). Scheduled values are traced as they are.
    """
    static_args = frozenset((static_args,) if isinstance(static_args, str) else static_args)
    signature = inspect.signature(factory)
    unknown = static_args - set(signature.parameters)
    if unknown:
        raise ValueError(
            f"static_args must name arguments of {getattr(factory, '__name__', factory)}: got "
            f"{sorted(unknown)}, its arguments are {list(signature.parameters)}."
        )

    @functools.wraps(factory)
    def wrapped(*args, **kwargs) -> GradientTransformationExtraArgs:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        factory(**arguments)  # validates with torch's messages, on the values as given

        dtype = jnp.dtype(hyperparam_dtype) if hyperparam_dtype is not None else None
        numeric, static, schedules = hyperparams.split_arguments(factory, arguments, static_args)

        def to_array(v, name):
            # Every numeric slot is a non-weak float, whatever the default's Python type: an
            # int default (`weight_decay=0`) must not make an int slot that truncates 1e-2 to 0.
            if isinstance(v, (tuple, list)):
                return tuple(to_array(x, name) for x in v)
            numerics.check_representable(v, dtype or numerics.float_dtype(), name)
            return as_hyperparam(v, dtype)

        def hyperparams_at(count, stored):
            values = dict(stored)
            for name, schedule in schedules.items():
                values[name] = to_array(schedule(count), name)
            return values

        def precise(stored: HyperparamsDict, values: dict) -> dict:
            # what the factory gets: each stored number with its host companions (PreciseScalar)
            return {name: stored.precise_value(name, v) for name, v in values.items()}

        def init(params):
            count = jnp.zeros((), jnp.int32)
            values = {name: to_array(v, name) for name, v in numeric.items()}
            stored = HyperparamsDict(hyperparams_at(count, values))
            # companions from the arguments as given (Python's float64 0.999, not float32's)
            stored.precise = {name: _companions(v, values[name]) for name, v in numeric.items()}
            inner = factory(**static, **precise(stored, stored))
            return InjectHyperparamsState(count, stored, inner.init(params))

        def update(updates, state, params=None, **extra_args):
            current = state.hyperparams
            stored = {name: _normalize(current[name], to_array(numeric[name], name), name) for name in numeric}
            values = hyperparams_at(state.count, stored)
            new_hyperparams = HyperparamsDict(values)
            # (a dict without companions, put in by hand: computed from its values, in the graph)
            known = getattr(current, "precise", {})
            new_hyperparams.precise = {name: known[name] if name in known else _companions(stored[name], stored[name])
                                       for name in numeric}
            inner = with_extra_args_support(factory(**static, **precise(new_hyperparams, values)))
            updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
            new_state = InjectHyperparamsState(numerics.safe_increment(state.count), new_hyperparams, inner_state)
            return updates, new_state

        return GradientTransformationExtraArgs(init, update)

    return wrapped
