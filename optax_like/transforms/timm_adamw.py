"""`scale_by_timm_adamw`: the Adam direction of timm.optim.AdamWLegacy and timm.optim.NAdamW
(with Nesterov's look-ahead), caution and StableAdamW's update clipping included."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.caution import cautious
from optax_like.transforms.trust_ratio import leaf_norm


class ScaleByTimmAdamwState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped
    exp_avg_sq: Any  # second moment, params-shaped
    max_exp_avg_sq: Any  # running max of exp_avg_sq (amsgrad only; None leaves otherwise)
    step: LeafScalars  # per-leaf step count (timm's state['step'], a 0-d float32 tensor)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByTimmAdamwState,
    buffers=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def rms_clipped(denom: jax.Array, g: jax.Array, threshold: Any) -> jax.Array:
    """timm's `_rms_clip_denom_` (StableAdamW's update clipping) on one real leaf: `denom`
    times `max(1, rms / threshold)` with `rms = ||g / denom|| / sqrt(numel)` (`numel ** 0.5` a
    host float, as timm's)."""
    dtype = denom.dtype
    rms = lax.div(leaf_norm(lax.div(g, denom)), numerics.scalar(float(np.size(g)) ** 0.5, dtype))
    return lax.mul(denom, lax.max(lax.div(rms, numerics.scalar(threshold, dtype)), jnp.ones((), dtype)))


def scale_by_timm_adamw(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
    caution: bool = False,
    clipping_threshold: float | None = None,
) -> GradientTransformation:
    """The direction of timm's AdamWLegacy (`nesterov=False`) and NAdamW (`nesterov=True`), in
    timm's order of operations (without the lr):

        t   <- t + 1
        m_t  = lerp(m_{t-1}, g, 1 - b1);   v_t = b2 * v_{t-1} + (1 - b2) * g^2
        v^   = max(v^_{t-1}, v_t)                             (amsgrad; else v^ = v_t)
        n    = lerp(m_t, g, 1 - b1) if nesterov else m_t      (Nesterov's look-ahead; not stored)
        d    = sqrt(v^) / sqrt(1 - b2^t) + eps
        d   <- d * max(1, rms(g / d) / clipping_threshold)   if clipping_threshold (StableAdamW)
        n   <- n * mask / max(mean(mask), 1e-3),  mask = [n * g > 0]     if caution
        out  = (n / (1 - b1^t)) / d

    Complex params are pairs of reals (timm's `view_as_real`: the rms over both parts). A leaf
    whose update is None is skipped with its state untouched.
    """
    caution, nesterov, amsgrad = bool(caution), bool(nesterov), bool(amsgrad)

    def init(params):
        return ScaleByTimmAdamwState(
            exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params),
            max_exp_avg_sq=zeros_like(params) if amsgrad else map_params(lambda p: None, params),
            step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps)

        def step_scalars(t, dtype):
            return (numerics.bias_correction(h.b1, t, dtype),
                    numerics.cast(lax.sqrt(numerics.bias_correction(h.b2, t, numerics.float_dtype())), dtype))

        def math(leaf, g, m, v, vmax, _t, scalars):
            bc1, bc2_sqrt = scalars
            dtype = leaf.dtype
            weight = numerics.one_minus(h.b1, dtype)
            m = numerics.lerp(m, g, weight)
            v = lax.add(lax.mul(v, numerics.scalar(h.b2, dtype)), lax.mul(lax.mul(numerics.one_minus(h.b2, dtype), g), g))
            if amsgrad:
                vmax = lax.max(vmax, v)
            n = numerics.lerp(m, g, weight) if nesterov else m
            denom = lax.add(lax.div(lax.sqrt(vmax if amsgrad else v), bc2_sqrt), numerics.scalar(h.eps, dtype))
            if clipping_threshold is not None:
                denom = rms_clipped(denom, g, clipping_threshold)
            if caution:
                n = cautious(n, g)
            return lax.div(lax.div(n, bc1), denom), m, v, vmax

        return per_param_update(state, updates, math, buffers=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                                step_scalars=step_scalars, pin_step_scalars=True, computed_once=True)

    return GradientTransformation(init, update)


__all__ = ["ScaleByTimmAdamwState", "rms_clipped", "scale_by_timm_adamw"]
