"""Core types and helpers: what every transformation is made of."""

from optax_like.core.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    Numeric,
    OptState,
    Params,
    ScalarOrSchedule,
    Schedule,
    Updates,
    apply_updates,
    identity,
    stateless,
    with_extra_args_support,
)
from optax_like.core.gradients import conjugate_complex, grad, value_and_grad
from optax_like.core.leaf_scalars import LeafScalars, per_leaf_scalars

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "LeafScalars",
    "Numeric",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "Updates",
    "apply_updates",
    "conjugate_complex",
    "grad",
    "identity",
    "per_leaf_scalars",
    "stateless",
    "value_and_grad",
    "with_extra_args_support",
]
