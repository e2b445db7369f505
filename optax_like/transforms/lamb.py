"""`scale_by_lamb`: timm.optim.Lamb's whole step (LAMB, You et al., 2020, NVIDIA's FusedLAMB
variant), and `lamb_global_clip`, its one gradient clip over every param."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.group_step import declare_group_step
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import STARTED, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import is_none, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.caution import cautious
from optax_like.transforms.caution import refuse_complex as refuse_complex_caution
from optax_like.transforms.trust_ratio import guarded, leaf_norm
from optax_like.transforms.weight_decay import decoupled_decay_alpha


class ScaleByLambState(NamedTuple):
    """timm's per-param state of Lamb (`state[p]` keys)."""

    exp_avg: Any  # first moment, params-shaped
    exp_avg_sq: Any  # second moment, params-shaped
    started: LeafScalars  # per-leaf count of steps with a gradient (timm has state once > 0)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(ScaleByLambState, buffers=("exp_avg", "exp_avg_sq"), started="started",
                    internal={"started": STARTED, "schedule_count": STEPS_TAKEN})


class LambGroup(NamedTuple):
    """timm's group-level state: `param_groups[i]['step']` (a 0-d float32 tensor there)."""

    step: jax.Array  # int32: steps of the group, one where no param has a gradient included


declare_group_step(LambGroup, float)


class LambState(NamedTuple):
    """The whole state (an undeclared container: the adapter's converter looks into it)."""

    params: ScaleByLambState
    group: LambGroup


def _norm(x: jax.Array) -> jax.Array:
    """torch's `x.norm()` (`_foreach_norm`) of one array: the 2-norm of its real view, rounded to
    its real dtype (bfloat16 in, bfloat16 out). Accumulated in the widest float (float64 under
    x64): a float32 gradient's norm is then its correctly rounded value, not one that depends on
    how XLA orders and fuses the sum (jit against eager), which the one clip would carry into
    every float64 gradient of the tree."""
    real = numerics.real_view(x)
    wide = jnp.promote_types(numerics.compute_dtype(real.dtype), numerics.float_dtype())
    return numerics.cast(leaf_norm(numerics.cast(real, wide)), real.dtype)


def lamb_global_clip(grads: Sequence[Any], max_grad_norm: Any) -> list:
    """timm Lamb's `_get_clip_grad_norm` and its use, on a sequence of gradients (None: no
    gradient, kept): with the per-gradient 2-norms `n_i`,

        clip = max(||(n_1, n_2, ...)|| / max_grad_norm, 1);   g_i <- g_i / clip

    `max_grad_norm=None`, or no gradient at all: the gradients as they are. The norms, the clip and
    the quotients are rounded to the dtypes torch's tensors have (the stacked norms' promoted
    dtype; each gradient's own). Traceable. timm reads `max_grad_norm` from the optimizer's
    defaults and clips every param group with one norm; `optax_like.optim.Lamb` applies this over
    all its groups before their updates (the record's `cross_group` adapter option)."""
    grads = list(grads)
    present = [g for g in grads if g is not None]
    if max_grad_norm is None or not present:
        return grads
    norms = [_norm(g) for g in present]
    dtype = jnp.result_type(*norms)
    wide = numerics.compute_dtype(dtype)
    total = numerics.cast(_norm(jnp.stack([numerics.cast(n, dtype) for n in norms])), wide)
    # behind a barrier: XLA turns a division by a constant into a product with its reciprocal
    limit = lax.optimization_barrier(jnp.asarray(numerics.scalar(max_grad_norm, wide)))
    clip = numerics.cast(lax.max(lax.div(total, limit), jnp.ones((), wide)), dtype)
    computes = [numerics.compute_dtype(numerics.real_view(g).dtype) for g in present]
    divisors = {c: numerics.cast(clip, c) for c in computes}
    out = []
    for g in grads:
        if g is None:
            out.append(None)
            continue
        real = numerics.real_view(g)
        compute = numerics.compute_dtype(real.dtype)
        divisor, x = divisors[compute], numerics.cast(real, compute)
        if computes.count(compute) == 1:
            # the only gradient of its dtype: XLA would turn `x / broadcast(divisor)` with a single
            # use of the divisor into a product with its reciprocal (an ulp off torch's quotient);
            # a barrier with `x` gives the divisor its second use (x, a gradient, is in memory anyway)
            x, _ = lax.optimization_barrier((x, divisor))
        out.append(numerics.complex_view(numerics.cast(lax.div(x, divisor), real.dtype), g))
    return out


