"""timm.optim.MADGRAD as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared
from optax_like.transforms.combine import chain
from optax_like.transforms.madgrad import scale_by_madgrad
from optax_like.transforms.weight_decay import add_decayed_weights


def madgrad(
    lr: ScalarOrSchedule = 1e-2,
    momentum: ScalarOrSchedule = 0.9,
    weight_decay: ScalarOrSchedule = 0,
    eps: ScalarOrSchedule = 1e-6,
    decoupled_decay: bool = False,
) -> GradientTransformation:
    """MADGRAD (Defazio & Jelassi, 2021, "Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization"), as
    timm.optim.MADGRAD (timm 1.0.31) computes it for dense gradients:

        lamb_t = (lr + eps) sqrt(t)
        g     <- g + weight_decay * p                    (weight_decay != 0, not decoupled_decay)
        p     <- p * (1 - lr * weight_decay)             (weight_decay != 0, decoupled_decay)
        gss_t  = gss + lamb_t g^2;   s_t = s + lamb_t g
        z      = x0 - s_t / (gss_t^(1/3) + eps)
        p     <- momentum * p + (1 - momentum) * z       (z itself without momentum; x0: the first
                                                          param, or recovered from p, s, gss)

    Chain: `[add_decayed_weights] -> scale_by_madgrad` (which emits the whole step). timm
    counterpart: `timm.optim.MADGRAD(params, lr=1e-2, momentum=0.9, weight_decay=0, eps=1e-6,
    decoupled_decay=False)`. lr, momentum, weight_decay and eps may be schedules.
    """
    v.check(momentum, "momentum", lambda m: 0 <= m < 1, "Momentum {} must be in the range [0,1]")
    check_compared(lr)
    v.check(lr, "lr", lambda x: x > 0, "Learning rate {} must be positive")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Weight decay {} must be non-negative")
    v.check(eps, "eps", v.nonnegative, "Eps must be non-negative")
    decays = v.maybe_nonzero(weight_decay)
    return chain(
        *([add_decayed_weights(weight_decay)] if decays and not decoupled_decay else []),
        scale_by_madgrad(lr, momentum, eps, decay_lr=lr if decays and decoupled_decay else 0.0,
                         weight_decay=weight_decay if decays and decoupled_decay else 0.0),
    )
