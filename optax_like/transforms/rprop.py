"""`scale_by_rprop`: torch.optim.Rprop's sign-based steps with per-element adaptive sizes."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN


class ScaleByRpropState(NamedTuple):
    prev: Any  # the previous (sign-change-zeroed) gradient (torch's state['prev'])
    step_size: Any  # per-element step sizes, params-shaped (torch's state['step_size'])
    step: LeafScalars  # per-leaf step count (torch's state['step']; counted, not used in the math)
    schedule_count: jax.Array  # updates applied so far, for scheduled etas / step sizes


declare_torch_state(
    ScaleByRpropState,
    buffers=("prev", "step_size"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def _torch_sign(x: jax.Array) -> jax.Array:
    """`torch.sign`: like `jnp.sign`, except that NaN gives 0."""
    return jnp.where(jnp.isnan(x), jnp.zeros((), x.dtype), jnp.sign(x))


def scale_by_rprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    etas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.5, 1.2),
    step_sizes: tuple[ScalarOrSchedule, ScalarOrSchedule] = (1e-6, 50),
) -> GradientTransformation:
    """torch.optim.Rprop's step (Riedmiller & Braun, 1993), *including the learning rate*:

        s      = sign(g * prev)                                          (sign(NaN) = 0)
        f      = etaplus if s > 0,  etaminus if s < 0,  1 if s == 0
        size_t = clamp(size_{t-1} * f, step_size_min, step_size_max)    (size_0 = lr)
        g      = 0   where f == etaminus                                (sign change: skip)
        u      = -sign(g) * size_t
        prev   = g

    The learning rate is only the initial step size of every element, read once at `init`
    (a schedule is evaluated at count 0, a later change of lr has no effect, as in torch where
    `lr` is read only when the state is created); hence it lives here, not in a trailing
    `scale_by_learning_rate`. etas are rounded to the params' dtype before use, as torch
    writes them into a tensor of that dtype. `sign` is torch's, which is 0 for NaN: an element
    whose gradient is NaN does not move, keeps its step size and remembers NaN as `prev`, so
    its next step has factor 1 (`jnp.sign(nan)` is NaN and would poison the step size; torch
    keeps going). Complex params are treated as pairs of reals
    (step sizes start at lr + lr*1j). Leaves whose update is None are skipped, state untouched.
    """
    etaminus, etaplus = etas
    size_min, size_max = step_sizes

    def init(params):
        count = jnp.zeros((), jnp.int32)
        lr0 = numerics.resolve(learning_rate, count)

        def fill(z):
            real = numerics.scalar(lr0, jnp.real(z).dtype)
            value = jax.lax.complex(real, real) if jnp.iscomplexobj(z) else real
            return z + value.astype(z.dtype)

        return ScaleByRpropState(
            prev=zeros_like(params),
            step_size=map_params(fill, zeros_like(params)),
            step=init_counts(params),
            schedule_count=count,
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, etaminus=etaminus, etaplus=etaplus, lo=size_min, hi=size_max)

        def math(leaf, g, prev, size):
            dtype = leaf.dtype
            # torch writes the etas into a tensor of the params' dtype.
            em = numerics.scalar(h.etaminus, leaf.storage_dtype).astype(dtype)
            ep = numerics.scalar(h.etaplus, leaf.storage_dtype).astype(dtype)
            s = _torch_sign(g * prev)
            factor = jnp.where(s > 0, ep, jnp.where(s < 0, em, jnp.ones((), dtype)))
            size = jnp.clip(size * factor, numerics.scalar(h.lo, dtype), numerics.scalar(h.hi, dtype))
            size = size.astype(leaf.storage_dtype).astype(dtype)
            g = jnp.where(factor == em, jnp.zeros((), dtype), g)
            return -_torch_sign(g) * size, g, size

        return per_param_update(state, updates, math, buffers=("prev", "step_size"), counts=None)

    return GradientTransformation(init, update)


__all__ = ["ScaleByRpropState", "scale_by_rprop"]
