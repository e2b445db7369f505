"""`scale_by_nadam_legacy`: timm.optim.NAdamLegacy's direction (Dozat's NAdam with Keras's
warming momentum schedule)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts, leaf_scalars, next_counts, select_present
from optax_like.core.torch_layout import FLOAT, INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update

_WARMING_BASE = 0.96  # Keras's momentum schedule: b1 * (1 - 0.5 * 0.96 ** (t * schedule_decay))


class ScaleByNadamLegacyState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped
    exp_avg_sq: Any  # second moment, params-shaped
    step: LeafScalars  # per-leaf step count (timm's state['step'], a Python int)
    m_schedule: LeafScalars  # per-leaf product of the momentum schedule (a Python float in timm)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByNadamLegacyState,
    buffers=("exp_avg", "exp_avg_sq"),
    scalars={"step": INT_STEP, "m_schedule": FLOAT},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_nadam_legacy(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    schedule_decay: ScalarOrSchedule = 4e-3,
) -> GradientTransformation:
    """NAdamLegacy's direction, in timm's order of operations (without the lr):

        t     <- t + 1
        mu_t   = b1 (1 - 0.5 * 0.96^(t * schedule_decay));  mu_t1 the same at t + 1
        M_t    = M_{t-1} mu_t                                   (`m_schedule`, M_0 = 1; float64)
        m_t    = b1 m + (1 - b1) g;   v_t = b2 v + (1 - b2) g^2
        d      = sqrt(v_t) / sqrt(1 - b2^t) + eps
        out    = (1 - mu_t) / (1 - M_t) * g / d + mu_t1 / (1 - M_t mu_t1) * m_t / d

    timm applies the two terms to the param one after the other; here they are summed (a
    rounding apart). The schedule's scalars are timm's Python float math (float64 under x64).
    Complex params are computed on as complex numbers, as timm does (g^2 and its root are
    complex). A None update leaf is skipped with its state (moments, `step`, `m_schedule`)
    untouched.
    """

    def init(params):
        return ScaleByNadamLegacyState(
            exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params), step=init_counts(params),
            m_schedule=leaf_scalars(params, 1.0, numerics.float_dtype()), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps, schedule_decay=schedule_decay)
        wide = numerics.float_dtype()
        log_base = numerics.scalar(float(np.log(_WARMING_BASE)), wide)
        b1_w, decay_w = numerics.scalar(h.b1, wide), numerics.scalar(h.schedule_decay, wide)

        def momentum_cache(t):
            warm = lax.exp(lax.mul(lax.mul(t.astype(wide), decay_w), log_base))
            return lax.mul(b1_w, lax.sub(jnp.ones((), wide), lax.mul(numerics.scalar(0.5, wide), warm)))

        steps = next_counts(state.step)
        m_schedule = state.m_schedule.map(lambda m, t: lax.mul(m.astype(wide), momentum_cache(t)).astype(m.dtype),
                                          steps)

        def step_scalars(count, dtype):
            t, m_new = count
            one = jnp.ones((), wide)
            mu_t, mu_t1 = momentum_cache(t), momentum_cache(t + 1)
            m_new = m_new.astype(wide)
            coef_g = lax.div(lax.sub(one, mu_t), lax.sub(one, m_new))
            coef_m = lax.div(mu_t1, lax.sub(one, lax.mul(m_new, mu_t1)))
            bc2_sqrt = lax.sqrt(numerics.bias_correction(h.b2, t, wide))
            return tuple(numerics.cast(x, dtype) for x in (coef_g, coef_m, bc2_sqrt))

        def math(leaf, g, m, v, _count, scalars):
            coef_g, coef_m, bc2_sqrt = scalars
            dtype = leaf.dtype
            g, m, v = leaf.as_complex(g, m, v)
            m = m * numerics.scalar(h.b1, dtype) + numerics.one_minus(h.b1, dtype) * g
            v = v * numerics.scalar(h.b2, dtype) + numerics.one_minus(h.b2, dtype) * g * g
            denom = jnp.sqrt(v) / bc2_sqrt + numerics.scalar(h.eps, dtype)
            return leaf.as_real(coef_g * g / denom + coef_m * m / denom, m, v)

        new_updates, new_state = per_param_update(
            state, updates, math, buffers=("exp_avg", "exp_avg_sq"),
            counts=steps.map(lambda t, ms: (t, ms), m_schedule), step_scalars=step_scalars, pin_step_scalars=True)
        return new_updates, new_state._replace(
            m_schedule=select_present(m_schedule, state.m_schedule, updates, state.exp_avg))

    return GradientTransformation(init, update)


__all__ = ["ScaleByNadamLegacyState", "scale_by_nadam_legacy"]
