"""`scale_by_radam`: torch.optim.RAdam's rectified Adam direction."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN

RECTIFY_THRESHOLD = 5.0  # torch rectifies when rho_t > 5


# ---------------------------------------------------------------------------------------------
# RAdam's length of the approximated simple moving average (rho), without cancellation.
#
# torch computes, in float64 on the host,
#     rho_inf = 2 / (1 - beta2) - 1
#     rho_t   = rho_inf - 2 t beta2^t / (1 - beta2^t)
# which for beta2 near 1 and small t subtracts two numbers near rho_inf ~ 2000 to get ~t: fine
# in float64 (it loses three of sixteen digits), but in float32 rho_t would keep about four
# digits. With L = -log(beta2), x = t L and D(y) = (y/2) coth(y/2) - 1 (smooth, D(y) ~ y^2/12),
# the identities rho_inf = (2/L)(1 + D(L)) and 2 t beta2^t / (1 - beta2^t) = (2/L)(1 + D(x) - x/2)
# give the cancellation-free form
#     rho_t = t - (2/L) (D(x) - D(L))              (used for x < 1/2; D by its Bernoulli series)
#     rho_t = rho_inf - 2 t / expm1(x)             (used for x >= 1/2, where rho_t >= rho_inf/5)
# ---------------------------------------------------------------------------------------------

# (y/2) coth(y/2) - 1 = sum_n B_2n y^2n / (2n)!  (|y| < 2 pi); 8 terms: < 1e-18 relative at y = 1/2.
_HALF_COTH_SERIES = (
    1.0 / 12.0,
    -1.0 / 720.0,
    1.0 / 30240.0,
    -1.0 / 1209600.0,
    1.0 / 47900160.0,
    -691.0 / 1307674368000.0,
    1.0 / 74724249600.0,
    -3617.0 / 10670622842880000.0,
)
_HALF_COTH_SWITCH = 0.5


def _half_coth_minus_one_host(y: float) -> float:
    """`(y/2) coth(y/2) - 1` in float64 on the host, accurate for every y >= 0."""
    if y < _HALF_COTH_SWITCH:
        y2 = y * y
        acc = 0.0
        for c in reversed(_HALF_COTH_SERIES):
            acc = acc * y2 + c
        return acc * y2
    return float((y / 2.0) / np.tanh(y / 2.0) - 1.0)


def _half_coth_minus_one(y: jax.Array) -> jax.Array:
    """`(y/2) coth(y/2) - 1` in the graph (y >= 0, may be +inf), accurate to a few ulps."""
    small = y < _HALF_COTH_SWITCH
    ys = jnp.where(small, y, 0)
    y2 = ys * ys
    acc = jnp.zeros_like(y2)
    for c in reversed(_HALF_COTH_SERIES):
        acc = acc * y2 + c
    yl = jnp.where(small, 1, y)
    return jnp.where(small, acc * y2, (yl / 2) / jnp.tanh(yl / 2) - 1)


def radam_rho(beta2: Any, count: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """RAdam's `(rho_inf, rho_t)` for step `count`, accurate to a few ulps of `dtype`.

        rho_inf = 2 / (1 - beta2) - 1,   rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)

    computed without the cancellation of the formula as written (see the note above); for a
    host `beta2` the constants (`rho_inf`, `log(beta2)`, ...) are float64 on the host. `beta2 = 0`
    gives (1, 1), as torch's formula does.
    """
    count = jnp.asarray(count)
    if numerics.is_host_scalar(beta2):
        b = float(np.float64(beta2))
        wide = jnp.promote_types(dtype, jnp.float32)
        if b == 0.0:
            one = jnp.ones(jnp.shape(count), wide).astype(dtype)
            return jnp.ones((), wide).astype(dtype), one
        big_l = -float(np.log(b))
        rho_inf_host = 2.0 / (1.0 - b) - 1.0
        rho_inf = jnp.asarray(rho_inf_host, wide)
        big_l_w = jnp.asarray(big_l, wide)
        two_over_l = jnp.asarray(2.0 / big_l, wide)
        d_l = jnp.asarray(_half_coth_minus_one_host(big_l), wide)
    else:
        precise = beta2 if isinstance(beta2, numerics.PreciseScalar) else None
        beta2 = jnp.asarray(numerics.plain(beta2))
        wide = jnp.promote_types(jnp.promote_types(dtype, beta2.dtype), jnp.float32)
        if precise is not None:  # the adapter's host-computed 1 - beta2 and log(beta2)
            c = precise.one_minus_value.astype(wide)
            big_l_w = -precise.log_value.astype(wide)
        else:
            c = 1 - beta2.astype(wide)
            big_l_w = -jnp.log1p(-c)
        rho_inf = 2 / c - 1
        two_over_l = 2 / big_l_w
        d_l = _half_coth_minus_one(big_l_w)
    t = count.astype(wide)
    x = t * big_l_w
    small = x < _HALF_COTH_SWITCH
    series = t - two_over_l * (_half_coth_minus_one(jnp.where(small, x, 0)) - d_l)
    direct = rho_inf - 2 * t / jnp.expm1(jnp.where(small, 1, x))
    rho_t = jnp.where(small, series, direct)
    return rho_inf.astype(dtype), rho_t.astype(dtype)


def radam_first_rectified_step(beta2: Any, inclusive: bool = False) -> int | None:
    """The first step t at which torch's RAdam rectifies (`rho_t > 5`; `rho_t >= 5` with
    `inclusive`, timm's AdaBelief), for a host `beta2`.

    Evaluates torch's own float64 expression (`rho_inf - 2 * step * (beta2**step) / (1 -
    beta2**step)` with Python floats), so the switch happens at exactly torch's step; rho_t
    increases with t, so a doubling then bisection search finds it. None when rho_t never
    exceeds 5 (rho_inf <= 5, i.e. beta2 <= 2/3) within the int32 step range.
    """
    b = float(np.float64(beta2))
    rho_inf = 2 / (1 - b) - 1
    if not (rho_inf >= 5 if inclusive else rho_inf > 5):
        return None

    def rectified(step: int) -> bool:
        t = float(step)
        bias_correction2 = 1 - b**t
        rho_t = rho_inf - 2 * t * (b**t) / bias_correction2
        return rho_t >= RECTIFY_THRESHOLD if inclusive else rho_t > RECTIFY_THRESHOLD

    limit = int(np.iinfo(np.int32).max)
    hi = 1
    while not rectified(hi):
        if hi >= limit:
            return None
        hi = min(2 * hi, limit)
    lo = hi // 2  # not rectified (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rectified(mid):
            hi = mid
        else:
            lo = mid
    return hi


def radam_rectification(beta2: Any, count: jax.Array, dtype, inclusive: bool = False) -> tuple[jax.Array, jax.Array]:
    """`(rectified, r)` for step `count`: whether the step is rectified (`rho_t > 5`, or `>= 5`
    with `inclusive`; for a host `beta2` at exactly the reference's float64 step,
    `radam_first_rectified_step`) and the rectification term

        r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))

    in `dtype` (evaluated only where rectified: no NaN from negative factors elsewhere)."""
    rho_inf, rho_t = radam_rho(beta2, count, dtype)
    if numerics.is_host_scalar(beta2):
        first = radam_first_rectified_step(beta2, inclusive)
        rectified = jnp.zeros(jnp.shape(count), bool) if first is None else count >= first
    else:
        rectified = rho_t >= RECTIFY_THRESHOLD if inclusive else rho_t > RECTIFY_THRESHOLD
    rho_s = jnp.where(rectified, rho_t, 6.0)
    rho_inf_s = jnp.where(rectified, rho_inf, 6.0)
    rect = jnp.sqrt((rho_s - 4) * (rho_s - 2) * rho_inf_s / ((rho_inf_s - 4) * (rho_inf_s - 2) * rho_s))
    return rectified, rect


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
    the host with torch's own float64 expression (`radam_first_rectified_step`), so it
    happens at exactly torch's step; rho_t itself comes from `radam_rho`, which avoids
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
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps)
        wide = numerics.float_dtype()  # float64 under x64: torch's host float math

        @numerics.once_per_step
        def scalars(t):
            """The leaf's rectification terms for its step `t` (host-style float math, in `wide`)."""
            rectified, rect = radam_rectification(h.b2, t, wide)
            bc2_sqrt = jnp.broadcast_to(jnp.sqrt(numerics.bias_correction(h.b2, t, wide)), jnp.shape(t))
            return rectified, rect, bc2_sqrt

        def step_scalars(t, dtype):
            _, rect, bc2_sqrt = scalars(t)
            return numerics.bias_correction(h.b1, t, dtype), numerics.cast(bc2_sqrt, dtype), numerics.cast(rect, dtype)

        def math(leaf, g, m, v, t, step):
            rectified = scalars(t)[0]
            bc1, bc2_sqrt, rect = step
            dtype = leaf.dtype
            m = numerics.lerp(m, g, numerics.one_minus(h.b1, dtype))
            v = lax.add(lax.mul(v, numerics.scalar(h.b2, dtype)), lax.mul(lax.mul(numerics.one_minus(h.b2, dtype), g), g))
            corrected = lax.div(m, bc1)
            adaptive = lax.div(bc2_sqrt, lax.add(lax.sqrt(v), numerics.scalar(h.eps, dtype)))
            return jnp.where(rectified, lax.mul(lax.mul(corrected, adaptive), rect), corrected), m, v

        return per_param_update(state, updates, math, buffers=("exp_avg", "exp_avg_sq"), step_scalars=step_scalars, pin_step_scalars=True)

    return GradientTransformation(init, update)
