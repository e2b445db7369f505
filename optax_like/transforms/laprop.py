"""`scale_by_laprop`: timm.optim.LaProp's whole step (LaProp, Ziyin, Wang & Ueda, 2020)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts, leaf_scalars, next_counts, select_present
from optax_like.core.torch_layout import FLOAT, FLOAT32, STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.caution import cautious
from optax_like.transforms.weight_decay import decoupled_decay_alpha

# timm keeps `exp_avg_lr_2` as a 0-d tensor of `_get_scalar_dtype()` (float32 unless torch's
# default dtype is float64), whatever the params' dtype: its float32 rounding shows in float64
# results. `exp_avg_lr_1` is a Python float for a number lr (float64 host math): stored here in
# the widest float available (`numerics.float_dtype()`, float64 under x64), exported as a Python
# float (layout kind `FLOAT`).
EXP_AVG_LR_2_DTYPE = jnp.float32


class ScaleByLapropState(NamedTuple):
    exp_avg: Any  # momentum of the normalised gradient, lr included, params-shaped
    exp_avg_sq: Any  # second moment of the gradient, params-shaped
    step: LeafScalars  # per-leaf step count (timm's state['step'])
    exp_avg_lr_1: LeafScalars  # per-leaf EMA of the lr (beta1): the first bias correction times lr
    exp_avg_lr_2: LeafScalars  # per-leaf 1 - beta2**t as an EMA of ones (float32, timm's tensor)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByLapropState,
    buffers=("exp_avg", "exp_avg_sq"),
    scalars={"step": STEP, "exp_avg_lr_1": FLOAT, "exp_avg_lr_2": FLOAT32},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def _host_product(a: Any, b_one_minus: Any, dtype) -> Any:
    """`(1 - b) * a` as timm's Python float math for host numbers (float64), else in `dtype`."""
    if numerics.is_host_scalar(a) and numerics.is_host_scalar(b_one_minus):
        return numerics.scalar((1.0 - float(b_one_minus)) * float(a), dtype)
    return lax.mul(numerics.one_minus(b_one_minus, dtype), numerics.scalar(a, dtype))


def scale_by_laprop(
    lr: ScalarOrSchedule = 4e-4,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-15,
    *,
    decay_lr: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    caution: bool = False,
) -> GradientTransformation:
    """LaProp's step, learning rate and decoupled decay included, in timm's order of operations
    (`LaProp.step` and `_single_tensor_laprop`):

        t    <- t + 1
        a1   <- b1 * a1 + (1 - b1) * lr              (`exp_avg_lr_1`, a1_0 = 0; float64)
        a2   <- b2 * a2 + (1 - b2)                   (`exp_avg_lr_2`, a2_0 = 0; float32: 1 - b2**t)
        s     = lr / a1   (0 where a1 == 0)          (1 / bias correction 1, lr-weighted)
        v_t   = b2 * v + (1 - b2) * g * g
        m_t   = b1 * m + lr (1 - b1) * g / (sqrt(v_t / a2) + eps)
        p'    = p - s * m_t                          (m_t masked if caution)
        p''   = p' - decay_lr * weight_decay * p'    (decoupled decay of the moved param; 0: none)

    The block emits the whole step, `p'' - p` (just `-s * m_t` without decay), because timm
    decays the param after moving it. Momentum is taken of the normalised gradient (LaProp's
    point: momentum and adaptivity separated) and carries the lr, which the lr-weighted `a1`
    divides back out, so a changing lr (schedules) weights past steps as timm does. Complex
    params are pairs of reals (timm's `view_as_real`). A leaf whose update is None is skipped
    with its state (moments, `step`, `exp_avg_lr_1/2`) untouched.
    """
    caution = bool(caution)

    def init(params):
        return ScaleByLapropState(
            exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params), step=init_counts(params),
            exp_avg_lr_1=leaf_scalars(params, 0, numerics.float_dtype()),
            exp_avg_lr_2=leaf_scalars(params, 0, EXP_AVG_LR_2_DTYPE),
            schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        h = hyperparams(state.schedule_count, lr=lr, b1=b1, b2=b2, eps=eps,
                        decay_lr=decay_lr, weight_decay=weight_decay)
        decays = validation.maybe_nonzero(h.weight_decay)
        if decays and params is None:
            raise ValueError("scale_by_laprop with weight decay needs the params: call update(updates, state, params).")
        wide = numerics.float_dtype()
        f32 = jnp.dtype(EXP_AVG_LR_2_DTYPE)
        lr_share = _host_product(h.lr, h.b1, wide)  # timm's `one_minus_beta1 * lr` (= `lr * (1 - beta1)`)

        # timm's per-param scalar state: a1 in float64 host math, a2 a float32 tensor.
        lr_1 = state.exp_avg_lr_1.map(lambda a: lax.add(lax.mul(a, numerics.scalar(h.b1, a.dtype)),
                                                        numerics.cast(lr_share, a.dtype)))
        lr_2 = state.exp_avg_lr_2.map(lambda a: lax.add(numerics.float32_product(a, h.b2), numerics.one_minus(h.b2, f32)))
        steps = next_counts(state.step)

        def step_scalars(count, dtype):
            _t, a1, a2 = count
            a1 = a1.astype(wide)
            nonzero = lax.ne(a1, jnp.zeros((), wide))
            size = jnp.where(nonzero, lax.div(numerics.scalar(h.lr, wide), jnp.where(nonzero, a1, jnp.ones((), wide))),
                             jnp.zeros((), wide))
            return numerics.cast(lax.neg(size), dtype), numerics.cast(a2, dtype)

        def math(leaf, g, m, v, *rest):
            neg_size, bc2 = rest[-1]
            dtype = leaf.dtype
            v = lax.add(lax.mul(v, numerics.scalar(h.b2, dtype)), lax.mul(lax.mul(numerics.one_minus(h.b2, dtype), g), g))
            denom = lax.add(lax.sqrt(lax.div(v, bc2)), numerics.scalar(h.eps, dtype))
            m = lax.add(lax.mul(m, numerics.scalar(h.b1, dtype)), lax.mul(numerics.cast(lr_share, dtype), lax.div(g, denom)))
            direction = cautious(m, g) if caution else m
            u = lax.mul(neg_size, direction)
            if decays:
                p = rest[0]
                moved = lax.add(p, u)
                moved = lax.add(moved, lax.mul(decoupled_decay_alpha(h.decay_lr, h.weight_decay, dtype), moved))
                u = lax.sub(moved, p)
            return u, m, v

        new_updates, new_state = per_param_update(
            state, updates, math, buffers=("exp_avg", "exp_avg_sq"), inputs=(params,) if decays else (),
            counts=steps.map(lambda t, a1, a2: (t, a1, a2), lr_1, lr_2), step_scalars=step_scalars,
        )
        return new_updates, new_state._replace(
            exp_avg_lr_1=select_present(lr_1, state.exp_avg_lr_1, updates, state.exp_avg),
            exp_avg_lr_2=select_present(lr_2, state.exp_avg_lr_2, updates, state.exp_avg))

    return GradientTransformation(init, update)


__all__ = ["ScaleByLapropState", "scale_by_laprop"]
