"""torch.optim.ASGD as a functional optimizer, and `asgd_averaged_params`."""

from __future__ import annotations

from typing import Any

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.asgd import averaged_params, scale_by_asgd
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import negate
from optax_like.transforms.weight_decay import add_decayed_weights


def asgd(
    lr: ScalarOrSchedule = 1e-2,
    lambd: ScalarOrSchedule = 1e-4,
    alpha: ScalarOrSchedule = 0.75,
    t0: ScalarOrSchedule = 1e6,
    weight_decay: ScalarOrSchedule = 0,
    foreach=None,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> GradientTransformation:
    """Averaged SGD (Polyak & Juditsky, 1992), as torch.optim.ASGD computes it:

        g_t   <- -g_t                                        if maximize
        g_t   <- g_t + weight_decay * p                      if weight_decay != 0
        p     <- p * (1 - lambd * eta_{t-1}) - eta_{t-1} * g_t
        ax_t   = ax_{t-1} + mu_{t-1} * (p - ax_{t-1})   if mu_{t-1} != 1   else   p
        eta_t  = lr / (1 + lambd * lr * t) ** alpha         (eta_0 = lr; float32, as torch)
        mu_t   = 1 / max(1, t - t0)                         (mu_0 = 1;  float32, as torch)

    `ax` (state field, torch's state['ax']) is the running average of the params, which is
    the point of ASGD: read it with `asgd_averaged_params(state)`. With the default
    t0 = 1e6 the average is just the current params for the first million steps. The chain is
    `negate -> add_decayed_weights -> scale_by_asgd`; lr enters through `eta` (non-linearly),
    so there is no trailing `scale_by_learning_rate`, and `scale_by_asgd` needs the params
    (`update(grads, state, params)`). torch keeps eta and mu as float32 tensors (its default
    scalar dtype) even for float64 params; so do we, which float64 parity requires. None of
    ASGD's arguments is keyword-only in torch: `torch.optim.ASGD(params, lr=1e-2, lambd=1e-4,
    alpha=0.75, t0=1e6, weight_decay=0, foreach=None, maximize=False, differentiable=False,
    capturable=False)`. `foreach`, `differentiable` and `capturable` are accepted and ignored
    (capturable's in-tensor recurrence is the same math). torch validates only lr and
    weight_decay; lambd, alpha and t0 are only type-checked, as there.
    """
    del foreach, differentiable, capturable
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    v.check_hyperparam(lambd, "lambd")
    v.check_hyperparam(alpha, "alpha")
    v.check_hyperparam(t0, "t0")

    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if v.maybe_nonzero(weight_decay) else []),
        scale_by_asgd(lr, lambd, alpha, t0),
    )


def asgd_averaged_params(state: Any) -> Any:
    """The averaged params (torch's `state['ax']`) of an `asgd` optimizer state.

    Returns them with the params' structure (None where a leaf is not optimized). A leaf that
    has never received a gradient has `ax = 0` (torch creates no state for it). Works on any
    state that holds exactly one `ScaleByASGDState` (a chain, `inject_hyperparams`, masked).
    """
    return averaged_params(state)
