"""timm.optim.AdamWLegacy as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared, decay_lr, decoupled_chain
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.timm_adamw import scale_by_timm_adamw


def adamw_legacy(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-2,
    amsgrad: bool = False,
    caution: bool = False,
    corrected_weight_decay: bool = False,
    maximize: bool = False,
    foreach=None,
    capturable: bool = False,
    clipping_threshold: float | None = None,
    *,
    max_lr_snapshot: float | None = None,
) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter, 2019) as timm.optim.AdamWLegacy (timm 1.0.31) computes it:

        g   <- -g                                               if maximize
        p   <- p * (1 - s * weight_decay),  s = lr (lr**2 / max_lr if corrected_weight_decay)
        m_t  = lerp(m, g, 1 - beta1);  v_t = beta2 * v + (1 - beta2) * g^2  (v^ = max(v^, v_t): amsgrad)
        p   <- p - lr * (m_t / (1 - beta1^t)) / (sqrt(v^) / sqrt(1 - beta2^t) + eps)

    with `clipping_threshold` (StableAdamW's update clipping) and `caution` as in
    `scale_by_timm_adamw`. Chain: `[negate] -> scale_by_timm_adamw -> scale_by_learning_rate ->
    [add_decoupled_weight_decay]` (the decay block emits `p * c + u`: timm decays the param
    first). timm counterpart: `timm.optim.AdamWLegacy(params, lr=1e-3, betas=(0.9, 0.999),
    eps=1e-8, weight_decay=1e-2, amsgrad=False, caution=False, corrected_weight_decay=False,
    maximize=False, foreach=None, capturable=False, clipping_threshold=None)`; `foreach` and
    `capturable` select timm's kernels: accepted and ignored. timm does not check weight_decay.
    `max_lr_snapshot` is timm's group entry for corrected decay (default: the lr given). lr,
    betas, eps and weight_decay may be schedules.
    """
    del foreach, capturable
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_betas(betas)
    v.check_hyperparam(weight_decay, "weight_decay")
    decay = decay_lr(lr, corrected_weight_decay, max_lr_snapshot)
    return decoupled_chain(
        scale_by_timm_adamw(betas[0], betas[1], eps, amsgrad=amsgrad, caution=caution,
                            clipping_threshold=clipping_threshold),
        lr, weight_decay, decay, maximize)
