"""timm.optim.SGDP as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.combine import chain
from optax_like.transforms.sgdp import scale_by_sgdp


def sgdp(
    lr: ScalarOrSchedule = 1e-3,
    momentum: ScalarOrSchedule = 0,
    dampening: ScalarOrSchedule = 0,
    weight_decay: ScalarOrSchedule = 0,
    nesterov: bool = False,
    eps: ScalarOrSchedule = 1e-8,
    delta: ScalarOrSchedule = 0.1,
    wd_ratio: ScalarOrSchedule = 0.1,
    caution: bool = False,
) -> GradientTransformation:
    """SGDP (Heo et al., 2021, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
    Scale-invariant Weights"), as timm.optim.SGDP (timm 1.0.31) computes it:

        b   <- momentum * b + (1 - dampening) * g          (b starts at zeros, damped from step 1)
        d    = g + momentum * b  if nesterov  else  b
        d   <- d without its component along p's rows, where g looks orthogonal to p (AdamP's
               projection: per output channel, then per layer: max |cos| < delta / sqrt(fan));
               r = wd_ratio there, else 1;  caution masks d (spherically where projected)
        p   <- p * (1 - lr * weight_decay * r / (1 - momentum))        (weight_decay != 0)
        p   <- p - lr * d

    The projection is `transforms.adamp.projection`, shared with `adamp`. Chain:
    `scale_by_sgdp` alone (it emits the whole step). timm counterpart:
    `timm.optim.SGDP(params, lr=required, momentum=0, dampening=0, weight_decay=0,
    nesterov=False, eps=1e-8, delta=0.1, wd_ratio=0.1, caution=False)`; timm checks none of its
    arguments (ours are type-checked only) and requires lr (torch's `required`: constructing
    without it raises); here lr defaults to 1e-3, torch.optim.SGD's default since it dropped
    `required`. lr, momentum, dampening, weight_decay, eps, delta and wd_ratio may be schedules.
    """
    for value, name in ((lr, "lr"), (momentum, "momentum"), (dampening, "dampening"),
                        (weight_decay, "weight_decay"), (eps, "eps"), (delta, "delta"), (wd_ratio, "wd_ratio")):
        v.check_hyperparam(value, name)
    return chain(
        scale_by_sgdp(lr, momentum, dampening, weight_decay, eps, delta, wd_ratio, nesterov=nesterov,
                      caution=caution),
    )
