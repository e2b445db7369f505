"""`scale_by_rmsprop`: torch.optim.RMSprop's (optionally centered) normalisation and momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN


class ScaleByRMSpropState(NamedTuple):
    square_avg: Any  # running average of g^2 (torch's state['square_avg'])
    grad_avg: Any  # running average of g (centered only; None leaves otherwise)
    momentum_buffer: Any  # momentum (momentum != 0 only; None leaves otherwise)
    step: LeafScalars  # per-leaf step count (torch's state['step']; counted, not used in the math)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByRMSpropState,
    buffers=("square_avg", "grad_avg", "momentum_buffer"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_rmsprop(
    alpha: ScalarOrSchedule = 0.99,
    eps: ScalarOrSchedule = 1e-8,
    momentum: ScalarOrSchedule = 0.0,
    centered: bool = False,
) -> GradientTransformation:
    """torch.optim.RMSprop's direction (Hinton's lecture 6e; centered: Graves, 2013), no lr:

        v_t   = alpha * v_{t-1} + (1 - alpha) * g * g                   (square_avg)
        m_t   = lerp(m_{t-1}, g, 1 - alpha)                             (grad_avg, if centered)
        avg   = sqrt(v_t - m_t * m_t) + eps    if centered   else   sqrt(v_t) + eps
        b_t   = momentum * b_{t-1} + g / avg                            (b_0 = 0)
        u     = b_t   if momentum > 0   else   g / avg

    eps is added *after* the square root (and after subtracting m_t^2 when centered). Unlike
    SGD's momentum (`trace`), the buffer starts at zero, so b_1 = g_1 / avg. The buffer is kept
    when `momentum` is not a concrete zero (a traced or scheduled momentum of 0 gives
    b_t = g / avg, the same step). torch applies `-lr` with `param.addcdiv_(g, avg, value=-lr)`
    when momentum is 0, i.e. `(-lr * g) / avg`; here the trailing `scale_by_learning_rate` forms
    `-lr * (g / avg)`, which differs by at most an ulp of the step (measured: float32 parity
    holds at 1e-6). Complex params are treated as pairs of reals. Leaves whose update is None
    are skipped with their state untouched.
    """
    use_momentum = v.maybe_nonzero(momentum)

    def init(params):
        none = lambda tree: map_params(lambda p: None, tree)
        return ScaleByRMSpropState(
            square_avg=zeros_like(params),
            grad_avg=zeros_like(params) if centered else none(params),
            momentum_buffer=zeros_like(params) if use_momentum else none(params),
            step=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, alpha=alpha, eps=eps, momentum=momentum)

        def math(leaf, g, sq, gavg, buf):
            dtype = leaf.dtype
            sq = lax.add(lax.mul(sq, numerics.scalar(h.alpha, dtype)), lax.mul(lax.mul(numerics.one_minus(h.alpha, dtype), g), g))
            if centered:
                gavg = numerics.lerp(gavg, g, numerics.one_minus(h.alpha, dtype))
                avg = lax.sqrt(lax.sub(sq, lax.mul(gavg, gavg)))
            else:
                avg = lax.sqrt(sq)
            avg = lax.add(avg, numerics.scalar(h.eps, dtype))
            if not use_momentum:
                return lax.div(g, avg), sq, gavg, buf
            # torch steps with the stored (params'-dtype) buffer.
            buf = leaf.rounded(lax.add(lax.mul(buf, numerics.scalar(h.momentum, dtype)), lax.div(g, avg)))
            return buf, sq, gavg, buf

        return per_param_update(
            state, updates, math, buffers=("square_avg", "grad_avg", "momentum_buffer"), counts=None
        )

    return GradientTransformation(init, update)


__all__ = ["ScaleByRMSpropState", "scale_by_rmsprop"]
