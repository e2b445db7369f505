"""`scale_by_madgrad`: timm.optim.MADGRAD's whole step (Defazio & Jelassi, 2021)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.weight_decay import decoupled_decay_keep


class ScaleByMadgradState(NamedTuple):
    grad_sum_sq: Any  # sum of lamb_t * g^2, params-shaped
    s: Any  # sum of lamb_t * g, params-shaped
    x0: Any  # the param at its first step (momentum != 0 only; None leaves otherwise)
    step: LeafScalars  # per-leaf step count (timm's state['step'], a Python int)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByMadgradState,
    buffers=("grad_sum_sq", "s", "x0"),
    scalars={"step": INT_STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_madgrad(
    lr: ScalarOrSchedule = 1e-2,
    momentum: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-6,
    *,
    decay_lr: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
) -> GradientTransformation:
    """MADGRAD's step, learning rate and decoupled decay included, in timm's order of operations:

        t    <- t + 1;   lamb = (lr + eps) * sqrt(t)                 (float64 host math)
        p    <- p * (1 - decay_lr * weight_decay)                    (decoupled decay; 0: none)
        x0    = p + s / (gss^(1/3) + eps)     if momentum == 0,  else the param at its first step
        gss  <- gss + lamb * g^2;   s <- s + lamb * g
        z     = x0 - s / (gss^(1/3) + eps)
        p    <- z                              if momentum == 0
        p    <- p * (1 - ck) + ck * z,  ck = 1 - momentum             otherwise

    The block emits the whole step (`p_new - p`): the new param is a dual average, not the old
    one moved. Complex params are computed on as complex numbers, as timm does (g^2 and the
    cube root are complex). A leaf whose update is None is skipped with its state untouched.
    """
    has_momentum = validation.maybe_nonzero(momentum)
    decays = validation.maybe_nonzero(weight_decay)

    def init(params):
        return ScaleByMadgradState(
            grad_sum_sq=zeros_like(params), s=zeros_like(params),
            x0=zeros_like(params) if has_momentum else map_params(lambda p: None, params),
            step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_madgrad needs the params: call update(updates, state, params).")
        h = hyperparams(state.schedule_count, lr=lr, momentum=momentum, eps=eps,
                        decay_lr=decay_lr, weight_decay=weight_decay)
        wide = numerics.float_dtype()  # float64 under x64: timm's host float math
        traced_momentum = has_momentum and not numerics.is_host_scalar(h.momentum)

        def step_scalars(t, dtype):
            lr_plus_eps = numerics.host_or_traced(lambda a, b: a + b, h.lr, h.eps, dtype=wide)  # timm's Python floats
            lamb = lax.mul(lr_plus_eps, lax.sqrt(t.astype(wide)))
            return (numerics.cast(lamb, dtype),)

        def math(leaf, g, gss, s, x0, p_in, t, scalars):
            (lamb,) = scalars
            dtype = leaf.dtype
            g, gss, s, x0, p_in = leaf.as_complex(g, gss, s, x0, p_in)
            eps_, third = numerics.scalar(h.eps, dtype), numerics.scalar(1 / 3, dtype)
            p = p_in * decoupled_decay_keep(h.decay_lr, h.weight_decay, dtype) if decays else p_in
            if has_momentum:
                x0 = jnp.where(t == 1, p_in, x0)  # timm clones the param when its state is created
                start = jnp.where(numerics.scalar(h.momentum, dtype) == 0, p + s / (gss ** third + eps_), x0) \
                    if traced_momentum else x0
            else:
                start = p + s / (gss ** third + eps_)
            gss = gss + lamb * g * g
            s = s + lamb * g
            z = start - s / (gss ** third + eps_)
            if has_momentum:
                ck = numerics.one_minus(h.momentum, dtype)
                # timm's `1 - ck` of Python floats (float64), not the momentum itself
                keep = (numerics.scalar(1.0 - (1.0 - float(h.momentum)), dtype) if numerics.is_host_scalar(h.momentum)
                        else 1 - ck)
                new = p * keep + ck * z
            else:
                new = z
            return leaf.as_real(new - p_in, gss, s, x0)

        return per_param_update(state, updates, math, buffers=("grad_sum_sq", "s", "x0"), inputs=(params,),
                                step_scalars=step_scalars)

    return GradientTransformation(init, update)


__all__ = ["ScaleByMadgradState", "scale_by_madgrad"]
