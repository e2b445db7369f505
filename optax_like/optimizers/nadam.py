"""torch.optim.NAdam as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.combine import chain
from optax_like.transforms.nadam import scale_by_nadam
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights, add_decoupled_weight_decay


def nadam(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    momentum_decay: ScalarOrSchedule = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    foreach=None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """NAdam (Dozat, 2016), as torch.optim.NAdam computes it.

        g_t <- -g_t                                        if maximize
        p   <- p * (1 - lr * weight_decay)                 if decoupled_weight_decay (NAdamW)
        g_t <- g_t + weight_decay * p                      elif weight_decay != 0
        mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay)),  mu_{t+1} likewise at t + 1
        P_t  = P_{t-1} * mu_t                              (state `mu_product`, P_0 = 1)
        m_t  = lerp(m_{t-1}, g_t, 1 - beta1)
        v_t  = beta2 * v_{t-1} + (1 - beta2) * g_t^2
        d    = sqrt(v_t / (1 - beta2^t)) + eps
        p   <- p - lr (1 - mu_t) / (1 - P_t) * g_t / d - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m_t / d

    `momentum_decay` (psi) is the paper's 0.004 schedule constant. torch keeps `mu_product` as a
    float32 scalar per param even for float64 params; so does `scale_by_nadam` (see there).
    Chain: `[negate] -> [add_decayed_weights] -> scale_by_nadam -> scale_by_learning_rate ->
    [add_decoupled_weight_decay]`. torch counterpart: `torch.optim.NAdam(params, lr=2e-3,
    betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
    decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
    differentiable=False)`. `foreach` and `capturable` select torch kernels: accepted and
    ignored; `differentiable=True` follows torch's differentiable path, whose coefficients are
    formed from the float32 `mu_product` tensor (`scale_by_nadam(differentiable_lr=lr)`). lr, betas, eps, weight_decay and momentum_decay may be schedules.
    """
    del foreach, capturable
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_betas(betas)
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    v.check(momentum_decay, "momentum_decay", v.nonnegative, "Invalid momentum_decay value: {}")

    decay = v.maybe_nonzero(weight_decay)
    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if decay and not decoupled_weight_decay else []),
        *([scale_by_nadam(betas[0], betas[1], eps, momentum_decay, differentiable_lr=lr)] if differentiable else
          [scale_by_nadam(betas[0], betas[1], eps, momentum_decay), scale_by_learning_rate(lr)]),
        *([add_decoupled_weight_decay(lr, weight_decay)] if decay and decoupled_weight_decay else []),
    )
