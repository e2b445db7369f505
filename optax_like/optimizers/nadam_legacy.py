"""timm.optim.NAdamLegacy as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared
from optax_like.transforms.combine import chain
from optax_like.transforms.nadam_legacy import scale_by_nadam_legacy
from optax_like.transforms.scaling import scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights


def nadam_legacy(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    schedule_decay: ScalarOrSchedule = 4e-3,
) -> GradientTransformation:
    """NAdam (Dozat, 2016, "Incorporating Nesterov Momentum into Adam") with Keras's warming
    momentum schedule, as timm.optim.NAdamLegacy (timm 1.0.31) computes it:

        g    <- g + weight_decay * p                                  if weight_decay != 0
        mu_t  = beta1 (1 - 0.5 * 0.96^(t * schedule_decay));   M_t = M_{t-1} mu_t
        m_t   = beta1 m + (1 - beta1) g;   v_t = beta2 v + (1 - beta2) g^2
        d     = sqrt(v_t) / sqrt(1 - beta2^t) + eps
        p    <- p - lr ((1 - mu_t) / (1 - M_t) g / d + mu_{t+1} / (1 - M_t mu_{t+1}) m_t / d)

    Chain: `[add_decayed_weights] -> scale_by_nadam_legacy -> scale_by_learning_rate`. timm
    counterpart: `timm.optim.NAdamLegacy(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, schedule_decay=4e-3)`; timm checks only lr. torch.optim.NAdam
    (`optax_like.nadam`) is the same method with another schedule (`momentum_decay`). lr,
    betas, eps, weight_decay and schedule_decay may be schedules.
    """
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check_pair(betas, "betas", "(beta1, beta2)")
    for value, name in ((betas[0], "betas[0]"), (betas[1], "betas[1]"), (eps, "eps"),
                        (weight_decay, "weight_decay"), (schedule_decay, "schedule_decay")):
        v.check_hyperparam(value, name)
    return chain(
        *([add_decayed_weights(weight_decay)] if v.maybe_nonzero(weight_decay) else []),
        scale_by_nadam_legacy(betas[0], betas[1], eps, schedule_decay),
        scale_by_learning_rate(lr),
    )
