"""What timm's optimizers share beyond their math: the decoupled-decay chain, corrected weight
decay's learning rate, and the error of timm's bare Tensor comparisons."""

from __future__ import annotations

from typing import Any

import numpy as np

from optax_like.core import numerics
from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decoupled_weight_decay


def decoupled_chain(step: GradientTransformation, lr: Any, weight_decay: Any, decay: Any,
                    maximize: bool) -> GradientTransformation:
    """timm's shape of a decoupled-decay optimizer: `[negate] -> step -> scale_by_learning_rate(lr)
    -> [add_decoupled_weight_decay(decay, weight_decay)]` (the decay block emits `p * c + u`: timm
    decays the param first; `decay` is `decay_lr(...)`'s lr; left out where weight_decay is 0)."""
    return chain(
        *([negate()] if maximize else []),
        step,
        scale_by_learning_rate(lr),
        *([add_decoupled_weight_decay(decay, weight_decay)] if v.maybe_nonzero(weight_decay) else []),
    )


def decay_lr(lr: Any, corrected_weight_decay: bool, max_lr_snapshot: Any, *, unscaled: bool = False) -> Any:
    """The learning rate that scales timm's decoupled weight decay: `lr`, or with
    `corrected_weight_decay` (Defazio et al., 2025) `lr ** 2 / max_lr` where `max_lr` is timm's
    `max_lr_snapshot` (the constructor's lr, a float; required for a schedule or traced lr).
    `unscaled` (AdafactorBigVision's `unscaled_wd`, big_vision's decay without the lr): 1.0,
    or `lr / max_lr` corrected. Host numbers use timm's float64 math; schedules give a schedule."""
    if not corrected_weight_decay:
        return 1.0 if unscaled else lr
    if max_lr_snapshot is None:
        max_lr_snapshot = v.concrete_value(lr)
        if max_lr_snapshot is None or callable(lr):
            raise ValueError(
                "corrected_weight_decay=True with a schedule or traced lr needs max_lr_snapshot= "
                "(timm's snapshot of the constructor's peak lr)")
    max_lr = float(numerics.plain(max_lr_snapshot))
    if max_lr <= 0:  # timm's _max_lr_snapshot
        raise ValueError(
            f"Corrected weight decay requires a positive max lr, got {max_lr}. Construct the "
            "optimizer with the peak lr.")
    power = 1 if unscaled else 2
    if callable(lr):
        return lambda count: numerics.plain(lr(count)) ** power / max_lr
    value = v.concrete_value(lr)
    if value is not None:
        return value ** power / max_lr
    return numerics.plain(lr) ** power / max_lr


def check_compared(value: Any) -> None:
    """timm compares a Tensor hyperparameter with a number as it is (`if lr < 0.0:`), before
    any size check: more than one element raises torch's RuntimeError. Call before `v.check`."""
    if v.is_concrete_array(value) and np.size(value) > 1:
        raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")


def validate_scalar(value: Any, arg: str, name: str) -> None:
    """timm's `_validate_scalar(name, value)`: a Tensor of one element, not below 0; its
    messages name `name` ("learning rate", "epsilon", ...)."""
    if v.is_concrete_array(value) and np.size(value) != 1:
        raise ValueError(f"{name} must be a scalar or scalar tensor.")
    v.check(value, arg, v.nonnegative, f"Invalid {name}: {{}}")
