"""`scale_by_radam`: torch.optim.RAdam's rectified Adam direction."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.tree import LeafScalars, init_counts, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN

RECTIFY_THRESHOLD = 5.0  # torch rectifies when rho_t > 5


class ScaleByRadamState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped
    exp_avg_sq: Any  # second moment, params-shaped
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByRadamState,
    buffers=("exp_avg", "exp_avg_sq"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_radam(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
) -> GradientTransformation:
    """RAdam's direction (Liu et al., 2020), in torch's order of operations, without the lr:

        t      <- t + 1
        m_t     = lerp(m_{t-1}, g, 1 - b1)
        v_t     = b2 * v_{t-1} + (1 - b2) * g^2
        m^      = m_t / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1
        rho_t   = rho_inf - 2 t b2^t / (1 - b2^t)
        if rho_t > 5:
            r   = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            out = m^ * (sqrt(1 - b2^t) / (sqrt(v_t) + eps)) * r
        else:
            out = m^                                       (un-adapted SGD-with-momentum step)

    eps is added to sqrt(v_t) *before* the bias correction (`sqrt(bc2) / (sqrt(v) + eps)`),
    unlike Adam's `sqrt(v) / sqrt(bc2) + eps`. For a concrete `b2` the switch step is found on
    the host with torch's own float64 expression (`numerics.radam_first_rectified_step`), so it
    happens at exactly torch's step; rho_t itself comes from `numerics.radam_rho`, which avoids
    the cancellation of the formula above (it matters in float32). With b2 <= 2/3, rho_inf <= 5
    and the step is never rectified. Complex params are pairs of reals; a None update leaf is
    skipped with its state untouched.
    """

    def init(params):
        return ScaleByRadamState(
            exp_avg=zeros_like(params),
            exp_avg_sq=zeros_like(params),
            step=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps)
        wide = numerics.float_dtype()  # float64 under x64: torch's host float math

        @numerics.once_per_step
        def scalars(t):
            """The leaf's rectification terms for its step `t` (host-style float math, in `wide`)."""
            rho_inf, rho_t = numerics.radam_rho(h.b2, t, wide)
            if numerics.is_host_scalar(h.b2):
                first = numerics.radam_first_rectified_step(h.b2)
                rectified = jnp.zeros(jnp.shape(t), bool) if first is None else t >= first
            else:
                rectified = rho_t > RECTIFY_THRESHOLD
            # Evaluate the rectification only where it is used (no NaN from sqrt of negatives).
            rho_s = jnp.where(rectified, rho_t, 6.0)
            rho_inf_s = jnp.where(rectified, rho_inf, 6.0)
            rect = jnp.sqrt(
                (rho_s - 4) * (rho_s - 2) * rho_inf_s / ((rho_inf_s - 4) * (rho_inf_s - 2) * rho_s)
            )
            bc2_sqrt = jnp.broadcast_to(jnp.sqrt(numerics.bias_correction(h.b2, t, wide)), jnp.shape(t))
            return rectified, rect, bc2_sqrt

        bias_correction1 = numerics.bias_correction_per_step(h.b1)

        def math(leaf, g, m, v, t):
            rectified, rect, bc2_sqrt = scalars(t)
            dtype = leaf.dtype
            m = numerics.lerp(m, g, numerics.one_minus(h.b1, dtype))
            v = lax.add(lax.mul(v, numerics.scalar(h.b2, dtype)), lax.mul(lax.mul(numerics.one_minus(h.b2, dtype), g), g))
            bc1, bc2_sqrt, rect = numerics.step_scalars(  # a lone leaf rounds as in a tree
                (bias_correction1(t, dtype), numerics.cast(bc2_sqrt, dtype), numerics.cast(rect, dtype)))
            corrected = lax.div(m, bc1)
            adaptive = lax.div(bc2_sqrt, lax.add(lax.sqrt(v), numerics.scalar(h.eps, dtype)))
            return jnp.where(rectified, lax.mul(lax.mul(corrected, adaptive), rect), corrected), m, v

        return per_param_update(state, updates, math, buffers=("exp_avg", "exp_avg_sq"))

    return GradientTransformation(init, update)
