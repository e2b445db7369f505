"""`apply_if_finite`: skip steps whose gradients are not finite."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support
from optax_like.core.tree import map_params


class ApplyIfFiniteState(NamedTuple):
    notfinite_count: jax.Array  # consecutive non-finite steps so far
    last_finite: jax.Array  # whether the last gradient was finite
    total_notfinite: jax.Array  # non-finite steps over the whole run
    inner_state: Any


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def apply_if_finite(inner: GradientTransformation, max_consecutive_errors: int) -> GradientTransformationExtraArgs:
    """Applies `inner` only when every gradient element is finite.

    A non-finite gradient gives a zero update and leaves `inner_state` untouched, and is
    counted (`notfinite_count`, `total_notfinite`). After more than `max_consecutive_errors`
    non-finite steps in a row the update is applied anyway, so that a run that diverged for
    good shows it (as optax does). torch has no such option: without this wrapper a NaN
    gradient propagates into params and state exactly as in torch.
    """
    inner_update = with_extra_args_support(inner).update

    def init(params):
        return ApplyIfFiniteState(
            jnp.zeros((), jnp.int32), jnp.asarray(True), jnp.zeros((), jnp.int32), inner.init(params)
        )

    def update(updates, state, params=None, **extra_args):
        new_updates, new_inner = inner_update(updates, state.inner_state, params, **extra_args)
        finite = all_finite(updates)
        notfinite = jnp.where(finite, 0, state.notfinite_count + 1).astype(jnp.int32)
        apply = jnp.logical_or(finite, notfinite > max_consecutive_errors)
        out_updates = map_params(lambda u: jnp.where(apply, u, jnp.zeros_like(u)), new_updates)
        out_inner = jax.tree.map(lambda new, old: jnp.where(apply, new, old), new_inner, state.inner_state)
        return out_updates, ApplyIfFiniteState(
            notfinite,
            finite,
            jnp.where(finite, state.total_notfinite, numerics.safe_increment(state.total_notfinite)),
            out_inner,
        )

    return GradientTransformationExtraArgs(init, update)
