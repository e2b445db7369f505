"""timm.optim.RMSpropTF as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared, decay_lr, validate_scalar
from optax_like.transforms.combine import chain
from optax_like.transforms.rmsprop_tf import scale_by_rmsprop_tf
from optax_like.transforms.weight_decay import add_decayed_weights, add_decoupled_weight_decay


def rmsprop_tf(
    lr: ScalarOrSchedule = 1e-2,
    alpha: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-10,
    weight_decay: ScalarOrSchedule = 0,
    momentum: ScalarOrSchedule = 0.0,
    centered: bool = False,
    decoupled_decay: bool = False,
    corrected_weight_decay: bool = False,
    lr_in_momentum: bool = True,
    caution: bool = False,
    foreach=None,
    *,
    max_lr_snapshot: float | None = None,
) -> GradientTransformation:
    """RMSprop as TensorFlow computes it, timm.optim.RMSpropTF (timm 1.0.31):

        p   <- p * (1 - s * weight_decay)     if decoupled_decay (s = lr, or lr**2 / max_lr if corrected)
        g   <- g + weight_decay * p           if weight_decay != 0 and not decoupled_decay
        sq  <- sq + (1 - alpha) (g^2 - sq)    (sq_0 = 1, not torch's 0)
        avg  = sqrt(sq [- ga^2] + eps)        (eps inside the root; ga: centered)
        b   <- momentum * b + lr * g / avg;  p <- p - b        (lr_in_momentum; b * lr after if not)
        p   <- p - lr * g / avg                                (momentum == 0)

    Chain: `[add_decayed_weights] -> scale_by_rmsprop_tf (the whole step) ->
    [add_decoupled_weight_decay]` (the decay block emits `p * c + u`: timm decays the param
    first). timm counterpart: `timm.optim.RMSpropTF(params, lr=1e-2, alpha=0.9, eps=1e-10,
    weight_decay=0, momentum=0., centered=False, decoupled_decay=False,
    corrected_weight_decay=False, lr_in_momentum=True, caution=False, foreach=None)`;
    `foreach` selects timm's kernel: accepted and ignored. `max_lr_snapshot` is timm's group
    entry for corrected decay (default: the lr given). lr, alpha, eps, weight_decay and
    momentum may be schedules.
    """
    del foreach
    validate_scalar(lr, "lr", "learning rate")
    validate_scalar(eps, "eps", "epsilon")
    validate_scalar(momentum, "momentum", "momentum")
    validate_scalar(weight_decay, "weight_decay", "weight_decay")
    check_compared(alpha)
    v.check(alpha, "alpha", v.nonnegative, "Invalid alpha value: {}")
    decay = decay_lr(lr, corrected_weight_decay, max_lr_snapshot)
    decays = v.maybe_nonzero(weight_decay)
    return chain(
        *([add_decayed_weights(weight_decay)] if decays and not decoupled_decay else []),
        scale_by_rmsprop_tf(lr, alpha, eps, momentum, centered=centered, lr_in_momentum=lr_in_momentum,
                            caution=caution),
        *([add_decoupled_weight_decay(decay, weight_decay)] if decays and decoupled_decay else []),
    )
