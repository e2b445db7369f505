"""`scale_by_adan`: timm.optim.Adan's whole step (Adan, Xie et al., 2022, "Adan: Adaptive
Nesterov Momentum Algorithm for Faster Optimizing Deep Models")."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.group_step import declare_group_step
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import STARTED, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.caution import cautious
from optax_like.transforms.caution import refuse_complex as refuse_complex_caution
from optax_like.transforms.weight_decay import decoupled_decay_keep


class ScaleByAdanState(NamedTuple):
    """timm's per-param state of Adan (`state[p]` keys)."""

    exp_avg: Any  # first moment of the gradient, params-shaped
    exp_avg_sq: Any  # second moment of g_t + beta2 (g_t - g_{t-1})
    exp_avg_diff: Any  # first moment of the gradient difference g_t - g_{t-1}
    pre_grad: Any  # the last gradient (timm keeps its negation, `neg_pre_grad`: exported negated)
    started: LeafScalars  # per-leaf count of steps with a gradient (timm has state once > 0)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(ScaleByAdanState, buffers=("exp_avg", "exp_avg_sq", "exp_avg_diff", "pre_grad"),
                    started="started", internal={"started": STARTED, "schedule_count": STEPS_TAKEN},
                    torch_keys={"pre_grad": "neg_pre_grad"}, negated=("pre_grad",))


class AdanGroup(NamedTuple):
    """timm's group-level state: `param_groups[i]['step']` (a Python int there)."""

    step: jax.Array  # int32: steps of the group, one where no param has a gradient included


declare_group_step(AdanGroup, int)


class AdanState(NamedTuple):
    """The whole state (an undeclared container: the adapter's converter looks into it)."""

    params: ScaleByAdanState
    group: AdanGroup


