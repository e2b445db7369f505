"""timm.optim.AdamP as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.adamp import scale_by_adamp
from optax_like.transforms.combine import chain


def adamp(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    delta: ScalarOrSchedule = 0.1,
    wd_ratio: ScalarOrSchedule = 0.1,
    nesterov: bool = False,
    caution: bool = False,
) -> GradientTransformation:
    """AdamP (Heo et al., 2021, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
    Scale-invariant Weights"), as timm.optim.AdamP (timm 1.0.31) computes it: Adam whose update
    of a weight that looks scale-invariant (a gradient almost orthogonal to it, per output
    channel or for the whole layer: max |cos| < delta / sqrt(fan)) loses its radial component,
    with the decay `p *= 1 - lr * weight_decay * wd_ratio` there (`1 - lr * weight_decay`
    elsewhere; weight_decay > 0 only). See `scale_by_adamp`.

    Chain: `scale_by_adamp` alone (it emits the whole step). timm counterpart:
    `timm.optim.AdamP(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, delta=0.1,
    wd_ratio=0.1, nesterov=False, caution=False)`; timm checks none of its arguments (ours are
    type-checked only). lr, betas, eps, weight_decay, delta and wd_ratio may be schedules.
    """
    v.check_pair(betas, "betas", "(beta1, beta2)")
    for value, name in ((lr, "lr"), (betas[0], "betas[0]"), (betas[1], "betas[1]"), (eps, "eps"),
                        (weight_decay, "weight_decay"), (delta, "delta"), (wd_ratio, "wd_ratio")):
        v.check_hyperparam(value, name)
    return chain(
        scale_by_adamp(lr, betas[0], betas[1], eps, weight_decay, delta, wd_ratio, nesterov=nesterov,
                       caution=caution),
    )
