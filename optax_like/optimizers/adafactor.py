"""torch.optim.Adafactor as a functional optimizer."""

from __future__ import annotations

from typing import Optional

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.adafactor import scale_by_adafactor
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import negate
from optax_like.transforms.weight_decay import add_decoupled_weight_decay


def adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: ScalarOrSchedule = -0.8,
    eps: tuple[Optional[ScalarOrSchedule], ScalarOrSchedule] = (None, 1e-3),
    d: ScalarOrSchedule = 1.0,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    foreach=None,
    maximize: bool = False,
) -> GradientTransformation:
    """Adafactor as torch.optim.Adafactor computes it (Shazeer & Stern, 2018, torch's variant).

    For each param p with gradient G (G <- -G if maximize), at its step t:

        w_t     = t^beta2_decay                      (torch's 1 - beta2_hat_t)
        rho_t   = min(lr, 1 / sqrt(t))
        alpha_t = max(eps2, RMS(p)) * rho_t           (RMS of p before weight decay)
        p      <- p * (1 - lr * weight_decay)         (decoupled; lr, not alpha_t)
        ndim(p) >= 2 (factored over the last two axes):
            row_var <- lerp(row_var, mean(G^2, -1), w_t);  col_var <- lerp(col_var, mean(G^2, -2), w_t)
            V = row_var @ col_var / max(mean(row_var, -2), eps1)
        else:
            variance <- lerp(variance, G^2, w_t);  V = variance
        U  = G / sqrt(max(V, eps1^2))
        p <- p - alpha_t / max(1, RMS(U) / d) * U

    eps = (eps1, eps2); eps1=None is the machine epsilon of the params' dtype (of the first
    param with a gradient: torch fixes it once per group). State keys are torch's: `row_var`
    (shape (..., m, 1)), `col_var` ((..., 1, n)), `variance`, `step`.

    Where torch's docs and code disagree, this follows the code: V divides by the *mean* of
    the row factor, `mean(R, -2)`, where the docs write the sum `1_n^T R`; the clamp is
    `max(V, eps1^2)` before the square root (the docs' `max(sqrt(V), eps1)`, equal in exact
    arithmetic); the docs list `weight_decay` with default 1e-2, the code's default is 0.0;
    and the docs' update formula omits that eps1 defaults per dtype.

    torch counterpart: `torch.optim.Adafactor(params, lr=1e-2, beta2_decay=-0.8,
    eps=(None, 1e-3), d=1.0, weight_decay=0.0, *, foreach=None, maximize=False)`; `foreach`
    is accepted and ignored. Complex params raise torch's RuntimeError("Adafactor does not
    support complex parameters") at `init` (torch: at the first step). lr, beta2_decay, eps2,
    d and weight_decay may be schedules `count -> value`.
    """
    del foreach
    v.check(lr, "lr", v.nonnegative, "Learning rate should be >= 0 but is: {}")
    v.check(beta2_decay, "beta2_decay", lambda x: 0.0 >= x, "beta2_decay should be <= 0 but is: {}")
    v.check_pair(eps, "eps", "(eps1, eps2)")
    if eps[0] is not None:
        v.check(eps[0], "eps[0]", v.nonnegative, "epsilon1 should be >= 0 but is: {}")
    v.check(eps[1], "eps[1]", v.nonnegative, "epsilon2 should be >= 0 but is: {}")
    v.check(d, "d", lambda x: 1.0 <= x, "Clipping threshold d should be >= 1 but is: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "weight_decay should be >= 0 but is: {}")

    return chain(
        *([negate()] if maximize else []),
        scale_by_adafactor(lr, beta2_decay, eps[0], eps[1], d),
        *([add_decoupled_weight_decay(lr, weight_decay)] if v.maybe_nonzero(weight_decay) else []),
    )
