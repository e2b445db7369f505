"""timm.optim.Adopt as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import decay_lr
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.adopt import scale_by_adopt
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import negate
from optax_like.transforms.weight_decay import add_decayed_weights


def adopt(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.9999),
    eps: ScalarOrSchedule = 1e-6,
    clip_exp: ScalarOrSchedule | None = 0.333,
    weight_decay: ScalarOrSchedule = 0.0,
    decoupled: bool = False,
    corrected_weight_decay: bool = False,
    *,
    caution: bool = False,
    foreach=None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    max_lr_snapshot: float | None = None,
) -> GradientTransformation:
    """ADOPT (Taniguchi et al., 2024, "Modified Adam Can Converge with Any beta2 with the
    Optimal Rate"), as timm.optim.Adopt (timm 1.0.31) computes it.

        g_t <- -g_t                                        if maximize
        g_t <- g_t + weight_decay * p                      if weight_decay != 0 and not decoupled
        t == 1:  v_1 = g_1^2 (no move)
        else:    p  <- p * (1 - s * weight_decay)          if decoupled (s = lr, or lr**2 / max_lr)
                 m_t = lerp(m, clamp(g_t / max(sqrt(v), eps), +-(t-1)**clip_exp), 1 - beta1)
                 p  <- p - lr * m_t                        (m_t masked if caution)
                 v_t = beta2 * v + (1 - beta2) * g_t^2

    The second moment lags the gradient by one step (the paper's point: the normalisation no
    longer depends on the current gradient). Chain: `[negate] -> [add_decayed_weights] ->
    scale_by_adopt` (which emits the whole step). timm counterpart:
    `timm.optim.Adopt(params, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, clip_exp=0.333,
    weight_decay=0.0, decoupled=False, corrected_weight_decay=False, *, caution=False,
    foreach=None, maximize=False, capturable=False, differentiable=False)`; `foreach`,
    `capturable` and `differentiable` select timm's kernels: accepted and ignored.
    `max_lr_snapshot` is timm's group entry for corrected decay (default: the lr given).
    """
    del foreach, capturable, differentiable
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_betas(betas)
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    if clip_exp is not None:
        v.check_hyperparam(clip_exp, "clip_exp")
    decays = v.maybe_nonzero(weight_decay)
    decoupled_decay = decays and decoupled
    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if decays and not decoupled else []),
        scale_by_adopt(
            lr, betas[0], betas[1], eps, clip_exp,
            decay_lr=decay_lr(lr, corrected_weight_decay, max_lr_snapshot) if decoupled_decay else 0.0,
            weight_decay=weight_decay if decoupled_decay else 0.0, caution=caution),
    )