def scale_by_lamb(
    lr: ScalarOrSchedule = 1e-3,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-6,
    weight_decay: ScalarOrSchedule = 0.01,
    max_grad_norm: ScalarOrSchedule | None = 1.0,
    *,
    bias_correction: bool = True,
    grad_averaging: bool = True,
    trust_clip: bool = False,
    always_adapt: bool = False,
    caution: bool = False,
    decoupled_decay: bool = False,
    decay_lr: ScalarOrSchedule = 0.0,
) -> GradientTransformation:
    """LAMB's step, clip, learning rate and decay included, in timm's order of operations (its
    single-tensor path), with `t` the group's step (counted at every update):

        g   <- g / max(||(||g_1||, ||g_2||, ...)|| / max_grad_norm, 1)   (lamb_global_clip; the
                                                                         whole tree; None: off)
        m_t  = lerp(m, g, 1 - b1)        (grad_averaging; else b1 m + g)
        v_t  = b2 v + (1 - b2) g^2
        u    = (m_t / bc1) / (sqrt(v_t) / sqrt(bc2) + eps)    bc = 1 - b^t (1 if not bias_correction)
        u   <- u * mask / max(mean(mask), 1e-3),  mask = [u * g > 0]            if caution
        p   <- p - decay_lr * weight_decay * p          if decoupled_decay    } weight_decay != 0
        u   <- u + weight_decay * p                     else                   }
        u   <- u * r,  r = ||p|| / ||u|| (1 if a norm is 0; min(r, 1) if trust_clip)
                                                        if weight_decay != 0 or always_adapt
        p   <- p - lr * u

    The block emits the whole step (the trust ratio reads the decayed param). A traced or
    scheduled weight_decay decides the trust ratio per step. Complex params are computed on as
    complex numbers, as timm does (no `view_as_real`: `v` accumulates the complex square `g * g`,
    the denominator is its complex square root; norms are those of the real pairs); with caution
    they are refused with torch's error. A leaf whose gradient is None is skipped with its state
    untouched; the group's step advances at every update, also one without any gradient (timm).
    """
    bias_correction, grad_averaging, trust_clip = bool(bias_correction), bool(grad_averaging), bool(trust_clip)
    always_adapt, caution, decoupled_decay = bool(always_adapt), bool(caution), bool(decoupled_decay)
    decays = validation.maybe_nonzero(weight_decay)
    adapts = always_adapt or decays

    def init(params):
        if caution:
            refuse_complex_caution(params)
        per_param = ScaleByLambState(exp_avg=zeros_like(params), exp_avg_sq=zeros_like(params),
                                     started=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))
        return LambState(per_param, LambGroup(jnp.zeros((), jnp.int32)))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_lamb needs the params: call update(updates, state, params).")
        h = hyperparams(state.params.schedule_count, lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm, decay_lr=decay_lr)
        if h.max_grad_norm is not None:
            treedef = jax.tree.structure(params, is_leaf=is_none)
            updates = treedef.unflatten(lamb_global_clip(treedef.flatten_up_to(updates), h.max_grad_norm))
        step = numerics.safe_increment(state.group.step)
        wide = numerics.float_dtype()
        runtime_switch = adapts and not always_adapt and not numerics.is_host_scalar(numerics.plain(h.weight_decay))

        def step_scalars(t, dtype):
            if not bias_correction:
                return ()
            return (numerics.cast(numerics.bias_correction(h.b1, t, wide), dtype),
                    numerics.cast(lax.sqrt(numerics.bias_correction(h.b2, t, wide)), dtype))

        def math(leaf, g, m, v, p, _t, scalars):
            dtype = leaf.dtype
            if grad_averaging:
                m = numerics.lerp(m, g, numerics.one_minus(h.b1, dtype))
            else:  # timm's beta3 = 1: `exp_avg.mul_(beta1).add_(grad)` (a lerp when beta1 == 0: the same)
                m = lax.add(lax.mul(m, numerics.scalar(h.b1, dtype)), g)
            b2_, one_minus_b2, eps_ = numerics.scalar(h.b2, dtype), numerics.one_minus(h.b2, dtype), numerics.scalar(h.eps, dtype)
            scaled = lax.div(m, scalars[0]) if bias_correction else m
            if leaf.is_complex:  # timm's complex arithmetic: addcmul_(g, g), sqrt, div
                gc, vc, sc = leaf.as_complex(g, v, scaled)
                vc = vc * b2_ + one_minus_b2 * gc * gc
                root = jnp.sqrt(vc)
                denom = (root / scalars[1] if bias_correction else root) + eps_
                v, u = leaf.as_real(vc, sc / denom)
            else:
                v = lax.add(lax.mul(v, b2_), lax.mul(lax.mul(one_minus_b2, g), g))
                root = lax.sqrt(v)
                denom = lax.add(lax.div(root, scalars[1]) if bias_correction else root, eps_)
                u = lax.div(scaled, denom)
            if caution:
                u = cautious(u, g)
            moved = p
            if decays and decoupled_decay:
                moved = lax.add(p, lax.mul(decoupled_decay_alpha(h.decay_lr, h.weight_decay, dtype), p))
            elif decays:
                u = lax.add(u, lax.mul(numerics.scalar(h.weight_decay, dtype), p))
            if adapts:
                w_norm, u_norm = leaf_norm(moved), leaf_norm(u)
                ratio = guarded(lax.div(w_norm, u_norm), w_norm, u_norm)
                if trust_clip:
                    ratio = lax.min(ratio, jnp.ones((), dtype))
                adapted = lax.mul(u, ratio)
                u = jnp.where(lax.ne(numerics.scalar(h.weight_decay, dtype), jnp.zeros((), dtype)), adapted, u) \
                    if runtime_switch else adapted
            moved = lax.add(moved, lax.mul(lax.neg(numerics.scalar(h.lr, dtype)), u))
            return lax.sub(moved, p), m, v

        new_updates, per_param = per_param_update(
            state.params, updates, math, buffers=("exp_avg", "exp_avg_sq"), inputs=(params,),
            step_field="started", counts=state.params.started.map(lambda _: step), step_scalars=step_scalars, pin_step_scalars=True)
        return new_updates, LambState(per_param, LambGroup(step))

    return GradientTransformation(init, update)


__all__ = ["LambGroup", "LambState", "ScaleByLambState", "lamb_global_clip", "scale_by_lamb"]
