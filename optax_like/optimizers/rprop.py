"""torch.optim.Rprop as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.combine import chain
from optax_like.transforms.rprop import scale_by_rprop
from optax_like.transforms.scaling import negate


def _check_pair(value, name: str, what: str, indexed: bool) -> None:
    v.check_pair(value, name, what, indexed=indexed)
    v.check_hyperparam(value[0], f"{name}[0]")
    v.check_hyperparam(value[1], f"{name}[1]")


def rprop(
    lr: ScalarOrSchedule = 1e-2,
    etas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.5, 1.2),
    step_sizes: tuple[ScalarOrSchedule, ScalarOrSchedule] = (1e-6, 50),
    *,
    capturable: bool = False,
    foreach=None,
    maximize: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """Resilient backpropagation (Riedmiller & Braun, 1993), as torch.optim.Rprop computes it:

        g_t    <- -g_t                                        if maximize
        s       = sign(g_t * prev)
        size_t  = clamp(size_{t-1} * (etaplus if s > 0, etaminus if s < 0, 1 if s == 0),
                        step_size_min, step_size_max)         (size_0 = lr, per element)
        g_t    <- 0 where the sign changed (s < 0)            (and prev <- that zeroed g_t)
        p      <- p - sign(g_t) * size_t

    The step ignores the gradient's magnitude; after a sign change the element does not move
    and the next step treats its gradient as new (s == 0, factor 1). `lr` is only the initial
    step size (read at `init`), so it lives in `scale_by_rprop`, not a trailing
    `scale_by_learning_rate`; changing lr later has no effect, as in torch. Rprop has no weight
    decay. torch counterpart: `torch.optim.Rprop(params, lr=1e-2, etas=(0.5, 1.2),
    step_sizes=(1e-6, 50), *, capturable=False, foreach=None, maximize=False,
    differentiable=False)`; the kernel switches are accepted and ignored. torch checks
    `0 < etaminus < 1 < etaplus` and does not check step_sizes.
    """
    del capturable, foreach, differentiable
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    _check_pair(etas, "etas", "(etaminus, etaplus)", indexed=True)
    em, ep = v.concrete_value(etas[0]), v.concrete_value(etas[1])
    if em is not None and ep is not None and not 0.0 < em < 1.0 < ep:
        raise ValueError(f"Invalid eta values: {v.display(etas[0])}, {v.display(etas[1])}")
    _check_pair(step_sizes, "step_sizes", "(min_step_size, max_step_size)", indexed=False)

    return chain(
        *([negate()] if maximize else []),
        scale_by_rprop(lr, etas, step_sizes),
    )
