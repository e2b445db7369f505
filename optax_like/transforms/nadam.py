"""`scale_by_nadam`: torch.optim.NAdam's Nesterov-accelerated Adam direction."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts, leaf_scalars, next_counts, select_present
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, FLOAT32, STEP, STEPS_TAKEN

# torch keeps `mu_product` as a 0-d tensor of `_get_scalar_dtype()`: float32 unless torch's
# default dtype is float64, whatever the params' dtype. Its rounding shows in float64 results.
MU_PRODUCT_DTYPE = jnp.float32


class ScaleByNadamState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped
    exp_avg_sq: Any  # second moment, params-shaped
    mu_product: LeafScalars  # per-leaf running product of mu_t (float32, one 0-d per leaf)
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByNadamState,
    buffers=("exp_avg", "exp_avg_sq"),
    scalars={"step": STEP, "mu_product": FLOAT32},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def _mu(beta1, t, momentum_decay, wide):
    """`beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))` in `wide` (0.96**x via numerics.power)."""
    exponent = t.astype(wide) * numerics.scalar(momentum_decay, wide)
    return numerics.scalar(beta1, wide) * (1.0 - 0.5 * numerics.power(0.96, exponent, wide))


def scale_by_nadam(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    momentum_decay: ScalarOrSchedule = 4e-3,
    differentiable_lr: ScalarOrSchedule | None = None,
) -> GradientTransformation:
    """NAdam's direction (Dozat, 2016), in torch's order of operations, without the lr:

        t      <- t + 1
        mu_t    = b1 * (1 - 0.5 * 0.96^(t * momentum_decay))
        mu_t+1  = b1 * (1 - 0.5 * 0.96^((t + 1) * momentum_decay))
        P_t     = P_{t-1} * mu_t                          (state `mu_product`, P_0 = 1, float32)
        m_t     = lerp(m_{t-1}, g, 1 - b1)
        v_t     = b2 * v_{t-1} + (1 - b2) * g^2
        d       = sqrt(v_t / (1 - b2^t)) + eps            (divide, then sqrt: unlike Adam)
        out     = (1 - mu_t) / (1 - P_t) * g / d  +  mu_t+1 / (1 - P_t * mu_t+1) * m_t / d

    torch quirks reproduced: `mu_product` is a float32 scalar per param (torch's default scalar
    dtype) even for float64 params, multiplied in float32 (`mu_product *= mu`), while
    `P_t * mu_t+1` and the two coefficients are formed from it in float64 on the host; here they
    are formed in the widest float available (float64 under x64). torch adds the two terms to
    the param in two `addcdiv_` calls with `-lr` folded into each coefficient; here the sum is
    one update that `scale_by_learning_rate` multiplies by `-lr` (same value; in float32 the
    param's two roundings per step against one drift by up to ~7e-7 relative over 50 steps).
    Complex params are pairs of reals; a None update leaf is skipped with its state (moments,
    `mu_product`, `step`) untouched.

    With `differentiable_lr` given, the block emits the whole step of torch's
    `differentiable=True` path (no `scale_by_learning_rate` after it): the coefficients, `-lr`
    included, are formed from the float32 `mu_product` tensor as torch does there,

        c_g = -lr (1 - mu_t) / (1 - P_t),   c_m = -lr mu_t+1 / (1 - P_t * mu_t+1)   (float32)
        out = c_g * g / d + c_m * m_t / d

    (an array lr, torch's Tensor lr, keeps its own dtype instead of float32).
    """

    def init(params):
        return ScaleByNadamState(
            exp_avg=zeros_like(params),
            exp_avg_sq=zeros_like(params),
            mu_product=leaf_scalars(params, 1, MU_PRODUCT_DTYPE),
            step=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps, momentum_decay=momentum_decay,
                        lr=differentiable_lr)
        steps = next_counts(state.step)
        wide = numerics.float_dtype()  # float64 under x64: torch's host float math

        # Per-leaf scalars (shared while the steps are, see `core.leaf_scalars.LeafScalars`).
        mu = steps.map(lambda t: _mu(h.b1, t, h.momentum_decay, wide))
        mu_next = steps.map(lambda t: _mu(h.b1, t + 1, h.momentum_decay, wide))
        # torch: float32 tensor *= mu
        if differentiable_lr is None:
            product = state.mu_product.map(lambda p, m: p * m.astype(MU_PRODUCT_DTYPE), mu)
        else:  # the product feeds `1 - product` below: rounded on its own, as torch's tensor
            product = state.mu_product.map(numerics.float32_product, mu)

        def coefficients(t, p, m, m_next):
            if differentiable_lr is not None:
                return (t, *differentiable_coefficients(p, m, m_next))
            p = p.astype(wide)
            return t, (1.0 - m) / (1.0 - p), m_next / (1.0 - p * m_next)

        def differentiable_coefficients(p, m, m_next):
            """torch's differentiable path: Python-float numerators over float32 tensors
            (`x / tensor` is `tensor.reciprocal() * x`), or tensors of an array lr's dtype."""
            f32 = jnp.dtype(MU_PRODUCT_DTYPE)
            p_next = numerics.float32_product(p, m_next)  # float32 tensor * Python float
            if numerics.is_python_number(h.lr):
                lr = numerics.scalar(h.lr, wide)
                return tuple((1 / (1 - q)) * (-lr * x).astype(f32) for q, x in ((p, 1.0 - m), (p_next, m_next)))
            kind = jnp.result_type(numerics.plain(h.lr))
            kind = jnp.promote_types(kind if jnp.issubdtype(kind, jnp.floating) else numerics.float_dtype(), f32)
            lr = numerics.scalar(h.lr, kind)
            return tuple((-lr * x.astype(kind)) / (1 - q).astype(kind) for q, x in ((p, 1.0 - m), (p_next, m_next)))

        def step_scalars(count, dtype):
            t, coef_grad, coef_avg = count
            return numerics.bias_correction(h.b2, t, dtype), numerics.cast(coef_grad, dtype), numerics.cast(coef_avg, dtype)

        def math(leaf, g, m, v, _count, scalars):
            bc2, coef_grad, coef_avg = scalars
            dtype = leaf.dtype
            m = numerics.lerp(m, g, numerics.one_minus(h.b1, dtype))
            v = lax.add(lax.mul(v, numerics.scalar(h.b2, dtype)), lax.mul(lax.mul(numerics.one_minus(h.b2, dtype), g), g))
            denom = lax.add(lax.sqrt(lax.div(v, bc2)), numerics.scalar(h.eps, dtype))
            grad_part = lax.div(lax.mul(coef_grad, g), denom)
            return lax.add(grad_part, lax.div(lax.mul(coef_avg, m), denom)), m, v

        new_updates, new_state = per_param_update(
            state, updates, math, buffers=("exp_avg", "exp_avg_sq"),
            counts=steps.map(coefficients, product, mu, mu_next), step_scalars=step_scalars, pin_step_scalars=True, computed_once=True,
        )
        mu_product = select_present(product, state.mu_product, updates, state.exp_avg)
        return new_updates, new_state._replace(mu_product=mu_product)

    return GradientTransformation(init, update)
