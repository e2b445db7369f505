"""timm.optim.AdaBelief as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.adabelief import scale_by_adabelief
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights, add_decoupled_weight_decay


def adabelief(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-16,
    weight_decay: ScalarOrSchedule = 0,
    amsgrad: bool = False,
    decoupled_decay: bool = True,
    fixed_decay: bool = False,
    rectify: bool = True,
    degenerated_to_sgd: bool = True,
    foreach=None,
) -> GradientTransformation:
    """AdaBelief (Zhuang et al., 2020, "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients"), as timm.optim.AdaBelief (timm 1.0.31) computes it:

        p   <- p * (1 - lr * weight_decay)   (1 - weight_decay if fixed_decay)    if decoupled_decay
        g   <- g + weight_decay * p                                  if not decoupled_decay (wd != 0)
        m_t  = lerp(m, g, 1 - beta1);  s_t = beta2 * s + (1 - beta2) (g - m_t)^2 + eps
        p   <- p - lr * scale_by_adabelief's direction (rectified as RAdam if rectify; amsgrad)

    Chain: `[add_decayed_weights] -> scale_by_adabelief -> scale_by_learning_rate ->
    [add_decoupled_weight_decay]` (the decay block emits `p * c + u`: timm decays the param
    before its step). timm counterpart: `timm.optim.AdaBelief(params, lr=1e-3, betas=(0.9,
    0.999), eps=1e-16, weight_decay=0, amsgrad=False, decoupled_decay=True, fixed_decay=False,
    rectify=True, degenerated_to_sgd=True, foreach=None)`; `foreach` selects timm's kernel:
    accepted and ignored. timm does not check weight_decay (a negative one grows the params).
    For bfloat16/float16 params timm keeps the state in float32; here it is kept in the
    params' dtype (the record's deviation). lr, betas, eps and weight_decay may be schedules.
    """
    del foreach
    check_compared(lr)
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")
    check_betas(betas)
    v.check_hyperparam(weight_decay, "weight_decay")
    decays = v.maybe_nonzero(weight_decay)
    return chain(
        *([add_decayed_weights(weight_decay)] if decays and not decoupled_decay else []),
        scale_by_adabelief(betas[0], betas[1], eps, amsgrad=amsgrad, rectify=rectify,
                           degenerated_to_sgd=degenerated_to_sgd),
        scale_by_learning_rate(lr),
        *([add_decoupled_weight_decay(1.0 if fixed_decay else lr, weight_decay)] if decays and decoupled_decay else []),
    )
