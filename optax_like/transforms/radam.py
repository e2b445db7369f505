"""`scale_by_radam`: torch.optim.RAdam's rectified Adam direction."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.tree import LeafScalars, increment_counts, init_counts, next_counts, update_leaves, zeros_like
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
        beta1 = numerics.resolve(b1, state.schedule_count)
        beta2 = numerics.resolve(b2, state.schedule_count)
        epsilon = numerics.resolve(eps, state.schedule_count)
        steps = next_counts(state.step)
        wide = numerics.float_dtype()  # float64 under x64: torch's host float math

        @numerics.once_per_step
        def scalars(t):
            """The leaf's rectification terms for its step `t` (host-style float math, in `wide`)."""
            rho_inf, rho_t = numerics.radam_rho(beta2, t, wide)
            if numerics.is_host_scalar(beta2):
                first = numerics.radam_first_rectified_step(beta2)
                rectified = jnp.zeros(jnp.shape(t), bool) if first is None else t >= first
            else:
                rectified = rho_t > RECTIFY_THRESHOLD
            # Evaluate the rectification only where it is used (no NaN from sqrt of negatives).
            rho_s = jnp.where(rectified, rho_t, 6.0)
            rho_inf_s = jnp.where(rectified, rho_inf, 6.0)
            rect = jnp.sqrt(
                (rho_s - 4) * (rho_s - 2) * rho_inf_s / ((rho_inf_s - 4) * (rho_inf_s - 2) * rho_s)
            )
            bc2_sqrt = jnp.broadcast_to(jnp.sqrt(numerics.bias_correction(beta2, t, wide)), jnp.shape(t))
            return rectified, rect, bc2_sqrt

        bias_correction1 = numerics.bias_correction_per_step(beta1)

        def leaf(g, m, v, t):
            rectified, rect, bc2_sqrt = scalars(t)
            like = m
            dtype = numerics.compute_dtype(numerics.real_view(m).dtype)
            g, m, v = (numerics.real_view(x).astype(dtype) for x in (g, m, v))
            m = numerics.lerp(m, g, numerics.one_minus(beta1, dtype))
            v = v * numerics.scalar(beta2, dtype) + (numerics.one_minus(beta2, dtype) * g) * g
            corrected = m / bias_correction1(t, dtype)
            adaptive = bc2_sqrt.astype(dtype) / (jnp.sqrt(v) + numerics.scalar(epsilon, dtype))
            out = jnp.where(rectified, corrected * adaptive * rect.astype(dtype), corrected)
            store = lambda x: numerics.complex_view(x, like).astype(like.dtype)
            return numerics.complex_view(out, like), store(m), store(v)

        new_updates, exp_avg, exp_avg_sq = update_leaves(
            leaf, updates, state.exp_avg, state.exp_avg_sq, counts=steps
        )
        return new_updates, ScaleByRadamState(
            exp_avg,
            exp_avg_sq,
            increment_counts(state.step, updates, state.exp_avg),
            numerics.safe_increment(state.schedule_count),
        )

    return GradientTransformation(init, update)
