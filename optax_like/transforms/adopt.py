"""`scale_by_adopt`: timm.optim.Adopt's whole step (ADOPT, Taniguchi et al., 2024)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.torch_layout import STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.caution import cautious
from optax_like.transforms.weight_decay import decoupled_decay_alpha


class ScaleByAdoptState(NamedTuple):
    exp_avg: Any  # first moment of the normalised gradient, params-shaped
    exp_avg_sq: Any  # second moment of the gradient
    step: LeafScalars  # per-leaf step count (timm's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByAdoptState,
    buffers=("exp_avg", "exp_avg_sq"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
    stepped_if_present=("step",),  # timm: first_steps = len(state) == 0; here t == 1
)


def scale_by_adopt(
    lr: ScalarOrSchedule = 1e-3,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.9999,
    eps: ScalarOrSchedule = 1e-6,
    clip_exp: ScalarOrSchedule | None = 0.333,
    *,
    decay_lr: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    caution: bool = False,
) -> GradientTransformation:
    """ADOPT's step, learning rate and decoupled decay included, in timm's order of operations:

        t   <- t + 1
        t == 1:  v_1 = g * g; the param does not move (nor decay)
        else:    p   <- p - decay_lr * weight_decay * p           (decoupled decay; 0: none)
                 n    = clamp(g / max(sqrt(v), eps), -c, c),  c = (t - 1) ** clip_exp
                 m_t  = lerp(m, n, 1 - b1)
                 p   <- p - lr * m_t                             (m_t masked if caution)
                 v_t  = b2 * v + (1 - b2) * g * g

    The block emits the whole step (no `scale_by_learning_rate` after it) because ADOPT's first
    step of a param skips its decay too. `clip_exp=None`: no clamp. `c` is timm's float64 host
    value where x64 is on; in float32 it is computed in float32 (an ulp or two of `c`, which
    only matters for clamped entries). Complex params are pairs of reals (timm's
    `view_as_real`). A leaf whose update is None is skipped with its state untouched.
    """
    caution = bool(caution)

    def init(params):
        return ScaleByAdoptState(exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params),
                                 step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_adopt needs the params: call update(updates, state, params).")
        h = hyperparams(state.schedule_count, lr=lr, b1=b1, b2=b2, eps=eps, clip_exp=clip_exp,
                        decay_lr=decay_lr, weight_decay=weight_decay)
        decays = validation.maybe_nonzero(h.weight_decay)

        clips = numerics.plain(h.clip_exp) is not None

        def step_scalars(t, dtype):  # once per step count, not per leaf
            # timm's first step sets v = g * g and moves neither m nor the param. Here the first
            # step is in the step scalars where that is exact: v's update weights (b2, 1 - b2)
            # become (0, 1), which from the fresh v = 0 give 0 * 0 + (1 * g) * g = g * g, and
            # the step size -lr becomes 0 (the moment it multiplies is the fresh m = 0). The
            # moment (whose normalised gradient may be inf or NaN at the first step, g / eps)
            # and a decayed param's update (p - p is NaN for an inf param) keep an elementwise
            # select.
            first = lax.eq(t, jnp.ones_like(t))
            zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)
            b2_ = jnp.where(first, zero, numerics.scalar(h.b2, dtype))
            w2 = jnp.where(first, one, numerics.one_minus(h.b2, dtype))
            # -0.0, the additive identity: p + (-0.0 * 0) is p, a -0.0 param included
            neg_lr = jnp.where(first, jnp.full((), -0.0, dtype), lax.neg(jnp.asarray(numerics.scalar(h.lr, dtype))))
            if not clips:
                return first, None, None, b2_, w2, neg_lr
            wide = numerics.float_dtype()
            c = lax.convert_element_type(lax.pow(lax.convert_element_type(t - 1, wide), numerics.scalar(h.clip_exp, wide)), dtype)
            return first, lax.neg(c), c, b2_, w2, neg_lr

        def math(leaf, g, m, v, p, _t, scalars):
            dtype = leaf.dtype
            first, neg_c, c, b2_, w2, neg_lr = scalars
            moved = lax.add(p, lax.mul(decoupled_decay_alpha(h.decay_lr, h.weight_decay, dtype), p)) if decays else p
            denom = lax.max(lax.sqrt(v), numerics.scalar(h.eps, dtype))
            normed = lax.div(g, denom)
            if clips:  # clamp(normed, -c, c), the broadcast scalars first (see
                # transforms/_per_param.py, "Uniform kernels")
                normed = lax.min(c, lax.max(neg_c, normed))
            # the stored moment is m_t except at the first step (m): the param's kernel reads the
            # stored moment (XLA then keeps the division in the moment's kernel and writes m in
            # place; from m_t it would recompute the lerp from m and a materialised g / denom,
            # and copy m first)
            m_out = jnp.where(first, m, numerics.lerp(m, normed, numerics.one_minus(h.b1, dtype)))
            step = cautious(m_out, g) if caution else m_out
            v_new = lax.add(lax.mul(v, b2_), lax.mul(lax.mul(w2, g), g))
            if not decays:  # timm's p.add_(m, alpha=-lr) is p + u
                return lax.mul(neg_lr, step), m_out, v_new
            moved = lax.add(moved, lax.mul(neg_lr, step))
            # the first step's update is -0.0, not p - p (an inf param stays inf, as timm's)
            return jnp.where(first, jnp.full_like(p, -0.0), lax.sub(moved, p)), m_out, v_new

        return per_param_update(state, updates, math, buffers=("exp_avg", "exp_avg_sq"), inputs=(params,),
                                step_scalars=step_scalars)

    return GradientTransformation(init, update)
