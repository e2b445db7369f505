"""`scale_by_timm_adafactor`: timm.optim.Adafactor's whole step (fairseq's Adafactor with timm's
choice of factored dimensions), relative step sizes, decay and first moment included."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import sparse as jsparse

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import map_params, zeros_like
from optax_like.core import validation
from optax_like.transforms._per_param import hyperparams, per_param_update, refuse_complex
from optax_like.transforms.caution import cautious
from optax_like.transforms.trust_ratio import leaf_norm
from optax_like.transforms.weight_decay import decoupled_decay_alpha

COMPLEX_MESSAGE = ("timm's Adafactor: complex params are not supported (timm applies its real-valued math to "
                   "complex tensors as they are)")
SPARSE_MESSAGE = "Adafactor does not support sparse gradients."

_BUFFERS = ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq", "RMS")


class ScaleByTimmAdafactorState(NamedTuple):
    exp_avg: Any  # first moment (with beta1; None leaves otherwise), params-shaped
    exp_avg_sq_row: Any  # factored second moment: the param's shape without `dim_row`; None leaves otherwise
    exp_avg_sq_col: Any  # factored second moment: the param's shape without `dim_col`; None leaves otherwise
    exp_avg_sq: Any  # unfactored second moment, params-shaped; None leaves for factored params
    RMS: Any  # per param, a 0-d array: the RMS of the param before its latest step (timm's state['RMS'])
    step: LeafScalars  # per-leaf step count (timm's state['step'], a Python int)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


# Every buffer is kept in the param's compute dtype (float32 for 16-bit params, as timm keeps and
# loads them); the factored moments and RMS are not params-shaped. timm's groups keep `beta1`,
# not the constructor's `betas` (the group entry here): a torch state dict leaves it out.
declare_torch_state(
    ScaleByTimmAdafactorState,
    buffers=_BUFFERS,
    scalars={"step": INT_STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
    attribute_group_entries=("betas",),
    own_dtype=_BUFFERS,
    reduced=("exp_avg_sq_row", "exp_avg_sq_col", "RMS"),
)


def factored_dims(shape: tuple, min_dim_size_to_factor: int) -> Optional[tuple[int, int]]:
    """timm's `Adafactor._get_options`: `(dim_col, dim_row)` of a factored second moment, or None:
    the two leading dims of a param of ndim > 2 when both exceed `min_dim_size_to_factor` (nD
    convolutions' channels), else the two trailing dims when both exceed it."""
    ndim = len(shape)
    if ndim > 2 and shape[0] > min_dim_size_to_factor and shape[1] > min_dim_size_to_factor:
        return 0, 1
    if ndim >= 2 and shape[-2] > min_dim_size_to_factor and shape[-1] > min_dim_size_to_factor:
        return ndim - 2, ndim - 1
    return None


def rms(x: jax.Array) -> jax.Array:
    """timm's `x.norm(2) / (x.numel() ** 0.5)` on one real leaf, in its dtype (`numel ** 0.5` a
    host float; an empty leaf gives 0, not timm's 0 / 0)."""
    return lax.div(leaf_norm(x), numerics.scalar(float(max(np.size(x), 1)) ** 0.5, x.dtype))


def clip_by_rms(u: jax.Array, threshold: Any) -> jax.Array:
    """timm's Adafactor update clipping, `u / max(rms(u) / threshold, 1)`, on one real leaf."""
    dtype = u.dtype
    return lax.div(u, lax.max(lax.div(rms(u), numerics.scalar(threshold, dtype)), jnp.ones((), dtype)))


def check_dense(g: Any, message: str = SPARSE_MESSAGE) -> None:
    """timm's RuntimeError for a sparse gradient (BCOO or row-sparse)."""
    if isinstance(g, jsparse.JAXSparse) or (isinstance(g, tuple) and hasattr(g, "indices")):
        raise RuntimeError(message)


def scale_by_timm_adafactor(
    lr: Optional[ScalarOrSchedule] = None,
    eps: ScalarOrSchedule = 1e-30,
    eps_scale: ScalarOrSchedule = 1e-3,
    clip_threshold: ScalarOrSchedule = 1.0,
    decay_rate: ScalarOrSchedule = -0.8,
    beta1: Optional[ScalarOrSchedule] = None,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    relative_step: bool = True,
    scale_parameter: bool = True,
    warmup_init: bool = False,
    min_dim_size_to_factor: int = 16,
    caution: bool = False,
) -> GradientTransformation:
    """timm's Adafactor step, in `Adafactor.step`'s order (the block emits the whole step: the
    learning rate depends on each param's RMS):

        t    <- t + 1;   RMS = ||p|| / sqrt(numel(p))               (p before this step)
        lr_t  = min(1e-6 t if warmup_init else 1e-2, 1 / sqrt(t)) * (max(eps_scale, RMS) if
                scale_parameter else 1)                              if relative_step, else lr
        w     = 1 - (1 - t^decay_rate);   G2 = g^2 + eps
        factored (dims (c, r), `factored_dims`):
              R <- lerp(R, mean(G2, r), w);  C <- lerp(C, mean(G2, c), w)
              u  = rsqrt(R / mean(R, c))[r] * rsqrt(C)[c] * g
        else: V <- lerp(V, G2, w);  u = rsqrt(V) * g
        u    <- lr_t * u / max(rms(u) / clip_threshold, 1)
        beta1: m <- lerp(m, u, 1 - beta1);  u = m (masked, `caution`)
        p    <- p - weight_decay * lr_t * p - u

    timm's float math: `lr_t` is a Python float, or a 0-d tensor of the param's dtype when it
    takes the RMS (`lr_t * RMS`); the step scalars are float64 (the default float dtype without
    x64). Buffers are kept in the param's compute dtype (float32 for 16-bit params, as timm's).
    Complex params are refused at `init` (timm steps them with real-valued math as they are).
    """
    caution, scale_parameter, warmup_init = bool(caution), bool(scale_parameter), bool(warmup_init)
    relative_step = bool(relative_step)
    min_dim = int(min_dim_size_to_factor)

    def init(params):
        refuse_complex(params, lambda dtype: TypeError(COMPLEX_MESSAGE))

        def zeros(shape, p):
            return jnp.zeros(shape, numerics.compute_dtype(p.dtype))

        def factored(p, which):  # the factored moment without dim `which` (1: the row's, 0: the col's)
            dims = factored_dims(tuple(p.shape), min_dim)
            if dims is None:
                return None
            return zeros(tuple(d for i, d in enumerate(p.shape) if i != dims[which]), p)

        return ScaleByTimmAdafactorState(
            exp_avg=map_params(lambda p: None if beta1 is None else zeros_like(p, numerics.compute_dtype(p.dtype)),
                               params),
            exp_avg_sq_row=map_params(lambda p: factored(p, 1), params),
            exp_avg_sq_col=map_params(lambda p: factored(p, 0), params),
            exp_avg_sq=map_params(lambda p: zeros_like(p, numerics.compute_dtype(p.dtype))
                                  if factored_dims(tuple(p.shape), min_dim) is None else None, params),
            RMS=map_params(lambda p: zeros((), p), params),
            step=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("timm's Adafactor needs the params (its step reads their RMS and decays them): "
                             "call update(updates, state, params).")
        refuse_complex(params, lambda dtype: TypeError(COMPLEX_MESSAGE))
        h = hyperparams(state.schedule_count, lr=lr, eps=eps, eps_scale=eps_scale, clip_threshold=clip_threshold,
                        decay_rate=decay_rate, beta1=beta1, weight_decay=weight_decay)
        decays = validation.maybe_nonzero(h.weight_decay)

        def step_scalars(t, dtype):
            # timm's Python float math on the step (float64; the default float dtype without x64)
            wide = jnp.promote_types(dtype, numerics.float_dtype())
            tw, one = numerics.cast(t, wide), jnp.ones((), wide)
            decayed = lax.pow(tw, numerics.cast(numerics.scalar(h.decay_rate, wide), wide))
            out = [numerics.cast(lax.sub(one, lax.sub(one, decayed)), dtype)]  # 1 - beta2t
            if relative_step:
                min_step = lax.mul(numerics.scalar(1e-6, wide), tw) if warmup_init else numerics.scalar(1e-2, wide)
                lr_rel = lax.min(numerics.cast(min_step, wide), lax.div(one, lax.sqrt(tw)))
                # the Python float lr: eps_scale when it is larger than the RMS, 1 without scale_parameter
                lr_float = lax.mul(lr_rel, numerics.scalar(h.eps_scale, wide)) if scale_parameter else lr_rel
                alpha = lax.neg(lax.mul(numerics.scalar(h.weight_decay, wide), lr_float))
                out += [numerics.cast(lr_rel, dtype), numerics.cast(lr_float, dtype), numerics.cast(alpha, dtype)]
            return tuple(out)

        def math(leaf, g, m, row, col, sq, _rms, p, _t, scalars):
            dtype = leaf.dtype
            g, p = leaf.load(g), leaf.load(p)
            p_rms = rms(p)
            w = scalars[0]
            if relative_step:
                lr_rel, lr_t, alpha = scalars[1:]
                if scale_parameter:  # timm's `max(eps_scale, RMS)`: the 0-d tensor where it is larger
                    larger = lax.gt(p_rms, numerics.scalar(h.eps_scale, dtype))
                    lr_tensor = lax.mul(lr_rel, p_rms)
                    lr_t = jnp.where(larger, lr_tensor, lr_t)
                    # `-weight_decay * lr_t`: the float rounded to the dtype, times the tensor
                    alpha = jnp.where(larger, lax.mul(lax.neg(numerics.scalar(h.weight_decay, dtype)), lr_tensor),
                                      alpha)
            else:
                lr_t = numerics.scalar(h.lr, dtype)
                alpha = decoupled_decay_alpha(h.lr, h.weight_decay, dtype)
            g2 = lax.add(lax.mul(g, g), numerics.scalar(h.eps, dtype))
            dims = factored_dims(tuple(p.shape), min_dim)
            if dims is not None:
                dim_col, dim_row = dims
                row = numerics.lerp(row, jnp.mean(g2, axis=dim_row), w)
                col = numerics.lerp(col, jnp.mean(g2, axis=dim_col), w)
                r_factor = jnp.expand_dims(lax.rsqrt(row / jnp.mean(row, axis=dim_col, keepdims=True)), dim_row)
                c_factor = lax.rsqrt(jnp.expand_dims(col, dim_col))
                u = lax.mul(r_factor * c_factor, g)
            else:
                sq = numerics.lerp(sq, g2, w)
                u = lax.mul(lax.rsqrt(sq), g)
            u = lax.mul(clip_by_rms(u, h.clip_threshold), lr_t)
            if beta1 is not None:
                m = numerics.lerp(m, u, numerics.one_minus(h.beta1, dtype))
                u = cautious(m, g) if caution else m
            moved = lax.add(p, lax.mul(alpha, p)) if decays else p
            return lax.sub(lax.sub(moved, u), p), m, row, col, sq, p_rms

        return per_param_update(state, updates, math, buffers=_BUFFERS, inputs=(params,), reference=params,
                                step_scalars=step_scalars, check=check_dense, views=False)

    return GradientTransformation(init, update)


__all__ = ["ScaleByTimmAdafactorState", "clip_by_rms", "factored_dims", "rms", "scale_by_timm_adafactor"]
