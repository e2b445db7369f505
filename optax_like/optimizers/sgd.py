"""torch.optim.SGD as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.combine import chain
from optax_like.transforms.momentum import trace
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights


def sgd(
    lr: ScalarOrSchedule = 1e-3,
    momentum: ScalarOrSchedule = 0,
    dampening: ScalarOrSchedule = 0,
    weight_decay: ScalarOrSchedule = 0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    foreach=None,
    differentiable: bool = False,
    fused=None,
) -> GradientTransformation:
    """Stochastic gradient descent with torch.optim.SGD's momentum rule.

        g_t <- -g_t                                   if maximize
        g_t <- g_t + weight_decay * p                 if weight_decay != 0
        b_1  = g_1;  b_t = momentum * b_{t-1} + (1 - dampening) * g_t     if momentum != 0
        g_t <- g_t + momentum * b_t  if nesterov  else  b_t
        p   <- p - lr * g_t

    The momentum buffer starts at the first (weight-decayed) gradient, undamped: the quirk
    that `optax.sgd(momentum=...)` does not reproduce. torch counterpart:
    `torch.optim.SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
    *, maximize=False, foreach=None, differentiable=False, fused=None)`. `foreach`, `fused` and
    `differentiable` select torch kernels; they are accepted and ignored (one XLA computation
    serves all). Any of lr, momentum, dampening, weight_decay may be a schedule `count -> value`.
    """
    del foreach, differentiable, fused
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(momentum, "momentum", v.nonnegative, "Invalid momentum value: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    v.check_hyperparam(dampening, "dampening")
    if nesterov:
        mu, damp = v.concrete_value(momentum), v.concrete_value(dampening)
        if (mu is not None and mu <= 0) or (damp is not None and damp != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if v.maybe_nonzero(weight_decay) else []),
        *([trace(momentum, dampening, nesterov)] if v.maybe_nonzero(momentum) else []),
        scale_by_learning_rate(lr),
    )
