"""torch.optim.Adam as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.moments import scale_by_adam
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights, add_decoupled_weight_decay


def check_betas(betas) -> None:
    """torch's beta checks: a pair, each in [0, 1)."""
    v.check_pair(betas, "betas", "(beta1, beta2)")
    v.check(betas[0], "betas[0]", v.in_unit_interval, "Invalid beta parameter at index 0: {}")
    v.check(betas[1], "betas[1]", v.in_unit_interval, "Invalid beta parameter at index 1: {}")


def adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    amsgrad: bool = False,
    *,
    foreach=None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    fused=None,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    """Adam, as torch.optim.Adam computes it (Kingma & Ba, 2015; AMSGrad: Reddi et al., 2018).

        g_t <- -g_t                                        if maximize
        p   <- p * (1 - lr * weight_decay)                 if decoupled_weight_decay (AdamW)
        g_t <- g_t + weight_decay * p                      elif weight_decay != 0
        m_t  = lerp(m_{t-1}, g_t, 1 - beta1)
        v_t  = beta2 * v_{t-1} + (1 - beta2) * g_t^2
        v^_t = max(v^_{t-1}, v_t) if amsgrad else v_t      (max of the raw second moment)
        p   <- p - lr * (m_t / (1 - beta1^t)) / (sqrt(v^_t) / sqrt(1 - beta2^t) + eps)

    eps is added after the bias-corrected square root, as in torch (optax's `adam` agrees; its
    AMSGrad keeps the max of the bias-corrected v, which differs). torch counterpart:
    `torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    amsgrad=False, *, foreach=None, maximize=False, capturable=False, differentiable=False,
    fused=None, decoupled_weight_decay=False)`; `foreach`, `capturable` and `fused` select
    torch kernels and are accepted and ignored, except that an array `lr` or beta with
    `foreach=True` and `capturable=False` raises torch's ValueError, as torch's constructor does. `differentiable=True` reproduces torch's
    differentiable path, whose bias corrections come from its float32 `step` tensor (2e-10 to
    6e-7 relative from the default path in float64; `scale_by_adam(differentiable_lr=lr)`);
    `jax.grad` through `update` (w.r.t. params, lr and the other hyperparameters) works with
    either setting.
    lr, betas, eps and weight_decay may be schedules `count -> value`. Validation is torch's,
    including `betas must be either both floats or both Tensors` (here Tensors are jax/NumPy
    arrays; an int beta such as `betas=(0, 0.99)` is rejected as in torch; a schedule pairs with
    either kind).
    """
    foreach_tensor_rule = bool(foreach) and not capturable
    if foreach_tensor_rule and v.is_concrete_array(lr):
        # torch's foreach kernels take no Tensor lr; ours has one kernel path, but the same
        # arguments must fail the same way.
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    del foreach, capturable, fused
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_betas(betas)
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    v.check_float_or_tensor_pair(betas)  # torch.optim.Adam/AdamW only (not Adamax/NAdam/RAdam)
    for i, beta in enumerate(betas):
        if foreach_tensor_rule and v.is_concrete_array(beta):
            raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")

    decay = v.maybe_nonzero(weight_decay)
    return chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if decay and not decoupled_weight_decay else []),
        *([scale_by_adam(betas[0], betas[1], eps, amsgrad, differentiable_lr=lr)] if differentiable else
          [scale_by_adam(betas[0], betas[1], eps, amsgrad), scale_by_learning_rate(lr)]),
        *([add_decoupled_weight_decay(lr, weight_decay)] if decay and decoupled_weight_decay else []),
    )
