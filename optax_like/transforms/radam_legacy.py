"""`scale_by_radam_legacy`: timm.optim.RAdamLegacy's whole step (RAdam, Liu et al., 2020, as
the original implementation wrote it), computed in float32 as timm's."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.radam import radam_rectification
from optax_like.transforms.weight_decay import decoupled_decay_alpha

_F32 = jnp.dtype(jnp.float32)  # timm's `p.float()`, `grad.float()` and its float32 moments

COMPLEX_REFUSED = ("RAdamLegacy: complex params are not supported (timm computes on `p.float()`, which drops the "
                   "imaginary part)")


def _fma32(a: jax.Array, b: Any, c: jax.Array) -> jax.Array:
    """float32 `a * b + c` rounded once, as torch's CPU `add_(x, alpha=)` and `addcmul_` compute
    it (`vec::fmadd`; measured on its kernels): in float64 where x64 is on (a product of two
    float32 numbers is exact there; the sum then rounds twice only on a float32 tie), else in
    float32 (XLA:CPU contracts `a * b + c` inside a fusion; eager: two roundings)."""
    if numerics.float_dtype() == jnp.dtype(jnp.float64):
        wide = jnp.float64
        return (numerics.cast(a, wide) * numerics.cast(b, wide) + numerics.cast(c, wide)).astype(_F32)
    return a * b + c


class ScaleByRadamLegacyState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped (float32 values; timm: a float32 tensor)
    exp_avg_sq: Any  # second moment, params-shaped (float32 values; timm: a float32 tensor)
    step: LeafScalars  # per-leaf step count (timm's state['step'], a Python int)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByRadamLegacyState,
    buffers=("exp_avg", "exp_avg_sq"),
    scalars={"step": INT_STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
    buffer_dtypes={"exp_avg": "float32", "exp_avg_sq": "float32"},
)


def scale_by_radam_legacy(
    lr: ScalarOrSchedule = 1e-3,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
) -> GradientTransformation:
    """RAdamLegacy's step, learning rate and decay included, in timm's order of operations, on
    `q = float32(p)` and `float32(g)`:

        t      <- t + 1
        v_t     = b2 v + ((1 - b2) g) g;   m_t = b1 m + (1 - b1) g
        rho_inf = 2 / (1 - b2) - 1;   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        s       = lr sqrt((1 - b2^t) (rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                  / (1 - b1^t)      if rho_t >= 5,   else   lr / (1 - b1^t)
        q      <- q - (weight_decay lr) q                                     (weight_decay != 0)
        q      <- q - (s m_t) / (sqrt(v_t) + eps)   if rho_t >= 5   else   q - s m_t
        p      <- q                                                           (`p.copy_(q)`)

    `s` is timm's Python float math (float64 under x64; the switch at exactly timm's step:
    `radam_rectification(inclusive=True)`), rounded to float32. The original implementation
    memoised `(rho_t, s)` per step in a `buffer` shared by every param group (with the first
    group's lr and betas baked in); timm 1.0.31 computes them per param, as here (a function of
    the step alone: there is nothing to cache in the state). The block emits the whole step,
    `numerics.exact_difference(q, p)`: float64 params land on timm's float32 result, 16-bit ones
    on its one rounding. The moments are float32 numbers (timm keeps them as float32 tensors
    whatever the param's dtype: the state dict exports them so); they are stored in the param's
    dtype, which holds them exactly for float32 and float64 params and rounds them for 16-bit
    ones (a deviation). Complex params are refused at `init` (timm's `p.float()` drops the
    imaginary part). A leaf whose update is None is skipped with its state untouched.
    """
    decays = validation.maybe_nonzero(weight_decay)

    def init(params):
        for p in jax.tree.leaves(params):
            if jnp.iscomplexobj(p):
                raise TypeError(COMPLEX_REFUSED)
        return ScaleByRadamLegacyState(exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params),
                                       step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_radam_legacy needs the params: call update(updates, state, params).")
        h = hyperparams(state.schedule_count, lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
        wide = numerics.float_dtype()  # timm's Python float math: float64 under x64

        def step_scalars(t, dtype):
            del dtype  # timm's step is float32 whatever the param's dtype
            rectified, rect = radam_rectification(h.b2, t, wide, inclusive=True)
            lr_w = numerics.scalar(h.lr, wide)
            bc1 = numerics.bias_correction(h.b1, t, wide)
            bc2_sqrt = jnp.sqrt(numerics.bias_correction(h.b2, t, wide))
            step_size = jnp.where(rectified, lr_w * (bc2_sqrt * rect) / bc1, lr_w / bc1)
            return numerics.cast(-step_size, _F32), rectified

        def math(leaf, g, m, v, p, _t, scalars):
            neg_step, rectified = scalars
            g, m, v, q = (numerics.cast(x, _F32) for x in (g, m, v, p))
            # exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2); exp_avg.mul_(beta1).add_(g, alpha=1 - beta1)
            v = _fma32(numerics.one_minus(h.b2, _F32) * g, g, v * numerics.scalar(h.b2, _F32))
            m = _fma32(g, numerics.one_minus(h.b1, _F32), m * numerics.scalar(h.b1, _F32))
            if decays:  # p.add_(p, alpha=-weight_decay * lr)
                decayed = _fma32(q, decoupled_decay_alpha(h.lr, h.weight_decay, _F32), q)
                q = decayed if numerics.is_host_scalar(h.weight_decay) else jnp.where(
                    numerics.scalar(h.weight_decay, _F32) != 0, decayed, q)
            # p.addcdiv_(m, denom, value=-step) (`p + (value * m) / denom`), or p.add_(m, alpha=-step)
            adapted = q + (neg_step * m) / (jnp.sqrt(v) + numerics.scalar(h.eps, _F32))
            q = jnp.where(rectified, adapted, _fma32(m, neg_step, q))
            return numerics.exact_difference(numerics.cast(q, leaf.dtype), p), m, v

        return per_param_update(state, updates, math, buffers=("exp_avg", "exp_avg_sq"), inputs=(params,),
                                step_scalars=step_scalars, pin_step_scalars=True, computed_once=True)

    return GradientTransformation(init, update)


__all__ = ["COMPLEX_REFUSED", "ScaleByRadamLegacyState", "scale_by_radam_legacy"]
