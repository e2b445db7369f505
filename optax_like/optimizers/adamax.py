"""torch.optim.Adamax as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.adamax import scale_by_adamax
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights


def adamax(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    foreach=None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> GradientTransformation:
    """Adamax (Kingma & Ba, 2015, Sec. 7.1), as torch.optim.Adamax computes it.

        g_t <- -g_t                                        if maximize
        g_t <- g_t + weight_decay * p                      if weight_decay != 0 (coupled L2)
        m_t  = lerp(m_{t-1}, g_t, 1 - beta1)
        u_t  = max(beta2 * u_{t-1}, |g_t| + eps)           (state `exp_inf`)
        p   <- p - (lr / (1 - beta1^t)) * m_t / u_t

    eps is added to |g| inside the max (torch's code; the paper has no eps). torch applies the
    bias correction to the learning rate (`clr = lr / (1 - beta1^t)`); the chain applies it in
    `scale_by_adamax` and `-lr` in `scale_by_learning_rate` (the same quantity). Chain:
    `[negate] -> [add_decayed_weights] -> scale_by_adamax -> scale_by_learning_rate`.
    torch counterpart: `torch.optim.Adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, foreach=None, *, maximize=False, differentiable=False, capturable=False)`
    (`foreach` is positional there too). `foreach`, `differentiable` and `capturable` select
    torch kernels: accepted and ignored. lr, betas, eps and weight_decay may be schedules.
    """
    del foreach, differentiable, capturable
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_betas(betas)
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")

    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if v.maybe_nonzero(weight_decay) else []),
        scale_by_adamax(betas[0], betas[1], eps),
        scale_by_learning_rate(lr),
    )
