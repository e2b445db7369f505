"""`scale_by_rmsprop_tf`: timm.optim.RMSpropTF's step (RMSprop in TensorFlow's order of operations)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import full_like, map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.caution import cautious, refuse_complex


class ScaleByRMSpropTFState(NamedTuple):
    square_avg: Any  # EMA of g^2, starting at ONE (TensorFlow's), params-shaped
    grad_avg: Any  # EMA of g (centered only; None leaves otherwise)
    momentum_buffer: Any  # momentum (momentum > 0 only; None leaves otherwise), starting at zero
    step: LeafScalars  # per-leaf step count (timm's state['step'], a 0-d float32 tensor)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByRMSpropTFState,
    buffers=("square_avg", "grad_avg", "momentum_buffer"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_rmsprop_tf(
    lr: ScalarOrSchedule = 1e-2,
    alpha: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-10,
    momentum: ScalarOrSchedule = 0.0,
    *,
    centered: bool = False,
    lr_in_momentum: bool = True,
    caution: bool = False,
) -> GradientTransformation:
    """RMSpropTF's step, learning rate included, in timm's order of operations:

        sq   <- sq + (1 - alpha) * (g^2 - sq)                   (sq_0 = 1)
        ga   <- ga + (1 - alpha) * (g - ga)                     if centered
        avg   = sqrt(sq - ga^2 + eps)   (sqrt(sq + eps) if not centered: eps inside the root)
        momentum > 0, lr_in_momentum:   b <- momentum * b + lr * g / avg;   out = -b
        momentum > 0, otherwise:        b <- momentum * b + g / avg;        out = -lr * b
        momentum == 0:                  out = -lr * g / avg

    `caution` masks the buffer for the step only (timm stores the unmasked one), with momentum.
    The block emits the whole step (the lr may live in the momentum buffer). Complex params
    are computed on as complex numbers, as timm does (g^2 and the root are complex; caution's
    mask is refused on them, torch's error). A None update leaf is skipped with its state
    untouched.
    """
    use_momentum = validation.maybe_nonzero(momentum)
    centered, lr_in_momentum, caution = bool(centered), bool(lr_in_momentum), bool(caution)

    def init(params):
        if caution and use_momentum:
            refuse_complex(params)
        none = lambda tree: map_params(lambda p: None, tree)
        return ScaleByRMSpropTFState(
            square_avg=full_like(params, 1.0),
            grad_avg=zeros_like(params) if centered else none(params),
            momentum_buffer=zeros_like(params) if use_momentum else none(params),
            step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, lr=lr, alpha=alpha, eps=eps, momentum=momentum)

        def math(leaf, g, sq, ga, buf, _t):
            dtype = leaf.dtype
            g, sq, ga, buf = leaf.as_complex(g, sq, ga, buf)
            rate, eps_, lr_ = numerics.one_minus(h.alpha, dtype), numerics.scalar(h.eps, dtype), numerics.scalar(h.lr, dtype)
            sq = sq + rate * (g * g - sq)
            if centered:
                ga = ga + rate * (g - ga)
                avg = jnp.sqrt(sq - ga * ga + eps_)
            else:
                avg = jnp.sqrt(sq + eps_)
            if not use_momentum:
                return leaf.as_real(-lr_ * g / avg, sq, ga, buf)
            buf = buf * numerics.scalar(h.momentum, dtype)
            buf = buf + lr_ * g / avg if lr_in_momentum else buf + g / avg
            (buf,) = leaf.as_complex(leaf.rounded(*leaf.as_real(buf)))  # the step reads the stored buffer
            step = cautious(buf, g) if caution else buf
            u = -step if lr_in_momentum else -lr_ * step
            return leaf.as_real(u, sq, ga, buf)

        return per_param_update(state, updates, math, buffers=("square_avg", "grad_avg", "momentum_buffer"))

    return GradientTransformation(init, update)


__all__ = ["ScaleByRMSpropTFState", "scale_by_rmsprop_tf"]
