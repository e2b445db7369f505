"""timm.optim.Lion as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import decay_lr, decoupled_chain, validate_scalar
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.lion import scale_by_lion


def lion(
    lr: ScalarOrSchedule = 1e-4,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.99),
    weight_decay: ScalarOrSchedule = 0.0,
    caution: bool = False,
    corrected_weight_decay: bool = False,
    maximize: bool = False,
    foreach=None,
    *,
    max_lr_snapshot: float | None = None,
) -> GradientTransformation:
    """Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), as
    timm.optim.Lion (timm 1.0.31) computes it.

        g_t <- -g_t                                        if maximize
        p   <- p * (1 - s * weight_decay),  s = lr (lr**2 / max_lr if corrected_weight_decay)
        u    = sign(lerp(m_{t-1}, g_t, 1 - beta1))         (masked if caution)
        p   <- p - lr * u
        m_t  = lerp(m_{t-1}, g_t, 1 - beta2)

    Chain: `[negate] -> scale_by_lion -> scale_by_learning_rate -> [add_decoupled_weight_decay]`.
    `corrected_weight_decay` (Defazio et al., 2025) decays by `lr**2 / max_lr` with `max_lr`
    timm's `max_lr_snapshot`: the constructor's lr (a number) unless given; a schedule or
    traced lr needs `max_lr_snapshot=` (an error names it). timm counterpart:
    `timm.optim.Lion(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, caution=False,
    corrected_weight_decay=False, maximize=False, foreach=None)`; `foreach` selects timm's
    kernel: accepted and ignored. lr, betas and weight_decay may be schedules.
    """
    del foreach
    validate_scalar(lr, "lr", "learning rate")
    check_betas(betas)
    v.check_hyperparam(weight_decay, "weight_decay")
    decay = decay_lr(lr, corrected_weight_decay, max_lr_snapshot)
    return decoupled_chain(
        scale_by_lion(betas[0], betas[1], caution=caution),
        lr, weight_decay, decay, maximize)

