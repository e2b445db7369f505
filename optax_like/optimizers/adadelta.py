"""torch.optim.Adadelta as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.adadelta import scale_by_adadelta
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights


def adadelta(
    lr: ScalarOrSchedule = 1.0,
    rho: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-6,
    weight_decay: ScalarOrSchedule = 0,
    foreach=None,
    *,
    capturable: bool = False,
    maximize: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """Adadelta (Zeiler, 2012), as torch.optim.Adadelta computes it:

        g_t     <- -g_t                                        if maximize
        g_t     <- g_t + weight_decay * p                      if weight_decay != 0
        v_t      = rho * v_{t-1} + (1 - rho) * g_t^2           (square_avg)
        delta_t  = sqrt(a_{t-1} + eps) / sqrt(v_t + eps) * g_t (eps inside both roots)
        a_t      = rho * a_{t-1} + (1 - rho) * delta_t^2       (acc_delta)
        p       <- p - lr * delta_t

    `lr` defaults to 1.0 (Adadelta's step is unit-free; lr is a plain multiplier, applied by
    `scale_by_learning_rate`). torch counterpart: `torch.optim.Adadelta(params, lr=1.0,
    rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False, maximize=False,
    differentiable=False)`; `foreach`, `capturable` and `differentiable` select torch kernels
    and are accepted and ignored. lr, rho, eps and weight_decay may be schedules.
    """
    del foreach, capturable, differentiable
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(rho, "rho", lambda x: 0.0 <= x <= 1.0, "Invalid rho value: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")

    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if v.maybe_nonzero(weight_decay) else []),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(lr),
    )
