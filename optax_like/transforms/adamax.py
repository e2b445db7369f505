"""`scale_by_adamax`: torch.optim.Adamax's first moment and exponentially weighted infinity norm."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN


class ScaleByAdamaxState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped
    exp_inf: Any  # exponentially weighted infinity norm, params-shaped
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled betas / eps


declare_torch_state(
    ScaleByAdamaxState,
    buffers=("exp_avg", "exp_inf"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_adamax(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
) -> GradientTransformation:
    """Adamax's direction, in torch's order of operations (without the learning rate):

        t   <- t + 1
        m_t  = lerp(m_{t-1}, g, 1 - b1)                       (torch's exp_avg.lerp_)
        u_t  = max(b2 * u_{t-1}, |g| + eps)                   (elementwise; NaN propagates)
        out  = (m_t / (1 - b1^t)) / u_t

    torch adds eps *inside* the max (`torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps))`;
    its `differentiable` path writes the same max as `amax(cat([b2*u, |g|+eps]))`), so `u_t >=
    eps` and eps never appears in the denominator again. torch folds the bias correction into the
    learning rate (`clr = lr / (1 - b1^t)`, `p.addcdiv_(m, u, value=-clr)`); here it is applied to
    `m` and `scale_by_learning_rate` supplies `-lr` (same value, a different rounding order).
    The paper (Kingma & Ba, Alg. 2) has no eps in the max. Complex params are treated as pairs of
    reals (torch's `view_as_real`): the max is taken on real and imaginary parts separately.
    A leaf whose update is None is skipped with its state untouched (torch's `grad is None`).
    """

    def init(params):
        return ScaleByAdamaxState(
            exp_avg=zeros_like(params),
            exp_inf=zeros_like(params),
            step=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps)

        def math(leaf, g, m, u, _t, scalars):
            (bc1,) = scalars
            dtype = leaf.dtype
            m = numerics.lerp(m, g, numerics.one_minus(h.b1, dtype))
            u = lax.max(lax.mul(u, numerics.scalar(h.b2, dtype)), lax.add(lax.abs(g), numerics.scalar(h.eps, dtype)))
            return lax.div(lax.div(m, bc1), u), m, u

        return per_param_update(state, updates, math, buffers=("exp_avg", "exp_inf"),
                                step_scalars=lambda t, dtype: (numerics.bias_correction(h.b1, t, dtype),))

    return GradientTransformation(init, update)
