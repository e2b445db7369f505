"""timm.optim.Adan as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared
from optax_like.transforms.adan import scale_by_adan
from optax_like.transforms.combine import chain


def check_beta_triple(betas) -> None:
    """timm's Adan checks: `betas[0]`, `betas[1]`, `betas[2]` each in [0, 1) (a shorter sequence:
    IndexError, as timm's indexing; a longer one: TypeError, where timm fails unpacking it at the
    first step)."""
    message = f"betas must be a triple (beta1, beta2, beta3), got {betas!r}."
    if isinstance(betas, (tuple, list)) and len(betas) < 3:
        for i in range(len(betas)):
            check_compared(betas[i])
            v.check(betas[i], f"betas[{i}]", v.in_unit_interval, f"Invalid beta parameter at index {i}: {{}}")
        raise IndexError(message)
    if not isinstance(betas, (tuple, list)) or len(betas) != 3:
        raise TypeError(message)
    for i in range(3):
        check_compared(betas[i])
        v.check(betas[i], f"betas[{i}]", v.in_unit_interval, f"Invalid beta parameter at index {i}: {{}}")


def adan(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule, ScalarOrSchedule] = (0.98, 0.92, 0.99),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    no_prox: bool = False,
    caution: bool = False,
    foreach=None,
) -> GradientTransformation:
    """Adan (Xie et al., 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
    Deep Models"), as timm.optim.Adan (timm 1.0.31) computes it, with `t` the group's step and
    `d_t = g_t - g_{t-1}` (0 at a param's first gradient and at the group's first step):

        m_t = lerp(m, g_t, 1 - beta1);   a_t = beta2 a + (1 - beta2) d_t
        n_t = beta3 n + (1 - beta3) (g_t + beta2 d_t)^2
        D   = sqrt(n_t) / sqrt(1 - beta3^t) + eps
        p  <- p (1 - lr wd) - lr/(1 - beta1^t) m_t/D - lr beta2/(1 - beta2^t) a_t/D      (no_prox)
        p  <- (p - lr/(1 - beta1^t) m_t/D - lr beta2/(1 - beta2^t) a_t/D) / (1 + lr wd) (else: proximal)

    with `caution` masking m_t against g_t in the step (the stored m_t unmasked). Chain:
    `scale_by_adan` alone (it emits the whole step). timm counterpart: `timm.optim.Adan(params,
    lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False, caution=False,
    foreach=None)`; `foreach` selects timm's kernel: accepted and ignored. timm's
    `restart_opt()` (zero moments, step 0) is `tx.init(params)` here. lr, betas, eps and
    weight_decay may be schedules.
    """
    del foreach
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    check_compared(eps)
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_beta_triple(betas)
    v.check_hyperparam(weight_decay, "weight_decay")
    return chain(scale_by_adan(lr, betas[0], betas[1], betas[2], eps, weight_decay, no_prox=no_prox, caution=caution))
