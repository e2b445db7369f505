"""`scale_by_adamp`: timm.optim.AdamP's whole step (AdamP, Heo et al., 2021): Adam whose update
loses its radial component on scale-invariant weights."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update, refuse_complex
from optax_like.transforms.caution import cautious
from optax_like.transforms.caution import refuse_complex as refuse_complex_caution


class ScaleByAdampState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped
    exp_avg_sq: Any  # second moment, params-shaped
    step: LeafScalars  # per-leaf step count (timm's state['step'], a Python int)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByAdampState,
    buffers=("exp_avg", "exp_avg_sq"),
    scalars={"step": INT_STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def _row_norms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(x * x, axis=1))


def projection(p: jax.Array, g: jax.Array, perturb: jax.Array, delta: Any, eps: Any, caution: bool):
    """timm's `projection` on one real leaf of >= 2 dimensions: `(perturb, projected)`. For the
    channel view (rows: the first axis) and then the whole-layer view, the first whose largest
    |cosine(g, p)| per row is below `delta / sqrt(row size)` removes from `perturb` its
    component along each row of p (and with caution masks it against g's perpendicular part,
    then projects again); `projected` says whether one did (the decay then takes `wd_ratio`)."""
    dtype = p.dtype
    eps_ = numerics.scalar(eps, dtype)
    expand = (-1,) + (1,) * (p.ndim - 1)
    outcomes = []
    for rows in (p.shape[0], 1):
        view = lambda x: x.reshape(rows, -1)  # noqa: E731
        pv, gv = view(p), view(g)
        p_norm, g_norm = _row_norms(pv), _row_norms(gv)
        cosine = jnp.abs(jnp.sum((gv / jnp.maximum(g_norm, eps_)[:, None]) * (pv / jnp.maximum(p_norm, eps_)[:, None]), axis=1))
        n = pv.shape[1]
        if numerics.is_host_scalar(delta):
            threshold = numerics.scalar(float(delta) / math.sqrt(n), dtype)
        else:
            threshold = numerics.scalar(delta, dtype) / numerics.scalar(math.sqrt(n), dtype)
        chosen = jnp.max(cosine) < threshold
        p_n = p / (p_norm + eps_).reshape(expand)
        radial = lambda x: p_n * jnp.sum(view(p_n * x), axis=1).reshape(expand)  # noqa: E731
        projected = perturb - radial(perturb)
        if caution:
            projected = cautious(projected, g - radial(g))
            projected = projected - radial(projected)
        outcomes.append((chosen, projected))
    plain = cautious(perturb, g) if caution else perturb
    (by_channel, channel), (by_layer, layer) = outcomes
    return jnp.where(by_channel, channel, jnp.where(by_layer, layer, plain)), jnp.logical_or(by_channel, by_layer)


def refuse_complex_projection(params: Any, caution: bool) -> None:
    """The errors of timm's AdamP/SGDP on complex params, at `init`: with `caution`, torch's `>`
    on any complex param; else torch's cosine similarity on a complex matrix (real only)."""
    if caution:
        refuse_complex_caution(params)
    matrices = [p for p in jax.tree.leaves(params) if jnp.ndim(p) > 1]
    refuse_complex(matrices, lambda dtype: RuntimeError(
        "expected common dtype to be floating point, yet common dtype is "
        + ("ComplexFloat" if jnp.dtype(dtype) == jnp.complex64 else "ComplexDouble")))


