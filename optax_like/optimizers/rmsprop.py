"""torch.optim.RMSprop as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.combine import chain
from optax_like.transforms.rmsprop import scale_by_rmsprop
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights


def rmsprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: ScalarOrSchedule = 0.99,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    momentum: ScalarOrSchedule = 0,
    centered: bool = False,
    capturable: bool = False,
    foreach=None,
    maximize: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """RMSprop, as torch.optim.RMSprop computes it:

        g_t   <- -g_t                                          if maximize
        g_t   <- g_t + weight_decay * p                        if weight_decay != 0
        v_t    = alpha * v_{t-1} + (1 - alpha) * g_t^2         (square_avg)
        m_t    = lerp(m_{t-1}, g_t, 1 - alpha)                 (grad_avg, if centered)
        avg    = sqrt(v_t - m_t^2) + eps  if centered  else  sqrt(v_t) + eps
        b_t    = momentum * b_{t-1} + g_t / avg               (b_0 = 0, if momentum > 0)
        p     <- p - lr * b_t   if momentum > 0   else   p - lr * g_t / avg

    Quirks kept: eps is added outside the square root (optax's `scale_by_rms` agrees; its
    centered variant puts eps inside), the momentum buffer starts at zero (unlike SGD's, which
    starts at the first gradient), and `alpha` is the smoothing constant of the *squares*
    (torch's name for optax's `decay`). Unlike most torch optimizers none of RMSprop's
    arguments is keyword-only; the order is torch's: `torch.optim.RMSprop(params, lr=1e-2,
    alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, capturable=False,
    foreach=None, maximize=False, differentiable=False)`. `capturable`, `foreach` and
    `differentiable` select torch kernels and are accepted and ignored. lr, alpha, eps,
    weight_decay and momentum may be schedules.
    """
    del capturable, foreach, differentiable
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    v.check(momentum, "momentum", v.nonnegative, "Invalid momentum value: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    v.check(alpha, "alpha", v.nonnegative, "Invalid alpha value: {}")

    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if v.maybe_nonzero(weight_decay) else []),
        scale_by_rmsprop(alpha, eps, momentum, centered),
        scale_by_learning_rate(lr),
    )
