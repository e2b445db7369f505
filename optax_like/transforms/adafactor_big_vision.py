"""`scale_by_adafactor_big_vision`: the direction of timm.optim.AdafactorBigVision (big_vision's
Adafactor variant: factored second moment, capped beta2 schedule, momentum in its own dtype)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.hyperparams import as_dtype
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import is_none, map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update, refuse_complex
from optax_like.transforms.caution import cautious
from optax_like.transforms.timm_adafactor import check_dense, clip_by_rms

COMPLEX_MESSAGE = ("AdafactorBigVision: complex params are not supported (timm applies its real-valued math to "
                   "complex tensors as they are and casts the momentum to a real dtype)")
SPARSE_MESSAGE = "Sparse gradients not supported"
MOMENTUM_DTYPES = ("bfloat16", "float16", "float32")

_BUFFERS = ("exp_avg_sq_r", "exp_avg_sq_c", "exp_avg_sq", "exp_avg")


class ScaleByAdafactorBigVisionState(NamedTuple):
    exp_avg_sq_r: Any  # factored second moment: the param's shape with 1 at `dr`; None leaves otherwise
    exp_avg_sq_c: Any  # factored second moment: the param's shape with 1 at `dc`; None leaves otherwise
    exp_avg_sq: Any  # unfactored second moment, params-shaped; None leaves for factored params
    exp_avg: Any  # momentum, params-shaped, in `momentum_dtype` (None leaves without momentum)
    step: LeafScalars  # per-leaf step count (timm's state['step'], a 0-d float32 tensor)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByAdafactorBigVisionState,
    buffers=_BUFFERS,
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
    own_dtype=("exp_avg",),
    reduced=("exp_avg_sq_r", "exp_avg_sq_c"),
)


def momentum_dtype_of(value: Any) -> np.dtype:
    """timm's `momentum_dtype` as a dtype: a name ('bfloat16', 'float16', 'float32'; timm's
    AssertionError for another), a dtype, or a torch dtype (torch.bfloat16, read by its name)."""
    try:
        dtype = as_dtype(value, "momentum_dtype", allowed=MOMENTUM_DTYPES)
    except ValueError:  # a dtype of another kind
        dtype = None
    except TypeError:  # no dtype: a name is timm's assertion, another value ours
        if not isinstance(value, str):
            raise
        dtype = None
    if dtype is None:
        raise AssertionError(f"{value} dtype not supported")
    return dtype


def factored_dims(shape: tuple, min_dim_size_to_factor: int) -> Optional[tuple[int, int]]:
    """timm's `_factored_dims` (big_vision's): `(dc, dr)`, the second largest and the largest dims
    (ties by index), when the second largest is at least `min_dim_size_to_factor`; else None."""
    if len(shape) < 2:
        return None
    ordered = sorted((x, i) for i, x in enumerate(shape))
    if shape[ordered[-2][1]] < min_dim_size_to_factor:
        return None
    return int(ordered[-2][1]), int(ordered[-1][1])


def scale_by_adafactor_big_vision(
    min_dim_size_to_factor: int = 16,
    decay_rate: ScalarOrSchedule = 0.8,
    decay_offset: ScalarOrSchedule = 0,
    beta2_cap: ScalarOrSchedule = 0.999,
    momentum: Optional[ScalarOrSchedule] = 0.9,
    momentum_dtype: Any = "bfloat16",
    eps: Optional[ScalarOrSchedule] = None,
    clipping_threshold: Optional[ScalarOrSchedule] = None,
    *,
    caution: bool = False,
) -> GradientTransformation:
    """timm's AdafactorBigVision direction (`_single_tensor_adafactor` up to `update.mul_(lr)`):

        t   <- t + 1;  w = 1 - min(beta2_cap, 1 - max(t - decay_offset, 1)^-decay_rate)
        G2   = g^2 + eps            (eps None: 1e-7 for float16 gradients, else 1e-30)
        factored (dims (dc, dr), `factored_dims`; buffers keep both dims, size 1 on the mean's):
             R <- lerp(R, mean(G2, dr), w);  C <- lerp(C, mean(G2, dc), w)
             u  = g * rsqrt(R / mean(R, dc)) * rsqrt(C)
        else: V <- lerp(V, G2, w);  u = g * rsqrt(V)
        u   <- u / max(rms(u) / clipping_threshold, 1)                if clipping_threshold
        m   <- lerp(m, u in momentum_dtype, 1 - momentum) (momentum_dtype's arithmetic);
        u    = m in the gradient's dtype (masked, `caution`)          if momentum is not None

    The momentum is stored in `momentum_dtype` (bfloat16 by default, as timm's), the second
    moments in the param's dtype. Complex params are refused at `init` (timm steps them with
    real-valued math and casts its momentum to a real dtype).
    """
    caution = bool(caution)
    min_dim = int(min_dim_size_to_factor)
    m_dtype = momentum_dtype_of(momentum_dtype)

    def init(params):
        refuse_complex(params, lambda dtype: TypeError(COMPLEX_MESSAGE))

        def shaped(p, axis):
            dims = factored_dims(tuple(p.shape), min_dim)
            if dims is None:
                return None
            return jnp.zeros(tuple(1 if i == dims[axis] else d for i, d in enumerate(p.shape)), p.dtype)

        return ScaleByAdafactorBigVisionState(
            exp_avg_sq_r=map_params(lambda p: shaped(p, 1), params),
            exp_avg_sq_c=map_params(lambda p: shaped(p, 0), params),
            exp_avg_sq=map_params(lambda p: zeros_like(p) if factored_dims(tuple(p.shape), min_dim) is None else None,
                                  params),
            exp_avg=map_params(lambda p: None if momentum is None else zeros_like(p, m_dtype), params),
            step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, decay_rate=decay_rate, decay_offset=decay_offset, beta2_cap=beta2_cap,
                        momentum=momentum, eps=eps, clipping_threshold=clipping_threshold)

        def step_scalars(t, dtype):
            # timm's Python float math on the step (float64; the default float dtype without x64)
            wide = jnp.promote_types(dtype, numerics.float_dtype())
            one = jnp.ones((), wide)
            decay_step = lax.max(lax.sub(numerics.cast(t, wide), numerics.cast(numerics.scalar(h.decay_offset, wide), wide)),
                                 one)
            decayed = lax.pow(decay_step, lax.neg(numerics.cast(numerics.scalar(h.decay_rate, wide), wide)))
            # 1 - min(beta2_cap, 1 - decayed), with `1 - beta2_cap` from the host where it is a number
            w = lax.max(numerics.cast(numerics.one_minus(h.beta2_cap, wide), wide), lax.sub(one, lax.sub(one, decayed)))
            return (numerics.cast(w, dtype),)

        def math(leaf, g, r, c, v, m, _t, scalars):
            (w,) = scalars
            dtype = leaf.dtype
            g = leaf.load(g)
            eps_value = h.eps if h.eps is not None else (1e-7 if leaf.storage_dtype == np.dtype(np.float16) else 1e-30)
            g2 = lax.add(lax.mul(g, g), numerics.scalar(eps_value, dtype))
            dims = factored_dims(tuple(g.shape), min_dim)
            if dims is not None:
                dc, dr = dims
                r = leaf.rounded(numerics.lerp(leaf.load(r), jnp.mean(g2, axis=dr, keepdims=True), w))
                c = leaf.rounded(numerics.lerp(leaf.load(c), jnp.mean(g2, axis=dc, keepdims=True), w))
                row_factor = lax.rsqrt(r / jnp.mean(r, axis=dc, keepdims=True))
                u = g * row_factor * lax.rsqrt(c)
                r, c = leaf.store(r), leaf.store(c)
            else:
                v = leaf.rounded(numerics.lerp(leaf.load(v), g2, w))
                u = lax.mul(g, lax.rsqrt(v))
                v = leaf.store(v)
            if h.clipping_threshold is not None:
                u = clip_by_rms(u, h.clipping_threshold)
            if momentum is not None:
                m_compute = numerics.compute_dtype(m_dtype)
                end = numerics.cast(numerics.cast(u, m_dtype), m_compute)
                m = numerics.cast(numerics.lerp(numerics.cast(m, m_compute), end, numerics.one_minus(h.momentum, m_compute)),
                                  m_dtype)
                u = numerics.cast(m, dtype)
                if caution:
                    u = cautious(u, g)
            return u, r, c, v, m

        # every param's leaf: its unfactored moment, or its row factor (a param's dtype either way)
        reference = jax.tree.map(lambda v, r: r if v is None else v, state.exp_avg_sq, state.exp_avg_sq_r,
                                 is_leaf=is_none)
        return per_param_update(state, updates, math, buffers=_BUFFERS, reference=reference,
                                step_scalars=step_scalars, check=lambda g: check_dense(g, SPARSE_MESSAGE), views=False)

    return GradientTransformation(init, update)


__all__ = ["ScaleByAdafactorBigVisionState", "factored_dims", "momentum_dtype_of", "scale_by_adafactor_big_vision"]
