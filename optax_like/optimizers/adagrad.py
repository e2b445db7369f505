"""torch.optim.Adagrad as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.adagrad import scale_by_adagrad
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import negate
from optax_like.transforms.weight_decay import add_decayed_weights


def adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: ScalarOrSchedule = 0,
    weight_decay: ScalarOrSchedule = 0,
    initial_accumulator_value: ScalarOrSchedule = 0,
    eps: ScalarOrSchedule = 1e-10,
    foreach=None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    fused=None,
) -> GradientTransformation:
    """Adagrad (Duchi et al., 2011), as torch.optim.Adagrad computes it:

        g_t   <- -g_t                                   if maximize
        g_t   <- g_t + weight_decay * p                 if weight_decay != 0
        clr    = lr / (1 + (t - 1) * lr_decay)          (t: the param's own step count)
        sum_t  = sum_{t-1} + g_t^2                      (sum_0 = initial_accumulator_value)
        p     <- p - clr * g_t / (sqrt(sum_t) + eps)    (eps outside the square root)

    The chain is `negate -> add_decayed_weights -> scale_by_adagrad`; there is no trailing
    `scale_by_learning_rate` because torch's decayed rate depends on each param's step count
    and is rounded once as `-clr` (see `scale_by_adagrad`). Differences from torch: sparse
    gradients (torch's `grad.is_sparse` path) do not exist in JAX; `foreach`, `fused` and
    `differentiable` select torch kernels and are accepted and ignored. torch counterpart:
    `torch.optim.Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0,
    initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
    differentiable=False, fused=None)`. lr, lr_decay, weight_decay and eps may be schedules
    `count -> value`; initial_accumulator_value is read at `init`.
    """
    del foreach, differentiable, fused
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(lr_decay, "lr_decay", v.nonnegative, "Invalid lr_decay value: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    v.check(
        initial_accumulator_value,
        "initial_accumulator_value",
        v.nonnegative,
        "Invalid initial_accumulator_value value: {}",
    )
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")

    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if v.maybe_nonzero(weight_decay) else []),
        scale_by_adagrad(lr, lr_decay, initial_accumulator_value, eps),
    )
