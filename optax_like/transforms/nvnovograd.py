"""`scale_by_nvnovograd`: timm.optim.NvNovoGrad's direction (NovoGrad, Ginsburg et al., 2019):
momentum of the gradient normalised by a running average of its squared norm, one scalar per
param (layer)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts, leaf_scalars, per_leaf_scalars
from optax_like.core.torch_layout import FLOAT32, INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update

# timm keeps `exp_avg_sq` and `max_exp_avg_sq` as 0-d tensors of torch's default dtype
# (`torch.zeros([])`: float32), whatever the param's dtype: their float32 rounding shows in
# float64 results.
NORM_DTYPE = jnp.float32

COMPLEX_REFUSED = ("NvNovoGrad: complex params are not supported (timm's exp_avg_sq, a real scalar, takes the "
                   "real part of sum(g**2) at the first step and raises at the second)")


class ScaleByNvNovoGradState(NamedTuple):
    exp_avg: Any  # momentum of the normalised gradient, params-shaped
    exp_avg_sq: LeafScalars  # per param: running average of ||g||^2, float32, stored per leaf
    max_exp_avg_sq: Any  # LeafScalars per param: running max of exp_avg_sq (amsgrad; else None)
    step: LeafScalars  # per-leaf step count (timm's state['step'], a Python int)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByNvNovoGradState,
    buffers=("exp_avg",),
    scalars={"step": INT_STEP, "exp_avg_sq": FLOAT32, "max_exp_avg_sq": FLOAT32},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def _norms(params: Any) -> LeafScalars:
    """A float32 zero per leaf, in the per-leaf form (each param's norm is its own)."""
    return per_leaf_scalars(leaf_scalars(params, 0, NORM_DTYPE))


def scale_by_nvnovograd(
    b1: ScalarOrSchedule = 0.95,
    b2: ScalarOrSchedule = 0.98,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    grad_averaging: bool = False,
    amsgrad: bool = False,
) -> GradientTransformation:
    """NvNovoGrad's direction, in timm's order of operations (without the lr):

        n    = sum(g^2)                                      (in g's dtype)
        v_t  = n  if v == 0  else  b2 v + (1 - b2) n         (float32, per param)
        v^   = max(v^, v_t)                                  (amsgrad; float32)
        d    = sqrt(v^ or v_t) + eps                         (float32)
        u    = g / d  (+ weight_decay p)  (* (1 - b1) if grad_averaging)
        m_t  = b1 m + u;    out = m_t

    `weight_decay` here is NovoGrad's own decay, added to the normalised gradient (timm's
    default; its `decoupled_decay` is a decoupled-decay block after this one, see
    `nvnovograd`). `exp_avg_sq` and `max_exp_avg_sq` are per-param float32 scalars, as timm's
    0-d tensors of torch's default dtype: stored as `LeafScalars` in the per-leaf form from
    `init` (each param's value is its own), exported as 0-d float32 tensors (layout kind
    `FLOAT32`). `v_t`'s sum with `n` is float64 for float64 params (timm adds a float64 0-d
    tensor into its float32 one) and float32 otherwise. Complex params are refused at `init`
    (timm takes the real part of sum(g^2) at a first step and raises at the second). A leaf
    whose update is None is skipped with its state untouched.
    """
    grad_averaging, amsgrad = bool(grad_averaging), bool(amsgrad)
    decays = validation.maybe_nonzero(weight_decay)

    def init(params):
        for p in jax.tree.leaves(params):
            if jnp.iscomplexobj(p):
                raise TypeError(COMPLEX_REFUSED)
        return ScaleByNvNovoGradState(
            exp_avg=zeros_like(params), exp_avg_sq=_norms(params), max_exp_avg_sq=_norms(params) if amsgrad else None,
            step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if decays and params is None:
            raise ValueError("scale_by_nvnovograd with weight_decay needs the params: call update(updates, state, params).")
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
        # per-leaf copies where a state was made shared by hand: no two leaves share a buffer
        sq = per_leaf_scalars(state.exp_avg_sq)
        top = per_leaf_scalars(state.max_exp_avg_sq) if amsgrad else None
        n = len(sq)
        entries = [(i, sq[i], top[i] if top is not None else None) for i in range(n)]
        stepped: dict[int, tuple] = {}  # leaf index -> (new exp_avg_sq, new max_exp_avg_sq)

        def math(leaf, g, m, *rest):
            *p, (i, v, v_max) = rest
            dtype = leaf.dtype  # float32 for 16-bit params: the sum with n below is float32 for them too
            stored = lambda x: numerics.cast(numerics.cast(x, leaf.storage_dtype), dtype)  # noqa: E731 (torch's dtype)
            norm = stored(jnp.sum(stored(g * g)))
            decayed = numerics.cast(numerics.cast(v * numerics.scalar(h.b2, NORM_DTYPE), dtype)
                                    + numerics.one_minus(h.b2, dtype) * norm, NORM_DTYPE)
            v = jnp.where(v == 0, numerics.cast(norm, NORM_DTYPE), decayed)
            if amsgrad:
                v_max = jnp.maximum(v_max, v)
            denom = jnp.sqrt(v_max if amsgrad else v) + numerics.scalar(h.eps, NORM_DTYPE)
            u = g / numerics.cast(denom, dtype)
            if decays:
                with_decay = u + numerics.scalar(h.weight_decay, dtype) * p[0]
                u = with_decay if numerics.is_host_scalar(h.weight_decay) else jnp.where(
                    numerics.scalar(h.weight_decay, dtype) != 0, with_decay, u)
            if grad_averaging:
                u = u * numerics.one_minus(h.b1, dtype)
            m = leaf.rounded(m * numerics.scalar(h.b1, dtype) + u)
            stepped[i] = (v, v_max)
            return m, m

        new_updates, new_state = per_param_update(
            state, updates, math, buffers=("exp_avg",), inputs=(params,) if decays else (), counts=entries)
        new_sq = LeafScalars(stepped[i][0] if i in stepped else sq[i] for i in range(n))
        new_top = LeafScalars(stepped[i][1] if i in stepped else top[i] for i in range(n)) if top is not None else None
        return new_updates, new_state._replace(exp_avg_sq=new_sq, max_exp_avg_sq=new_top)

    return GradientTransformation(init, update)


__all__ = ["COMPLEX_REFUSED", "NORM_DTYPE", "ScaleByNvNovoGradState", "scale_by_nvnovograd"]
