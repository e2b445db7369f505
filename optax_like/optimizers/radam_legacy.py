"""timm.optim.RAdamLegacy as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.combine import chain
from optax_like.transforms.radam_legacy import scale_by_radam_legacy


def radam_legacy(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
) -> GradientTransformation:
    """RAdam (Liu et al., 2020, "On the Variance of the Adaptive Learning Rate and Beyond") as
    its original implementation wrote it, as timm.optim.RAdamLegacy (timm 1.0.31) computes it, in
    float32 whatever the params' dtype (timm steps `p.float()` and copies the result back):

        m_t  = beta1 m + (1 - beta1) g;   v_t = beta2 v + (1 - beta2) g^2
        rho_inf = 2 / (1 - beta2) - 1;   rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        p   <- p - lr * weight_decay * p                                     (weight_decay != 0)
        p   <- p - lr r_t sqrt(1 - beta2^t) / (1 - beta1^t) * m_t / (sqrt(v_t) + eps)   if rho_t >= 5
        p   <- p - lr / (1 - beta1^t) * m_t                                              otherwise
        r_t  = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))

    Unlike torch.optim.RAdam (`radam`): the switch is `rho_t >= 5` (torch: `> 5`), eps is added
    to sqrt(v_t) with the bias correction folded into the step size, the decay is decoupled
    (applied to the param before the step), and the moments are float32 (timm's state keeps
    them so, also for float64 params; `scale_by_radam_legacy`). Chain: `scale_by_radam_legacy`
    alone (it emits the whole step). timm counterpart: `timm.optim.RAdamLegacy(params, lr=1e-3,
    betas=(0.9, 0.999), eps=1e-8, weight_decay=0)`; timm checks none of its arguments (ours are
    type-checked only). lr, betas, eps and weight_decay may be schedules.
    """
    v.check_pair(betas, "betas", "(beta1, beta2)")
    for value, name in ((lr, "lr"), (betas[0], "betas[0]"), (betas[1], "betas[1]"), (eps, "eps"),
                        (weight_decay, "weight_decay")):
        v.check_hyperparam(value, name)
    return chain(scale_by_radam_legacy(lr, betas[0], betas[1], eps, weight_decay))
