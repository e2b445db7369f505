"""timm.optim.Mars as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.combine import chain
from optax_like.transforms.mars import MARS_TYPES, scale_by_mars


def mars(
    lr: ScalarOrSchedule = 3e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.99),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    gamma: ScalarOrSchedule = 0.025,
    mars_type: str = "adamw",
    optimize_1d: bool = False,
    lr_1d_factor: ScalarOrSchedule = 1.0,
    betas_1d: tuple[float, float] | None = None,
    caution: bool = False,
) -> GradientTransformation:
    """MARS (Yuan et al., 2024, "MARS: Unleashing the Power of Variance Reduction for Training
    Large Models"), as timm.optim.Mars (timm 1.0.31) computes it:

        c_t = g_t + gamma * beta1 / (1 - beta1) * (g_t - g_{t-1})   (g_1 at t = 1), c_t / max(1, ||c_t||)
        m_t = beta1 m + (1 - beta1) c_t
        p  <- p - lr (weight_decay * p + AdamW's (mars_type "adamw") or Lion's (sign) direction of m_t)

    on params of >= 2 dimensions (all with `optimize_1d`); the others take AdamW on g_t with
    `betas_1d` (default: betas) and lr * lr_1d_factor. Chain: `scale_by_mars` alone (it emits
    the whole step: the decay is part of its update). timm counterpart: `timm.optim.Mars(params,
    lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0., gamma=0.025, mars_type="adamw",
    optimize_1d=False, lr_1d_factor=1.0, betas_1d=None, caution=False)`. timm does not check
    weight_decay, gamma or betas_1d. lr, betas, eps, weight_decay, gamma and lr_1d_factor may
    be schedules.
    """
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_betas(betas)
    if mars_type not in MARS_TYPES:
        raise AssertionError("MARS type not supported")
    for value, name in ((weight_decay, "weight_decay"), (gamma, "gamma"), (lr_1d_factor, "lr_1d_factor")):
        v.check_hyperparam(value, name)
    pair_1d = betas_1d or betas
    v.check_pair(pair_1d, "betas_1d", "(beta1, beta2)")
    return chain(
        scale_by_mars(lr, betas[0], betas[1], eps, weight_decay, gamma, lr_1d_factor, pair_1d[0], pair_1d[1],
                      mars_type=mars_type, optimize_1d=optimize_1d, caution=caution),
    )
