"""Clipping: element-wise `clip` and `clip_by_global_norm` (torch's `clip_grad_norm_`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, stateless
from optax_like.core.tree import map_params


def global_norm_sq(tree: Any) -> jax.Array:
    """Sum of squared magnitudes of every element of every leaf, accumulated in >= float32."""
    parts = []
    for x in jax.tree.leaves(tree):
        x = jnp.asarray(x)
        acc = jnp.promote_types(jnp.real(x).dtype, jnp.float32)
        parts.append(jnp.sum(jnp.abs(x).astype(acc) ** 2) if jnp.iscomplexobj(x) else jnp.sum(jnp.square(x.astype(acc))))
    if not parts:
        return jnp.zeros((), jnp.float32)
    return sum(parts[1:], parts[0])


def clip(max_delta) -> GradientTransformation:
    """`u <- clamp(u, -max_delta, max_delta)` element-wise (torch's `clip_grad_value_`)."""

    def f(updates, params):
        del params
        return map_params(lambda u: jnp.clip(u, -numerics.scalar(max_delta, u.dtype), numerics.scalar(max_delta, u.dtype)), updates)

    return stateless(f)


def clip_by_global_norm(max_norm) -> GradientTransformation:
    """torch's `clip_grad_norm_(max_norm)` as a transform (2-norm over every leaf):

        total = sqrt(sum ||u||^2);  u <- u * min(1, max_norm / (total + 1e-6))
    """

    def f(updates, params):
        del params
        total = jnp.sqrt(global_norm_sq(updates))
        coef = jnp.minimum(numerics.scalar(max_norm, total.dtype) / (total + 1e-6), 1.0)
        return map_params(lambda u: (u * coef.astype(numerics.compute_dtype(u.dtype))).astype(u.dtype), updates)

    return stateless(f)
