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

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "Numeric",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "Updates",
    "apply_updates",
    "identity",
    "stateless",
    "with_extra_args_support",
]
