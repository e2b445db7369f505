"""torch.optim.AdamW as a functional optimizer: Adam with decoupled weight decay."""

from __future__ import annotations

from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers.adam import adam


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    foreach=None,
    capturable: bool = False,
    differentiable: bool = False,
    fused=None,
) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter, 2019), as torch.optim.AdamW computes it.

        g_t <- -g_t                                        if maximize
        p   <- p * (1 - lr * weight_decay)                 (decoupled: before the moments,
                                                            never enters m or v)
        m_t  = lerp(m_{t-1}, g_t, 1 - beta1)
        v_t  = beta2 * v_{t-1} + (1 - beta2) * g_t^2
        v^_t = max(v^_{t-1}, v_t) if amsgrad else v_t      (max of the raw second moment)
        p   <- p - lr * (m_t / (1 - beta1^t)) / (sqrt(v^_t) / sqrt(1 - beta2^t) + eps)

    In torch 2.13 `AdamW` is `Adam(..., decoupled_weight_decay=True)` with a default
    `weight_decay=1e-2` (Adam's is 0), and so is this: it returns `optax_like.adam` with
    `decoupled_weight_decay=True`, the chain `[negate] -> scale_by_adam -> scale_by_learning_rate
    -> add_decoupled_weight_decay(lr, weight_decay)`. The decay term `-lr*wd*p` uses the params
    before this step, as torch's `param.mul_(1 - lr*wd)` does before `addcdiv_`; `lr*wd` is formed
    in float64 for host scalars. torch counterpart: `torch.optim.AdamW(params, lr=1e-3,
    betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *, maximize=False,
    foreach=None, capturable=False, differentiable=False, fused=None)`. `foreach`, `capturable`
    and `fused` select torch kernels: accepted and ignored (one XLA computation serves all);
    `differentiable=True` follows torch's differentiable path (see `adam`). lr, betas, eps and weight_decay may be schedules `count -> value`. Validation
    and its messages are Adam's (torch's AdamW inherits them).
    """
    return adam(
        lr,
        betas,
        eps,
        weight_decay,
        amsgrad,
        foreach=foreach,
        maximize=maximize,
        capturable=capturable,
        differentiable=differentiable,
        fused=fused,
        decoupled_weight_decay=True,
    )