def scale_by_adamp(
    lr: ScalarOrSchedule = 1e-3,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    delta: ScalarOrSchedule = 0.1,
    wd_ratio: ScalarOrSchedule = 0.1,
    *,
    nesterov: bool = False,
    caution: bool = False,
) -> GradientTransformation:
    """AdamP's step, learning rate and decay included, in timm's order of operations:

        t   <- t + 1
        m_t  = b1 m + (1 - b1) g;   v_t = b2 v + (1 - b2) g^2
        d    = sqrt(v_t) / sqrt(1 - b2^t) + eps
        u    = (b1 m_t + (1 - b1) g) / d  if nesterov  else  m_t / d
        u   <- projection(p, g, u)  (params of >= 2 dimensions; see `projection`), r = wd_ratio
               if it projected, else 1;  u masked by caution on the others
        p   <- p * (1 - lr * weight_decay * r)                        (weight_decay > 0)
        p   <- p - lr / (1 - b1^t) * u

    The block emits the whole step (the decay depends on the projection). Complex params of
    fewer than 2 dimensions are computed on as complex numbers, as timm does; complex
    matrices are refused with torch's error (its cosine similarity is real only), and with
    caution every complex param (torch's `>`). A leaf whose update is None is skipped with its
    state untouched.
    """
    nesterov, caution = bool(nesterov), bool(caution)
    # timm decays where weight_decay > 0 (a negative one: not at all)
    decays = validation.maybe_nonzero(weight_decay) and not (
        numerics.is_host_scalar(weight_decay) and float(cast(float, weight_decay)) <= 0)

    def init(params):
        refuse_complex_projection(params, caution)
        return ScaleByAdampState(exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params),
                                 step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_adamp needs the params: call update(updates, state, params).")
        h = hyperparams(state.schedule_count, lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                        delta=delta, wd_ratio=wd_ratio)
        wide = numerics.float_dtype()

        def step_scalars(t, dtype):
            neg_step = -(numerics.scalar(h.lr, wide) / numerics.bias_correction(h.b1, t, wide))
            bc2_sqrt = jnp.sqrt(numerics.bias_correction(h.b2, t, wide))
            return numerics.cast(neg_step, dtype), numerics.cast(bc2_sqrt, dtype)

        def keep(ratio_one: bool, dtype):
            """timm's `1 - lr * weight_decay * wd_ratio` (wd_ratio: 1 or the argument), float64 host math."""
            if ratio_one:
                return numerics.host_or_traced(lambda lr, wd: 1 - lr * wd, h.lr, h.weight_decay, dtype=dtype)
            return numerics.host_or_traced(lambda lr, wd, ratio: 1 - lr * wd * ratio, h.lr, h.weight_decay,
                                           h.wd_ratio, dtype=dtype)

        def math(leaf, g, m, v, p, _t, scalars):
            neg_step, bc2_sqrt = scalars
            dtype = leaf.dtype
            g, m, v, p = leaf.as_complex(g, m, v, p)
            b1_, b2_ = numerics.scalar(h.b1, dtype), numerics.scalar(h.b2, dtype)
            m = m * b1_ + numerics.one_minus(h.b1, dtype) * g
            v = v * b2_ + numerics.one_minus(h.b2, dtype) * g * g
            denom = jnp.sqrt(v) / bc2_sqrt + numerics.scalar(h.eps, dtype)
            perturb = (b1_ * m + numerics.one_minus(h.b1, dtype) * g) / denom if nesterov else m / denom
            projected = None
            if leaf.like.ndim > 1 and leaf.like.size:  # an empty matrix: nothing to project (deviations)
                perturb, projected = projection(p, g, perturb, h.delta, h.eps, caution)
            elif caution:
                perturb = cautious(perturb, g)
            u = neg_step * perturb
            if decays:
                factor = keep(True, dtype) if projected is None else jnp.where(projected, keep(False, dtype), keep(True, dtype))
                if not numerics.is_host_scalar(h.weight_decay):  # timm decays only where weight_decay > 0
                    factor = jnp.where(numerics.scalar(h.weight_decay, dtype) > 0, factor, jnp.ones((), dtype))
                u = (p * factor - p) + u
            return leaf.as_real(u, m, v)

        return per_param_update(state, updates, math, buffers=("exp_avg", "exp_avg_sq"), inputs=(params,),
                                step_scalars=step_scalars, pin_step_scalars=True, computed_once=True)

    return GradientTransformation(init, update)


__all__ = ["ScaleByAdampState", "projection", "scale_by_adamp"]
