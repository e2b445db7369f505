"""Layer-wise trust ratios (LARS, You et al., 2017), as timm.optim.Lars computes them.

`leaf_norm` and `guarded` are the pieces timm's layer-wise optimizers share (`_lars_trust_ratio`,
`_lamb_trust_ratio`): a param's and an update's 2-norms, and the ratio kept only where both
norms are positive (1 elsewhere).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.torch_layout import STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import update_leaves
from optax_like.transforms._per_param import LeafView, hyperparams


def leaf_norm(x: jax.Array) -> jax.Array:
    """The 2-norm of one real leaf (a complex param's real view: the same value), in its dtype
    (torch's `x.norm(2.0)`)."""
    return lax.sqrt(jnp.sum(lax.mul(x, x)))


def guarded(ratio: jax.Array, w_norm: jax.Array, g_norm: jax.Array) -> jax.Array:
    """timm's `where(w_norm > 0, where(g_norm > 0, ratio, 1.0), 1.0)`."""
    one, zero = jnp.ones((), ratio.dtype), jnp.zeros((), ratio.dtype)
    return jnp.where(lax.gt(w_norm, zero), jnp.where(lax.gt(g_norm, zero), ratio, one), one)


class ScaleByLarsState(NamedTuple):
    count: jax.Array  # updates applied so far (scheduled hyperparameters)


declare_torch_state(ScaleByLarsState, internal={"count": STEPS_TAKEN})


def scale_by_lars(
    lr: ScalarOrSchedule = 1.0,
    weight_decay: ScalarOrSchedule = 0.0,
    trust_coeff: ScalarOrSchedule = 0.001,
    eps: ScalarOrSchedule = 1e-8,
    *,
    trust_clip: bool = False,
    always_adapt: bool = False,
) -> GradientTransformation:
    """LARS's layer-wise adaptation of one param's gradient, with its weight decay (timm's
    `_single_tensor_lars` before the momentum), on each leaf:

        r  = trust_coeff * ||p|| / (||g|| + ||p|| * weight_decay + eps)
        r <- 1  where ||p|| == 0 or ||g|| == 0
        r <- min(r / lr, 1)                                          if trust_clip (LARC)
        u  = (g + weight_decay * p) * r

    applied where `weight_decay != 0` or `always_adapt` (elsewhere `u = g`; a traced or scheduled
    weight_decay decides per step). The norms and products are taken in the param's compute
    dtype, with the hyperparameters rounded to it (torch's tensor-scalar arithmetic). Complex
    params are pairs of reals (the same norms and products). A None gradient stays None.
    """
    trust_clip, always_adapt = bool(trust_clip), bool(always_adapt)
    adapts = always_adapt or validation.maybe_nonzero(weight_decay)

    def init(params):
        del params
        return ScaleByLarsState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if not adapts:
            return updates, ScaleByLarsState(numerics.safe_increment(state.count))
        if params is None:
            raise ValueError("scale_by_lars needs the params: call update(updates, state, params).")
        h = hyperparams(state.count, lr=lr, weight_decay=weight_decay, trust_coeff=trust_coeff, eps=eps)
        runtime_switch = not always_adapt and not numerics.is_host_scalar(h.weight_decay)

        def leaf_fn(u, p):
            leaf = LeafView(p)
            dtype = leaf.dtype
            g, w = leaf.load(u), leaf.load(p)
            wd = numerics.scalar(h.weight_decay, dtype)
            w_norm, g_norm = leaf_norm(w), leaf_norm(g)
            ratio = lax.div(lax.mul(numerics.scalar(h.trust_coeff, dtype), w_norm),
                            lax.add(lax.add(g_norm, lax.mul(w_norm, wd)), numerics.scalar(h.eps, dtype)))
            ratio = guarded(ratio, w_norm, g_norm)
            if trust_clip:
                ratio = lax.min(lax.div(ratio, numerics.scalar(h.lr, dtype)), jnp.ones((), dtype))
            adapted = lax.mul(lax.add(g, lax.mul(wd, w)), ratio)
            if runtime_switch:
                adapted = jnp.where(lax.ne(wd, jnp.zeros((), dtype)), adapted, g)
            return leaf.emit(adapted), p

        new_updates, _ = update_leaves(leaf_fn, updates, params)
        return new_updates, ScaleByLarsState(numerics.safe_increment(state.count))

    return GradientTransformation(init, update)


__all__ = ["ScaleByLarsState", "guarded", "leaf_norm", "scale_by_lars"]
