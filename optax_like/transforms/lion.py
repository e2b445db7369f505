"""`scale_by_lion`: the Lion direction (timm.optim.Lion): the sign of an interpolated momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.torch_layout import STARTED, STEPS_TAKEN, declare_torch_state
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.caution import cautious


class ScaleByLionState(NamedTuple):
    exp_avg: Any  # momentum, params-shaped (timm's state['exp_avg'])
    step: LeafScalars  # per-leaf count of updates (timm keeps none: internal, "has state")
    schedule_count: jax.Array  # updates applied so far, for scheduled betas


declare_torch_state(
    ScaleByLionState,
    buffers=("exp_avg",),
    internal={"step": STARTED, "schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_lion(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.99,
    *,
    caution: bool = False,
) -> GradientTransformation:
    """Lion's direction (Chen et al., 2023), in timm's order of operations (without the lr):

        u   = sign(lerp(m_{t-1}, g, 1 - b1))
        u  <- u * mask / max(mean(mask), 1e-3),  mask = [u * g > 0]     if caution
        m_t = lerp(m_{t-1}, g, 1 - b2)

    `caution` is the Cautious Optimizers mask (Liang et al., 2024): components whose sign
    disagrees with the gradient are zeroed and the rest rescaled by the leaf's kept fraction.
    Complex params are pairs of reals (timm's `view_as_real`): the sign and the mask act on real
    and imaginary parts separately. A leaf whose update is None is skipped, its state untouched.
    """
    caution = bool(caution)

    def init(params):
        return ScaleByLionState(exp_avg=zeros_like(params), step=init_counts(params),
                                schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, b1=b1, b2=b2)

        def math(leaf, g, m, t):
            del t
            dtype = leaf.dtype
            u = lax.sign(numerics.lerp(m, g, numerics.one_minus(h.b1, dtype)))
            if caution:
                u = cautious(u, g)
            return u, numerics.lerp(m, g, numerics.one_minus(h.b2, dtype))

        return per_param_update(state, updates, math, buffers=("exp_avg",))

    return GradientTransformation(init, update)
