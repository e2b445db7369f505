"""timm.optim.Lars as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared
from optax_like.transforms.combine import chain
from optax_like.transforms.momentum import trace
from optax_like.transforms.scaling import scale_by_learning_rate
from optax_like.transforms.trust_ratio import scale_by_lars


def lars(
    lr: ScalarOrSchedule = 1.0,
    momentum: ScalarOrSchedule = 0,
    dampening: ScalarOrSchedule = 0,
    weight_decay: ScalarOrSchedule = 0,
    nesterov: bool = False,
    trust_coeff: ScalarOrSchedule = 0.001,
    eps: ScalarOrSchedule = 1e-8,
    trust_clip: bool = False,
    always_adapt: bool = False,
    foreach=None,
) -> GradientTransformation:
    """LARS (You, Gitman & Ginsburg, 2017, "Large Batch Training of Convolutional Networks"),
    with LARC's clipping, as timm.optim.Lars (timm 1.0.31) computes it:

        r   = trust_coeff * ||p|| / (||g|| + weight_decay * ||p|| + eps)    (1 if a norm is 0)
        r  <- min(r / lr, 1)                                                if trust_clip
        g  <- (g + weight_decay * p) * r              if weight_decay != 0 or always_adapt
        b_1 = g_1;  b_t = momentum * b_{t-1} + (1 - dampening) * g_t      if momentum != 0
        g  <- g + momentum * b_t  if nesterov  else  b_t
        p  <- p - lr * g

    Chain: `[scale_by_lars] -> [trace] -> scale_by_learning_rate`: the trust ratio per param
    (layer), then torch.optim.SGD's momentum (the buffer starts at the first adapted gradient).
    timm counterpart: `timm.optim.Lars(params, lr=1.0, momentum=0, dampening=0,
    weight_decay=0, nesterov=False, trust_coeff=0.001, eps=1e-8, trust_clip=False,
    always_adapt=False, foreach=None)`; `foreach` selects timm's kernel: accepted and ignored.
    lr, momentum, dampening, weight_decay, trust_coeff and eps may be schedules.
    """
    del foreach
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(momentum, "momentum", v.nonnegative, "Invalid momentum value: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    for value, name in ((dampening, "dampening"), (trust_coeff, "trust_coeff"), (eps, "eps")):
        v.check_hyperparam(value, name)
    if nesterov:
        mu, damp = v.concrete_value(momentum), v.concrete_value(dampening)
        if (mu is not None and mu <= 0) or (damp is not None and damp != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    adapts = always_adapt or v.maybe_nonzero(weight_decay)
    return chain(
        *([scale_by_lars(lr, weight_decay, trust_coeff, eps, trust_clip=trust_clip, always_adapt=always_adapt)]
          if adapts else []),
        *([trace(momentum, dampening, nesterov)] if v.maybe_nonzero(momentum) else []),
        scale_by_learning_rate(lr),
    )
