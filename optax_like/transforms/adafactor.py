"""`scale_by_adafactor`: torch.optim.Adafactor's factored second moment and relative step."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import is_none, map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN

COMPLEX_MESSAGE = "Adafactor does not support complex parameters"
SPARSE_MESSAGE = "Adafactor does not support sparse gradients"


class ScaleByAdafactorState(NamedTuple):
    row_var: Any  # (..., m, 1) row factor for leaves with ndim >= 2; None leaves otherwise
    col_var: Any  # (..., 1, n) column factor for leaves with ndim >= 2; None otherwise
    variance: Any  # params-shaped second moment for leaves with ndim < 2; None otherwise
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByAdafactorState,
    buffers=("row_var", "col_var", "variance"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def check_real_params(params: Any) -> None:
    """torch's RuntimeError for complex params (torch raises it at the first step)."""
    for leaf in jax.tree.leaves(params, is_leaf=is_none):
        if leaf is not None and jnp.iscomplexobj(leaf):
            raise RuntimeError(COMPLEX_MESSAGE)


def _factored(shape) -> bool:
    return len(shape) > 1


def scale_by_adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: ScalarOrSchedule = -0.8,
    eps1: Optional[ScalarOrSchedule] = None,
    eps2: ScalarOrSchedule = 1e-3,
    d: ScalarOrSchedule = 1.0,
) -> GradientTransformation:
    """torch's Adafactor step (without weight decay), in `_single_tensor_adafactor`'s order.

    For each leaf with gradient G and param p, at its step t:

        beta2_hat = 1 - t^beta2_decay            (lerp weight  w_t = t^beta2_decay)
        rho_t     = min(lr, 1 / sqrt(t))
        alpha_t   = max(eps2, ||p||_2 / sqrt(numel(p))) * rho_t     (p before weight decay)
        ndim >= 2:  R <- lerp(R, mean(G^2, axis=-1), w_t);  C <- lerp(C, mean(G^2, axis=-2), w_t)
                    V  = (R @ C) / max(mean(R, axis=-2), eps1)
        ndim < 2:   V <- lerp(V, G^2, w_t)
        U   = G * rsqrt(max(V, eps1^2))
        u   = -alpha_t / max(1, ||U||_2 / (sqrt(numel(U)) * d)) * U

    The emitted `u` is the whole step (the learning rate enters through rho_t), so this block
    is not followed by `scale_by_learning_rate`. The row means are torch's
    `norm(G, dim=-1)^2 / n` (sqrt then square, as torch rounds them). `eps1=None` is the
    machine epsilon of the dtype of the first leaf that has a gradient, for every leaf: torch
    sets `eps1` once per param group inside its loop. Complex params raise torch's
    RuntimeError (at `init` here, at the first step in torch).
    """

    def init(params):
        check_real_params(params)

        def row(p):
            return jnp.zeros((*p.shape[:-1], 1), p.dtype) if _factored(p.shape) else None

        def col(p):
            return jnp.zeros((*p.shape[:-2], 1, p.shape[-1]), p.dtype) if _factored(p.shape) else None

        def var(p):
            return None if _factored(p.shape) else zeros_like(p)  # tree.zeros_like: keeps p's sharding under jit

        return ScaleByAdafactorState(
            row_var=map_params(row, params),
            col_var=map_params(col, params),
            variance=map_params(var, params),
            step=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("Adafactor needs the params (alpha_t is relative to their RMS): call update(updates, state, params).")
        check_real_params(params)
        h = hyperparams(state.schedule_count, lr=lr, beta2_decay=beta2_decay, eps2=eps2, d=d, eps1=eps1)
        epsilon1 = h.eps1
        if epsilon1 is None:
            with_grad = [
                p for p, g in zip(
                    jax.tree.leaves(params, is_leaf=is_none),
                    jax.tree.structure(params, is_leaf=is_none).flatten_up_to(updates),
                )
                if p is not None and g is not None
            ]
            epsilon1 = float(jnp.finfo(with_grad[0].dtype).eps) if with_grad else 0.0

        def check_dense(g):
            if isinstance(g, jsparse.JAXSparse) or (isinstance(g, tuple) and hasattr(g, "indices")):
                raise RuntimeError(SPARSE_MESSAGE)

        def math(leaf, g, row_var, col_var, variance, p, t):
            dtype = leaf.dtype
            # torch's Python-float scalar math; float64 where available.
            wide = jnp.promote_types(dtype, numerics.float_dtype())
            tf = t.astype(wide)
            weight = jnp.power(tf, numerics.scalar(h.beta2_decay, wide)).astype(dtype)
            rho = jnp.minimum(numerics.scalar(h.lr, wide), 1 / jnp.sqrt(tf))
            rms = (jnp.linalg.norm(p.reshape(-1)).astype(wide) / jnp.sqrt(jnp.asarray(p.size, wide))) if p.size else jnp.zeros((), wide)
            alpha = jnp.maximum(numerics.scalar(h.eps2, wide), rms) * rho
            e1 = numerics.scalar(epsilon1, dtype)
            if _factored(p.shape):
                # max(n, 1): a size-0 axis gives a 0 mean, not 0/0 = NaN in the state (torch
                # raises ZeroDivisionError on a size-0 param; its update here is empty).
                row_mean = jnp.square(jnp.linalg.norm(g, axis=-1, keepdims=True)) / max(g.shape[-1], 1)
                col_mean = jnp.square(jnp.linalg.norm(g, axis=-2, keepdims=True)) / max(g.shape[-2], 1)
                row_var = numerics.lerp(row_var, row_mean, weight)
                col_var = numerics.lerp(col_var, col_mean, weight)
                var_estimate = row_var * col_var
                var_estimate = var_estimate / jnp.maximum(jnp.mean(row_var, axis=-2, keepdims=True), e1)
            else:
                variance = var_estimate = numerics.lerp(variance, g * g, weight)
            if numerics.is_host_scalar(epsilon1):
                e1_sq = numerics.scalar(float(epsilon1) * float(epsilon1), dtype)
            else:
                e1_sq = e1 * e1
            u = jax.lax.rsqrt(jnp.maximum(var_estimate, e1_sq)) * g
            u_rms = jnp.linalg.norm(u.reshape(-1)).astype(wide) / (jnp.sqrt(jnp.asarray(max(u.size, 1), wide)) * numerics.scalar(h.d, wide))
            denom = jnp.maximum(jnp.ones((), wide), u_rms)
            return u * (-alpha / denom).astype(dtype), row_var, col_var, variance

        return per_param_update(
            state, updates, math, buffers=("row_var", "col_var", "variance"), inputs=(params,),
            reference=params, check=check_dense,
        )

    return GradientTransformation(init, update)


__all__ = ["ScaleByAdafactorState", "scale_by_adafactor"]
