"""torch.optim.RAdam as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.combine import chain
from optax_like.transforms.radam import scale_by_radam
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights, add_decoupled_weight_decay


def radam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    decoupled_weight_decay: bool = False,
    *,
    foreach=None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """RAdam (Liu et al., 2020), as torch.optim.RAdam computes it.

        g_t <- -g_t                                        if maximize
        p   <- p * (1 - lr * weight_decay)                 if decoupled_weight_decay (RAdamW)
        g_t <- g_t + weight_decay * p                      elif weight_decay != 0
        m_t  = lerp(m_{t-1}, g_t, 1 - beta1);   m^ = m_t / (1 - beta1^t)
        v_t  = beta2 * v_{t-1} + (1 - beta2) * g_t^2
        rho_inf = 2 / (1 - beta2) - 1;   rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        p   <- p - lr * m^ * sqrt(1 - beta2^t) / (sqrt(v_t) + eps) * r_t    if rho_t > 5
        p   <- p - lr * m^                                                  otherwise
        r_t  = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))

    With the default beta2 = 0.999 the first five steps are un-adapted momentum steps. eps sits
    next to sqrt(v_t), before the bias correction (torch's code; its docs agree). Chain:
    `[negate] -> [add_decayed_weights] -> scale_by_radam -> scale_by_learning_rate ->
    [add_decoupled_weight_decay]`. torch counterpart: `torch.optim.RAdam(params, lr=1e-3,
    betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False, *, foreach=None,
    maximize=False, capturable=False, differentiable=False)`. `foreach`, `capturable` and
    `differentiable` select torch kernels: accepted and ignored. lr, betas, eps and
    weight_decay may be schedules `count -> value`.
    """
    del foreach, capturable, differentiable
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_betas(betas)
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")

    decay = v.maybe_nonzero(weight_decay)
    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if decay and not decoupled_weight_decay else []),
        scale_by_radam(betas[0], betas[1], eps),
        scale_by_learning_rate(lr),
        *([add_decoupled_weight_decay(lr, weight_decay)] if decay and decoupled_weight_decay else []),
    )
