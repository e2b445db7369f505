"""`scale_by_adabelief`: timm.optim.AdaBelief's direction (Zhuang et al., 2020)."""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update, refuse_complex
from optax_like.transforms.radam import radam_rectification


class ScaleByAdabeliefState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped
    exp_avg_var: Any  # EMA of (g - m)^2, eps included (timm adds it in place), params-shaped
    max_exp_avg_var: Any  # running max of exp_avg_var (amsgrad only; None leaves otherwise)
    step: LeafScalars  # per-leaf step count (timm's state['step'], a Python int)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByAdabeliefState,
    buffers=("exp_avg", "exp_avg_var", "max_exp_avg_var"),
    scalars={"step": INT_STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_adabelief(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-16,
    *,
    amsgrad: bool = False,
    rectify: bool = True,
    degenerated_to_sgd: bool = True,
) -> GradientTransformation:
    """AdaBelief's direction, in timm's order of operations (without the lr):

        t   <- t + 1
        m_t  = lerp(m_{t-1}, g, 1 - b1)
        s_t  = b2 * s_{t-1} + (1 - b2) * (g - m_t)^2 + eps       (eps kept in the state)
        s^   = max(s^_{t-1}, s_t)                                 (amsgrad: `max_exp_avg_var`)
        not rectify:  out = (m_t / (1 - b1^t)) / (sqrt(s^ or s_t) / sqrt(1 - b2^t) + eps)
        rectify (RAdam's rho_t, rho_inf):
            rho_t >= 5:          out = m_t * k / (sqrt(s_t) + eps),
                                 k = sqrt((1 - b2^t) (rho_t - 4)(rho_t - 2) rho_inf /
                                          ((rho_inf - 4)(rho_inf - 2) rho_t)) / (1 - b1^t)
            else, degenerated:   out = m_t / (1 - b1^t)
            else:                out = 0

    The belief `s` is the variance of the gradient around its prediction `m`, not Adam's
    second moment. With `rectify` the max of amsgrad is kept but not used (timm's rectified
    update reads `exp_avg_var`). For a host `b2` the switch to the rectified step happens at
    exactly timm's float64 step (`radam_rectification`, inclusive: timm compares `>= 5`,
    torch's RAdam `> 5`). Complex params are computed on as complex numbers, as timm does
    (`(g - m)^2` and its square root are complex; amsgrad's max is refused: torch has no
    complex max, see the record). A None update leaf is skipped with its state untouched.
    """
    amsgrad, rectify, degenerated_to_sgd = bool(amsgrad), bool(rectify), bool(degenerated_to_sgd)

    def init(params):
        if amsgrad:  # torch.max on complex tensors
            refuse_complex(params, lambda dtype: RuntimeError("maximum not implemented for complex tensors."))
        return ScaleByAdabeliefState(
            exp_avg=zeros_like(params), exp_avg_var=zeros_like(params),
            max_exp_avg_var=zeros_like(params) if amsgrad else map_params(lambda p: None, params),
            step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps)
        wide = numerics.float_dtype()  # float64 under x64: timm's host float math

        @numerics.once_per_step
        def rectified_size(t):
            """(rectified, k) of the leaf's step `t` (host-style float math, in `wide`)."""
            rectified, rect = radam_rectification(h.b2, t, wide, inclusive=True)
            size = lax.div(lax.mul(lax.sqrt(numerics.bias_correction(h.b2, t, wide)), rect),
                           numerics.bias_correction(h.b1, t, wide))
            return rectified, size

        def step_scalars(t, dtype):
            bc1 = numerics.cast(numerics.bias_correction(h.b1, t, wide), dtype)
            if not rectify:
                return bc1, numerics.cast(lax.sqrt(numerics.bias_correction(h.b2, t, wide)), dtype)
            return bc1, numerics.cast(rectified_size(t)[1], dtype)

        def math(leaf, g, m, s, s_max, t, scalars):
            # timm computes on complex tensors as they are (no view_as_real): (g - m)^2 and its
            # square root are complex, so complex leaves go through jnp's operators, which
            # promote complex by real scalars; real leaves through `lax` (the same program, a
            # fraction of the tracing time)
            add, sub, mul, div, sqrt = _COMPLEX_OPS if leaf.is_complex else _REAL_OPS
            g, m, s, s_max = leaf.as_complex(g, m, s, s_max)
            dtype = leaf.dtype
            eps_ = numerics.scalar(h.eps, dtype)
            m = numerics.lerp(m, g, numerics.one_minus(h.b1, dtype))
            residual = sub(g, m)
            s = add(add(mul(s, numerics.scalar(h.b2, dtype)), mul(mul(numerics.one_minus(h.b2, dtype), residual), residual)),
                    eps_)
            if amsgrad:
                s_max = lax.max(s_max, s)
            bc1, second = scalars
            if not rectify:
                u = div(div(m, bc1), add(div(sqrt(s_max if amsgrad else s), second), eps_))
            else:
                adaptive = div(mul(m, second), add(sqrt(s), eps_))
                fallback = div(m, bc1) if degenerated_to_sgd else jnp.zeros_like(m)
                u = jnp.where(rectified_size(t)[0], adaptive, fallback)
            return leaf.as_real(u, m, s, s_max)

        return per_param_update(state, updates, math, buffers=("exp_avg", "exp_avg_var", "max_exp_avg_var"),
                                step_scalars=step_scalars)

    return GradientTransformation(init, update)


_REAL_OPS = (lax.add, lax.sub, lax.mul, lax.div, lax.sqrt)
_COMPLEX_OPS = (operator.add, operator.sub, operator.mul, operator.truediv, jnp.sqrt)


__all__ = ["ScaleByAdabeliefState", "scale_by_adabelief"]
