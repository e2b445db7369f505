"""`scale_by_adagrad`: torch.optim.Adagrad's accumulator, decayed learning rate and step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.tree import LeafScalars, init_counts, map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN


class ScaleByAdagradState(NamedTuple):
    sum: Any  # accumulated squared gradients, params-shaped (torch's state['sum'])
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByAdagradState,
    buffers=("sum",),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    construction_args=("initial_accumulator_value",),
)


def _wide_dtype(dtype) -> jnp.dtype:
    """The dtype torch's host scalar math maps to here: float64 under x64, else float32."""
    return jnp.promote_types(numerics.float_dtype(), dtype)


def _array_dtype(x) -> jnp.dtype:
    """The float dtype of an array hyperparameter (the default float dtype for integers)."""
    dtype = jnp.asarray(numerics.plain(x)).dtype
    return dtype if jnp.issubdtype(dtype, jnp.floating) else numerics.float_dtype()


def scale_by_adagrad(
    learning_rate: ScalarOrSchedule = 1e-2,
    lr_decay: ScalarOrSchedule = 0.0,
    initial_accumulator_value: ScalarOrSchedule = 0.0,
    eps: ScalarOrSchedule = 1e-10,
) -> GradientTransformation:
    """torch.optim.Adagrad's step, *including the learning rate and its sign* (descent):

        t     <- t + 1                                   (per leaf)
        clr    = lr / (1 + (t - 1) * lr_decay)           (host float64 in torch)
        sum_t  = sum_{t-1} + g * g                       (sum_0 = initial_accumulator_value)
        u      = (-clr * g) / (sqrt(sum_t) + eps)        (eps outside the square root)

    The learning rate lives inside this block, not in a trailing `scale_by_learning_rate`,
    because torch's decayed rate `clr` depends on each parameter's own step count (a leaf that
    missed an update keeps a smaller `t`) and torch rounds `-clr` once before multiplying,
    `param.addcdiv_(grad, std, value=-clr)`; both are reproduced here. `clr` is computed in
    float64 under x64 (torch's Python float), else float32; for an array `lr` (torch's Tensor
    lr, which torch keeps a tensor) the division is done in the array's dtype, as torch does.

    Complex params are treated as pairs of reals (torch's `view_as_real`); their accumulator
    starts at `initial_accumulator_value * (1 + 1j)`, as torch's `complex(v, v)`. torch's
    sparse-gradient path has no counterpart (JAX gradients are dense). `initial_accumulator_value`
    is read once, at `init` (a schedule is evaluated at count 0). Leaves whose update is None
    are skipped with their state untouched.
    """

    def init(params):
        count = jnp.zeros((), jnp.int32)
        start = numerics.resolve(initial_accumulator_value, count)

        def fill(z):
            real = numerics.scalar(start, jnp.real(z).dtype)
            value = jax.lax.complex(real, real) if jnp.iscomplexobj(z) else real
            return z + value.astype(z.dtype)

        return ScaleByAdagradState(
            sum=map_params(fill, zeros_like(params)),
            step=init_counts(params),
            schedule_count=count,
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, lr=learning_rate, lr_decay=lr_decay, eps=eps)

        @numerics.once_per_step
        def decayed_lr(t, wide):
            """torch's `clr = lr / (1 + (step - 1) * lr_decay)`."""
            denom = 1 + (t.astype(wide) - 1) * numerics.scalar(h.lr_decay, wide)
            if numerics.is_host_scalar(h.lr):
                return numerics.scalar(h.lr, wide) / denom
            # torch keeps a Tensor lr a tensor: `lr / denom` is computed in lr's dtype.
            lr_dtype = _array_dtype(h.lr)
            return numerics.scalar(h.lr, lr_dtype) / denom.astype(lr_dtype)

        def math(leaf, g, acc, t):
            dtype = leaf.dtype
            clr = decayed_lr(t, _wide_dtype(dtype))
            acc = lax.add(acc, lax.mul(g, g))
            std = lax.add(lax.sqrt(acc), numerics.scalar(h.eps, dtype))
            return lax.div(lax.mul(numerics.cast(-clr, dtype), g), std), acc

        return per_param_update(state, updates, math, buffers=("sum",))

    return GradientTransformation(init, update)


__all__ = ["ScaleByAdagradState", "scale_by_adagrad"]
