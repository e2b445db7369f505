"""`scale_by_adam`: torch.optim.Adam's moment estimates and normalisation (Adam-style moments)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN


class ScaleByAdamState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped
    exp_avg_sq: Any  # second moment
    max_exp_avg_sq: Any  # running max of exp_avg_sq (AMSGrad); None leaves otherwise
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled betas


declare_torch_state(
    ScaleByAdamState,
    buffers=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def float32_step_bias_correction(beta: Any, count: jax.Array) -> jax.Array:
    """torch's `1 - beta ** step` with `step` its float32 state tensor: `float32(beta) **
    float32(step)` rounded to float32 (computed in float64 where available, so correctly
    rounded but for ties), then `1 - that` in float32. Returns a float32 0-d array."""
    f32 = jnp.dtype(jnp.float32)
    wide = jnp.promote_types(numerics.float_dtype(), f32)
    b = jnp.asarray(numerics.scalar(beta, f32)).astype(wide)
    t = jnp.asarray(count).astype(f32).astype(wide)
    return 1 - jnp.power(b, t).astype(f32)


def scale_by_adam(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    amsgrad: bool = False,
    differentiable_lr: ScalarOrSchedule | None = None,
    *,
    eps_root: ScalarOrSchedule = 0.0,
) -> GradientTransformation:
    """Adam's direction, in torch's order of operations (without the learning rate):

        t   <- t + 1
        m_t  = lerp(m_{t-1}, g, 1 - b1)                  (torch's exp_avg.lerp_)
        v_t  = b2 * v_{t-1} + (1 - b2) * g * g
        v^   = max(v^_{t-1}, v_t)  if amsgrad else v_t   (the max of the *raw* v, not v/bc2)
        u    = (m_t / (1 - b1^t)) / (sqrt(v^) / sqrt(1 - b2^t) + eps)

    `eps_root` is optax's (torch has none): a term added inside the square root,
    `u = (m_t / (1 - b1^t)) / (sqrt(v^ / (1 - b2^t) + eps_root) + eps)`, which keeps the
    derivative through the step finite where v = 0 (meta-learning). At its default 0 the step is
    torch's, rounding included.

    Complex params are treated as pairs of reals, as torch does. Steps are counted per leaf:
    a leaf whose update is None is skipped with its state untouched (torch's `grad is None`).

    With `differentiable_lr` given, the block emits the whole step of torch's
    `differentiable=True` path, learning rate included (no `scale_by_learning_rate` after it):

        s    = lr / bc1,   bc_i = 1 - b_i^t   (float32: torch's float32 `step` tensor)
        u    = m_t / (sqrt(v^) / (sqrt(bc2) * -s) + eps / -s)

    where a Python-number lr is rounded to float32 with them and an array lr (torch's Tensor
    lr) keeps its dtype (`numerics.is_python_number`). In float64 this differs from the
    default path by 2e-10..6e-7 relative, as torch's two paths do.
    """

    def init(params):
        zeros = zeros_like(params)
        return ScaleByAdamState(
            exp_avg=zeros,
            exp_avg_sq=zeros_like(params),
            max_exp_avg_sq=zeros_like(params) if amsgrad else map_params(lambda p: None, params),
            step=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps, lr=differentiable_lr, eps_root=eps_root)
        # eps_root = 0 as a host number: torch's step exactly; otherwise (a value, traced or not)
        # the root form, with torch's where a traced eps_root is 0.
        rooted = not (numerics.is_host_scalar(h.eps_root) and float(h.eps_root) == 0.0)
        if rooted and differentiable_lr is not None:
            raise ValueError("scale_by_adam: eps_root (optax's) has no form in torch's differentiable path "
                             "(differentiable_lr).")

        def bias_corrections(t, dtype):
            bc2 = numerics.bias_correction(h.b2, t, dtype)
            if rooted:
                return numerics.bias_correction(h.b1, t, dtype), jnp.sqrt(bc2), bc2
            return numerics.bias_correction(h.b1, t, dtype), jnp.sqrt(bc2)

        def differentiable_scalars(t, dtype):
            """torch's `sqrt(bc2) * -step_size` and `eps / -step_size`, as its differentiable
            path rounds them (float32 bias corrections; the lr's own dtype for an array lr)."""
            f32 = jnp.dtype(jnp.float32)
            bc1 = float32_step_bias_correction(h.b1, t)
            bc2 = float32_step_bias_correction(h.b2, t)
            if numerics.is_python_number(h.lr):
                kind = f32  # Python float / float32 tensor: `bc1.reciprocal() * lr`
                step_size = (1 / bc1) * numerics.scalar(h.lr, f32)
            else:
                kind = jnp.result_type(numerics.plain(h.lr))
                kind = jnp.promote_types(kind if jnp.issubdtype(kind, jnp.floating) else numerics.float_dtype(), f32)
                step_size = numerics.scalar(h.lr, kind) / bc1.astype(kind)
            negative = -step_size
            scale = jnp.sqrt(bc2).astype(kind) * negative
            shift = (1 / negative) * numerics.scalar(h.eps, kind)  # Python eps / tensor
            return scale.astype(dtype), shift.astype(dtype)

        def math(leaf, g, m, v, vmax, _t, scalars):
            # On `jax.lax` directly, not jnp: same jaxpr, a third of the tracing time (jnp's
            # per-op dispatch is most of a step's trace on a tree of many leaves).
            dtype = leaf.dtype
            m = numerics.lerp(m, g, numerics.one_minus(h.b1, dtype))
            v = lax.add(lax.mul(v, numerics.scalar(h.b2, dtype)), lax.mul(lax.mul(numerics.one_minus(h.b2, dtype), g), g))
            if amsgrad:
                vmax = lax.max(vmax, v)
            # No optimization_barrier on the new moments: XLA:CPU writes them in place and the
            # params' kernel reads them; a barrier gives the same compiled program.
            if differentiable_lr is not None:
                scale, shift = scalars
                return m / (jnp.sqrt(vmax if amsgrad else v) / scale + shift), m, v, vmax
            bc1, bc2_sqrt = scalars[:2]
            vv = vmax if amsgrad else v
            root = lax.div(lax.sqrt(vv), bc2_sqrt)
            if rooted:
                eps_root_c = numerics.scalar(h.eps_root, dtype)
                with_root = lax.sqrt(lax.add(lax.div(vv, scalars[2]), eps_root_c))
                root = with_root if numerics.is_host_scalar(h.eps_root) else jnp.where(eps_root_c == 0, root, with_root)
            denom = lax.add(root, numerics.scalar(h.eps, dtype))
            return lax.div(lax.div(m, bc1), denom), m, v, vmax

        return per_param_update(
            state, updates, math, buffers=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
            step_scalars=bias_corrections if differentiable_lr is None else differentiable_scalars, pin_step_scalars=True,
        )

    return GradientTransformation(init, update)
