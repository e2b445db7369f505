"""`scale_by_adadelta`: torch.optim.Adadelta's two running averages and its unit-free step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN


class ScaleByAdadeltaState(NamedTuple):
    square_avg: Any  # running average of g^2 (torch's state['square_avg'])
    acc_delta: Any  # running average of the squared steps (torch's state['acc_delta'])
    step: LeafScalars  # per-leaf step count (torch's state['step']; counted, not used in the math)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByAdadeltaState,
    buffers=("square_avg", "acc_delta"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_adadelta(
    rho: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-6,
) -> GradientTransformation:
    """torch.optim.Adadelta's direction (Zeiler, 2012), without the learning rate:

        v_t      = rho * v_{t-1} + (1 - rho) * g * g                 (square_avg)
        delta_t  = sqrt(a_{t-1} + eps) / sqrt(v_t + eps) * g
        a_t      = rho * a_{t-1} + (1 - rho) * delta_t * delta_t     (acc_delta)
        u        = delta_t

    eps sits *inside both* square roots, as in torch's code (`square_avg.add(eps).sqrt_()`),
    which is what makes the first steps non-zero (a_0 = 0). torch's multiplier `lr` (default
    1.0) enters linearly and is applied by a trailing `scale_by_learning_rate`. Complex params
    are treated as pairs of reals. Leaves whose update is None are skipped, state untouched.
    """

    def init(params):
        return ScaleByAdadeltaState(
            square_avg=zeros_like(params),
            acc_delta=zeros_like(params),
            step=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, rho=rho, eps=eps)

        def math(leaf, g, v, a):
            rho_c = numerics.scalar(h.rho, leaf.dtype)
            one_minus_rho = numerics.one_minus(h.rho, leaf.dtype)
            eps_c = numerics.scalar(h.eps, leaf.dtype)
            v = lax.add(lax.mul(v, rho_c), lax.mul(lax.mul(one_minus_rho, g), g))
            delta = lax.mul(lax.div(lax.sqrt(lax.add(a, eps_c)), lax.sqrt(lax.add(v, eps_c))), g)
            a = lax.add(lax.mul(a, rho_c), lax.mul(lax.mul(one_minus_rho, delta), delta))
            return delta, v, a

        return per_param_update(state, updates, math, buffers=("square_avg", "acc_delta"), counts=None)

    return GradientTransformation(init, update)


__all__ = ["ScaleByAdadeltaState", "scale_by_adadelta"]
