"""timm.optim.Lamb as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import decay_lr, validate_scalar
from optax_like.transforms.combine import chain
from optax_like.transforms.lamb import scale_by_lamb


def lamb(
    lr: ScalarOrSchedule = 1e-3,
    bias_correction: bool = True,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-6,
    weight_decay: ScalarOrSchedule = 0.01,
    grad_averaging: bool = True,
    max_grad_norm: ScalarOrSchedule | None = 1.0,
    trust_clip: bool = False,
    always_adapt: bool = False,
    caution: bool = False,
    decoupled_decay: bool = False,
    corrected_weight_decay: bool = False,
    foreach=None,
    *,
    max_lr_snapshot: float | None = None,
) -> GradientTransformation:
    """LAMB (You et al., 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes"), NVIDIA's FusedLAMB variant, as timm.optim.Lamb (timm 1.0.31) computes it, with
    `t` the group's step:

        g   <- g / max(||(||g_1||, ||g_2||, ...)|| / max_grad_norm, 1)     (every gradient of the tree)
        m_t  = lerp(m, g, 1 - beta1)  (grad_averaging; else beta1 m + g);  v_t = beta2 v + (1 - beta2) g^2
        u    = (m_t / (1 - beta1^t)) / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)   (no corrections without bias_correction)
        u   <- u masked against g                                           if caution
        p   <- p * (1 - s * weight_decay) (s = lr, or lr**2 / max_lr if corrected_weight_decay)
                                                                             if decoupled_decay
        u   <- u + weight_decay * p                                          otherwise
        u   <- u * ||p|| / ||u||  (1 if a norm is 0; at most 1 if trust_clip)  if weight_decay != 0 or always_adapt
        p   <- p - lr * u

    Chain: `scale_by_lamb` alone (it emits the whole step: the trust ratio reads the decayed
    param). The clip (`lamb_global_clip`) takes one norm over every gradient of the tree this
    optimizer updates. timm takes it over every param group of the optimizer, reading
    `max_grad_norm` from the constructor's defaults: `optax_like.optim.Lamb` does so (one clip
    over all groups, before their updates); in a functional multi-group optimizer
    (`multi_transform`, `param_groups`) each group clips its own tree, so for timm's numbers
    clip first and build the groups with `max_grad_norm=None`. timm counterpart:
    `timm.optim.Lamb(params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6,
    weight_decay=0.01, grad_averaging=True, max_grad_norm=1.0, trust_clip=False,
    always_adapt=False, caution=False, decoupled_decay=False, corrected_weight_decay=False,
    foreach=None)`; `foreach` selects timm's kernel: accepted and ignored. `max_lr_snapshot` is
    timm's group entry for corrected decay (default: the lr given). lr, betas, eps,
    weight_decay and max_grad_norm may be schedules.
    """
    del foreach
    validate_scalar(lr, "lr", "learning rate")
    validate_scalar(eps, "eps", "epsilon")
    validate_scalar(weight_decay, "weight_decay", "weight_decay")
    v.check_pair(betas, "betas", "(beta1, beta2)", indexed=False)  # timm unpacks them at the first step
    v.check_hyperparam(betas[0], "betas[0]")
    v.check_hyperparam(betas[1], "betas[1]")
    if max_grad_norm is not None:
        v.check_hyperparam(max_grad_norm, "max_grad_norm")
    decay = 0.0
    if decoupled_decay or max_lr_snapshot is not None or not (callable(lr) or v.concrete_value(lr) is None):
        decay = decay_lr(lr, corrected_weight_decay, max_lr_snapshot)  # timm checks max_lr at construction
    return chain(
        scale_by_lamb(lr, betas[0], betas[1], eps, weight_decay, max_grad_norm, bias_correction=bias_correction,
                      grad_averaging=grad_averaging, trust_clip=trust_clip, always_adapt=always_adapt,
                      caution=caution, decoupled_decay=decoupled_decay,
                      decay_lr=decay if decoupled_decay else 0.0),
    )
