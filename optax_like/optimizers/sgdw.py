"""timm.optim.SGDW as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared, decay_lr, decoupled_chain
from optax_like.transforms.momentum import no_trace, trace


def sgdw(
    lr: ScalarOrSchedule = 1e-3,
    momentum: ScalarOrSchedule = 0.0,
    dampening: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    nesterov: bool = False,
    *,
    caution: bool = False,
    corrected_weight_decay: bool = False,
    maximize: bool = False,
    foreach=None,
    differentiable: bool = False,
    max_lr_snapshot: float | None = None,
) -> GradientTransformation:
    """SGD with decoupled weight decay (Loshchilov & Hutter, 2019), as timm.optim.SGDW
    (timm 1.0.31) computes it:

        g_t <- -g_t                                        if maximize
        p   <- p * (1 - s * weight_decay),  s = lr (lr**2 / max_lr if corrected_weight_decay)
        b_1  = g_1;  b_t = momentum * b_{t-1} + (1 - dampening) * g_t      if momentum != 0
        u_t  = g_t + momentum * b_t  if nesterov  else  b_t                (g_t without momentum)
        u_t <- u_t * mask / max(mean(mask), 1e-3),  mask = [u_t * g_t > 0]  if caution (and momentum)
        p   <- p - lr * u_t

    torch.optim.SGD's momentum rule (the buffer starts at the first gradient, undamped) with
    the decay taken out of the gradient. Chain: `[negate] -> trace(caution) | no_trace ->
    scale_by_learning_rate -> [add_decoupled_weight_decay]` (the decay block emits `p * c + u`,
    timm's `param.mul_(c)` then `param.add_(u)`). Without momentum timm keeps
    `{'momentum_buffer': None}` per stepped param (`no_trace`); with `caution` and momentum it
    compares complex numbers, which torch refuses (its NotImplementedError, at `init` here).
    `corrected_weight_decay` (Defazio et al., 2025) decays by `lr**2 / max_lr` with `max_lr`
    timm's `max_lr_snapshot`: the constructor's lr (a number) unless given. timm counterpart:
    `timm.optim.SGDW(params, lr=1e-3, momentum=0., dampening=0., weight_decay=0.,
    nesterov=False, *, caution=False, corrected_weight_decay=False, maximize=False,
    foreach=None, differentiable=False)`; `foreach` and `differentiable` select timm's kernels:
    accepted and ignored. lr, momentum, dampening and weight_decay may be schedules.
    """
    del foreach, differentiable
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(momentum, "momentum", v.nonnegative, "Invalid momentum value: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    v.check_hyperparam(dampening, "dampening")
    decay = decay_lr(lr, corrected_weight_decay, max_lr_snapshot)  # timm snapshots before its nesterov check
    if nesterov:
        mu, damp = v.concrete_value(momentum), v.concrete_value(dampening)
        if (mu is not None and mu <= 0) or (damp is not None and damp != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    return decoupled_chain(
        trace(momentum, dampening, nesterov, caution=caution) if v.maybe_nonzero(momentum) else no_trace(),
        lr, weight_decay, decay, maximize)
