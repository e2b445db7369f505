"""The two types every optimizer is made of, and `apply_updates`.

A `GradientTransformation` is a pair of pure functions:

    state = init(params)
    updates, state = update(updates, state, params=None)

`GradientTransformationExtraArgs` is the variant whose `update` also accepts keyword
arguments (`value=` for ReduceLROnPlateau, `value_fn=` for L-BFGS, ...). Combinators
forward extra keyword arguments only to the transformations that accept them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, Union

import chex
import jax
import jax.numpy as jnp
from jax import core as jax_core

Params = chex.ArrayTree
Updates = chex.ArrayTree
OptState = chex.ArrayTree
Numeric = Union[chex.Array, float, int]
Schedule = Callable[[chex.Numeric], chex.Numeric]
ScalarOrSchedule = Union[float, chex.Array, Schedule]


class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]: ...


class TransformUpdateExtraArgsFn(Protocol):
    def __call__(
        self,
        updates: Updates,
        state: OptState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pure optimizer (or building block): `init(params)` and `update(updates, state, params)`."""

    init: TransformInitFn
    update: TransformUpdateFn


class GradientTransformationExtraArgs(GradientTransformation):
    """A `GradientTransformation` whose `update` accepts extra keyword arguments.

    Combinators pass their extra keyword arguments on to these and drop them for plain
    `GradientTransformation`s, so a loss (`value=`) can reach ReduceLROnPlateau deep in a chain.
    """

    update: TransformUpdateExtraArgsFn


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def with_extra_args_support(tx: GradientTransformation) -> GradientTransformationExtraArgs:
    """Wraps `tx` so that its `update` accepts (and ignores) extra keyword arguments."""
    if isinstance(tx, GradientTransformationExtraArgs):
        return tx

    def update(updates, state, params=None, **extra_args):
        del extra_args
        return tx.update(updates, state, params)

    return GradientTransformationExtraArgs(tx.init, update)


def identity() -> GradientTransformation:
    """The transformation that leaves updates unchanged."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return updates, state

    return GradientTransformation(init, update)


def stateless(f: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """A transformation from a function `f(updates, params) -> updates` with no state."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        return f(updates, params), state

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Returns `params + updates`, leaf by leaf, keeping each param's dtype.

    The sum is computed in the promoted dtype of the pair and cast back to the param's
    dtype, so float32 updates applied to bfloat16 params round once, as torch's
    `param.add_(update)` does. `None` leaves (frozen params) pass through.
    """

    def apply(p, u):
        if p is None or u is None:
            return p
        p = jnp.asarray(p)
        if isinstance(u, (jax.Array, jax_core.Tracer)) and u.dtype == p.dtype and not u.weak_type:
            return jax.lax.add(p, u)  # the common case, without jnp's dispatch (same jaxpr)
        return (p + u).astype(p.dtype)

    return jax.tree.map(apply, params, updates, is_leaf=lambda x: x is None)
