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
from optax_like.core.tree import LeafScalars, per_leaf_scalars

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
    "identity",
    "per_leaf_scalars",
    "stateless",
    "with_extra_args_support",
]