def scale_by_adan(
    lr: ScalarOrSchedule = 1e-3,
    b1: ScalarOrSchedule = 0.98,
    b2: ScalarOrSchedule = 0.92,
    b3: ScalarOrSchedule = 0.99,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    no_prox: bool = False,
    caution: bool = False,
) -> GradientTransformation:
    """Adan's step, learning rate and decay included, in timm's order of operations (its
    single-tensor path), with `t` the group's step (counted at every update) and `d_t = g_t -
    g_{t-1}` (0 at a param's first gradient and at the group's first step: timm resets its
    `neg_pre_grad` to `-g` there; the state keeps the last gradient itself, `pre_grad`, and
    the state dict exports timm's negation):

        m_t  = lerp(m, g, 1 - b1)
        a_t  = b2 a + (1 - b2) d_t                          (exp_avg_diff)
        n_t  = b3 n + (1 - b3) z^2,   z = b2 d_t + g_t     (exp_avg_sq)
        D    = sqrt(n_t) / sqrt(1 - b3^t) + eps
        m'   = m_t * mask / max(mean(mask), 1e-3),  mask = [m_t * g > 0]   (caution; m_t is kept)
        no_prox:  p <- p (1 - lr wd) - lr/(1 - b1^t) m'/D - lr b2/(1 - b2^t) a_t/D
        else:     p <- (p - lr/(1 - b1^t) m'/D - lr b2/(1 - b2^t) a_t/D) / (1 + lr wd)

    (each addend applied in turn, as timm's `addcdiv_`s; the step sizes are timm's float64 host
    math for host numbers). The block emits the whole step. Complex params are computed on as
    complex numbers, as timm does (no `view_as_real`: `n` accumulates the complex square `z * z`,
    `D` is its complex square root); with caution they are refused with torch's error. A leaf
    whose gradient is None is skipped with its state untouched; the group's step advances at
    every update, also one without any gradient (timm).
    """
    no_prox, caution = bool(no_prox), bool(caution)
    decays = validation.maybe_nonzero(weight_decay)

    def init(params):
        if caution:
            refuse_complex_caution(params)
        per_param = ScaleByAdanState(
            exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params), exp_avg_diff=zeros_like(params),
            pre_grad=zeros_like(params), started=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))
        return AdanState(per_param, AdanGroup(jnp.zeros((), jnp.int32)))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_adan needs the params: call update(updates, state, params).")
        h = hyperparams(state.params.schedule_count, lr=lr, b1=b1, b2=b2, b3=b3, eps=eps, weight_decay=weight_decay)
        step = numerics.safe_increment(state.group.step)
        wide = numerics.float_dtype()
        memo: dict = {}

        def step_scalars(count, dtype):
            """(-lr / bc1, -lr b2 / bc2, sqrt(bc3)[, 1 + lr wd], fresh) in `dtype`: the first
            ones once per dtype (every leaf shares the group's step); `fresh` (1.0 at a param's
            first gradient or the group's first step, else 0.0: where timm's pre-gradient is
            reset) per leaf count. A step scalar rather than a compare in each leaf's math: see
            "Uniform kernels" in transforms/_per_param.py."""
            started, _ = count
            if (id(started), dtype) not in memo:
                fresh = jnp.logical_or(lax.eq(started, jnp.zeros_like(started)), lax.eq(step, jnp.ones_like(step)))
                memo[id(started), dtype] = step_scalars_of(dtype) + (lax.convert_element_type(fresh, dtype),)
            return memo[id(started), dtype]

        def step_scalars_of(dtype):
            if dtype not in memo:
                lr_ = numerics.scalar(h.lr, wide)
                neg_step = lax.neg(lax.div(lr_, numerics.bias_correction(h.b1, step, wide)))
                neg_step_diff = lax.neg(lax.div(lax.mul(lr_, numerics.scalar(h.b2, wide)),
                                                numerics.bias_correction(h.b2, step, wide)))
                bc3_sqrt = lax.sqrt(numerics.bias_correction(h.b3, step, wide))
                scalars = tuple(numerics.cast(x, dtype) for x in (neg_step, neg_step_diff, bc3_sqrt))
                if decays and not no_prox:  # the proximal divisor: behind a barrier, a traced scalar
                    # (XLA turns a division by a constant into a product with its reciprocal)
                    scalars += (lax.optimization_barrier(jnp.asarray(numerics.host_or_traced(
                        lambda x, y: 1 + x * y, h.lr, h.weight_decay, dtype=dtype))),)
                memo[dtype] = scalars
            return memo[dtype]

        def math(leaf, g, m, n, a, pre, p, _count, scalars):
            neg_step, neg_step_diff, bc3_sqrt = scalars[:3]
            dtype = leaf.dtype
            fresh = lax.ne(scalars[-1], jnp.zeros((), scalars[-1].dtype))
            # timm's neg_pre_grad.add_(grad), neg_pre_grad = -pre: the same rounding as g - pre
            d = lax.sub(g, jnp.where(fresh, g, pre))
            m = numerics.lerp(m, g, numerics.one_minus(h.b1, dtype))
            a = lax.add(lax.mul(a, numerics.scalar(h.b2, dtype)), lax.mul(numerics.one_minus(h.b2, dtype), d))
            z = lax.add(lax.mul(d, numerics.scalar(h.b2, dtype)), g)
            b3_, one_minus_b3, eps_ = numerics.scalar(h.b3, dtype), numerics.one_minus(h.b3, dtype), numerics.scalar(h.eps, dtype)
            m_used = cautious(m, g) if caution else m
            # torch's addcdiv_ computes `p + (value * t1) / t2`
            if leaf.is_complex:  # timm's complex arithmetic: addcmul_(z, z), sqrt, addcdiv_
                zc, nc, mc, ac = leaf.as_complex(z, n, m_used, a)
                nc = nc * b3_ + one_minus_b3 * zc * zc
                denom = jnp.sqrt(nc) / bc3_sqrt + eps_
                n, q_m, q_a = leaf.as_real(nc, (neg_step * mc) / denom, (neg_step_diff * ac) / denom)
            else:
                n = lax.add(lax.mul(n, b3_), lax.mul(lax.mul(one_minus_b3, z), z))
                denom = lax.add(lax.div(lax.sqrt(n), bc3_sqrt), eps_)
                q_m, q_a = lax.div(lax.mul(neg_step, m_used), denom), lax.div(lax.mul(neg_step_diff, a), denom)
            moved = p
            if decays and no_prox:  # torch's rounded `p * keep`, written `p - (1 - keep) p` (1 - keep is
                # exact): the same number whether or not XLA contracts it into a multiply-add (as
                # add_decoupled_weight_decay)
                keep = decoupled_decay_keep(h.lr, h.weight_decay, dtype)
                moved = lax.sub(p, lax.mul(1 - keep, p))
            moved = lax.add(moved, q_m)
            moved = lax.add(moved, q_a)
            if decays and not no_prox:
                moved = lax.div(moved, scalars[3])
            return lax.sub(moved, p), m, n, a, g

        new_updates, per_param = per_param_update(
            state.params, updates, math, buffers=("exp_avg", "exp_avg_sq", "exp_avg_diff", "pre_grad"),
            inputs=(params,), step_field="started", counts=state.params.started.map(lambda s: (s, step)),
            step_scalars=step_scalars, pin_step_scalars=True, computed_once=True)
        return new_updates, AdanState(per_param, AdanGroup(step))

    return GradientTransformation(init, update)


__all__ = ["AdanGroup", "AdanState", "ScaleByAdanState", "scale_by_adan"]
