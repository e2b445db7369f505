"""timm.optim.NvNovoGrad as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared, decay_lr, decoupled_chain
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.nvnovograd import scale_by_nvnovograd


def nvnovograd(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.95, 0.98),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    grad_averaging: bool = False,
    amsgrad: bool = False,
    decoupled_decay: bool = False,
    corrected_weight_decay: bool = False,
    *,
    max_lr_snapshot: float | None = None,
) -> GradientTransformation:
    """NovoGrad (Ginsburg et al., 2019, "Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks"), NVIDIA's Jasper version, as timm.optim.NvNovoGrad
    (timm 1.0.31) computes it:

        v_t  = ||g||^2  at a param's first step (while v = 0),  else  beta2 v + (1 - beta2) ||g||^2
        v^   = max(v^, v_t)                                              (amsgrad)
        u    = g / (sqrt(v^ or v_t) + eps)
        u   <- u + weight_decay * p                              (weight_decay != 0, not decoupled_decay)
        p   <- p * (1 - s * weight_decay),  s = lr (lr**2 / max_lr if corrected_weight_decay)
                                                                 (weight_decay != 0, decoupled_decay)
        u   <- (1 - beta1) u                                                 (grad_averaging)
        m_t  = beta1 m + u;    p <- p - lr * m_t

    `v` is one float32 scalar per param (layer), as timm's. Chain: `scale_by_nvnovograd ->
    scale_by_learning_rate -> [add_decoupled_weight_decay]` (the decay block emits `p * c + u`:
    timm decays the param before its step). `corrected_weight_decay` (Defazio et al., 2025)
    applies with `decoupled_decay` only, with `max_lr` timm's `max_lr_snapshot`: the
    constructor's lr (a number) unless given. timm counterpart: `timm.optim.NvNovoGrad(params,
    lr=1e-3, betas=(0.95, 0.98), eps=1e-8, weight_decay=0, grad_averaging=False,
    amsgrad=False, decoupled_decay=False, corrected_weight_decay=False)`; timm does not check
    weight_decay. Complex params are refused at `init` (a deviation: timm takes the real part of
    sum(g**2) at a first step and raises at the second). lr, betas, eps and weight_decay may be
    schedules.
    """
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_betas(betas)
    v.check_hyperparam(weight_decay, "weight_decay")
    decay = decay_lr(lr, corrected_weight_decay, max_lr_snapshot)  # timm snapshots in its constructor
    return decoupled_chain(
        scale_by_nvnovograd(betas[0], betas[1], eps, 0.0 if decoupled_decay else weight_decay,
                            grad_averaging=grad_averaging, amsgrad=amsgrad),
        lr, weight_decay if decoupled_decay else 0.0, decay, False)
