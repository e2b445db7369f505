"""timm.optim.LaProp as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import decay_lr, validate_scalar
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.combine import chain
from optax_like.transforms.laprop import scale_by_laprop


def laprop(
    lr: ScalarOrSchedule = 4e-4,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-15,
    weight_decay: ScalarOrSchedule = 0.0,
    caution: bool = False,
    corrected_weight_decay: bool = False,
    foreach=None,
    *,
    max_lr_snapshot: float | None = None,
) -> GradientTransformation:
    """LaProp (Ziyin, Wang & Ueda, 2020, "LaProp: Separating Momentum and Adaptivity in Adam"),
    as timm.optim.LaProp (timm 1.0.31) computes it:

        a1_t = beta1 * a1_{t-1} + (1 - beta1) * lr_t        (lr-weighted bias correction, a1_0 = 0)
        a2_t = beta2 * a2_{t-1} + (1 - beta2)               (= 1 - beta2**t, float32)
        v_t  = beta2 * v_{t-1} + (1 - beta2) * g_t^2
        m_t  = beta1 * m_{t-1} + lr_t (1 - beta1) * g_t / (sqrt(v_t / a2_t) + eps)
        p   <- p - (lr_t / a1_t) * m_t                      (m_t masked if caution; 0 if a1_t == 0)
        p   <- p - s * weight_decay * p                     (after the step, on the moved param;
                                                             s = lr, or lr**2 / max_lr if
                                                             corrected_weight_decay)

    Chain: `scale_by_laprop` alone (it emits the whole step: timm decays the param after moving
    it). `corrected_weight_decay` (Defazio et al., 2025) decays by `lr**2 / max_lr` with
    `max_lr` timm's `max_lr_snapshot`: the constructor's lr (a number) unless given; a
    schedule or traced lr needs `max_lr_snapshot=` (an error names it). timm counterpart:
    `timm.optim.LaProp(params, lr=4e-4, betas=(0.9, 0.999), eps=1e-15, weight_decay=0.0,
    caution=False, corrected_weight_decay=False, foreach=None)`; `foreach` selects timm's
    kernel: accepted and ignored. timm keeps `exp_avg_lr_1` a Python float (float64 math) for a
    number lr: here it is a float64 scalar under x64 (float32 otherwise), which the adapter's
    `state_dict` exports as a Python float (layout kind `FLOAT`), as timm's.
    """
    del foreach
    validate_scalar(lr, "lr", "learning rate")
    validate_scalar(eps, "eps", "epsilon")
    check_betas(betas)
    v.check_hyperparam(weight_decay, "weight_decay")
    decay = decay_lr(lr, corrected_weight_decay, max_lr_snapshot)  # timm checks max_lr at construction
    decays = v.maybe_nonzero(weight_decay)
    return chain(
        scale_by_laprop(
            lr, betas[0], betas[1], eps, decay_lr=decay if decays else 0.0,
            weight_decay=weight_decay if decays else 0.0, caution=caution),
    )
