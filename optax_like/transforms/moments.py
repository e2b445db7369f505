"""`scale_by_adam`: torch.optim.Adam's moment estimates and normalisation (Adam-style moments)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.tree import LeafScalars, increment_counts, init_counts, next_counts, map_params, update_leaves, zeros_like
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN


class ScaleByAdamState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped
    exp_avg_sq: Any  # second moment
    max_exp_avg_sq: Any  # running max of exp_avg_sq (AMSGrad); None leaves otherwise
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled betas


declare_torch_state(
    ScaleByAdamState,
    buffers=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_adam(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    amsgrad: bool = False,
) -> GradientTransformation:
    """Adam's direction, in torch's order of operations (without the learning rate):

        t   <- t + 1
        m_t  = lerp(m_{t-1}, g, 1 - b1)                  (torch's exp_avg.lerp_)
        v_t  = b2 * v_{t-1} + (1 - b2) * g * g
        v^   = max(v^_{t-1}, v_t)  if amsgrad else v_t   (the max of the *raw* v, not v/bc2)
        u    = (m_t / (1 - b1^t)) / (sqrt(v^) / sqrt(1 - b2^t) + eps)

    Complex params are treated as pairs of reals, as torch does. Steps are counted per leaf:
    a leaf whose update is None is skipped with its state untouched (torch's `grad is None`).
    """

    def init(params):
        zeros = zeros_like(params)
        return ScaleByAdamState(
            exp_avg=zeros,
            exp_avg_sq=zeros_like(params),
            max_exp_avg_sq=zeros_like(params) if amsgrad else map_params(lambda p: None, params),
            step=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        beta1 = numerics.resolve(b1, state.schedule_count)
        beta2 = numerics.resolve(b2, state.schedule_count)
        epsilon = numerics.resolve(eps, state.schedule_count)
        steps = next_counts(state.step)
        bias_corrections = numerics.once_per_step(lambda t, dtype: (
            numerics.bias_correction(beta1, t, dtype), jnp.sqrt(numerics.bias_correction(beta2, t, dtype))))

        def leaf(g, m, v, vmax, t):
            like = m
            dtype = numerics.compute_dtype(numerics.real_view(m).dtype)
            g, m, v = (numerics.real_view(x).astype(dtype) for x in (g, m, v))
            m = numerics.lerp(m, g, numerics.one_minus(beta1, dtype))
            v = v * numerics.scalar(beta2, dtype) + (numerics.one_minus(beta2, dtype) * g) * g
            if amsgrad:
                vmax = jnp.maximum(numerics.real_view(vmax).astype(dtype), v)
            if dtype == numerics.real_view(like).dtype:
                # Speed only (values unchanged): materialise the new moments once so that XLA
                # writes them in place and the update reads them, instead of recomputing them
                # in the params' kernel (benchmarks/optimizer_step.py: ~1.5x on CPU).
                m, v, vmax = jax.lax.optimization_barrier((m, v, vmax if amsgrad else None))
            if amsgrad:
                second = vmax
            else:
                second = v
            bc1, bc2_sqrt = bias_corrections(t, dtype)
            denom = jnp.sqrt(second) / bc2_sqrt + numerics.scalar(epsilon, dtype)
            u = (m / bc1) / denom
            store = lambda x: numerics.complex_view(x, like).astype(like.dtype)
            return (
                numerics.complex_view(u, like),
                store(m),
                store(v),
                store(vmax) if amsgrad else None,
            )

        new_updates, exp_avg, exp_avg_sq, max_exp_avg_sq = update_leaves(
            leaf, updates, state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq, counts=steps
        )
        return new_updates, ScaleByAdamState(
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
            increment_counts(state.step, updates, state.exp_avg),
            numerics.safe_increment(state.schedule_count),
        )

    return GradientTransformation(init, update)
