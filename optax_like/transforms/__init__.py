"""Building blocks (one family per module) and combinators."""

from optax_like.transforms.accumulation import MultiSteps, MultiStepsState
from optax_like.transforms.moments import ScaleByAdamState, scale_by_adam
from optax_like.transforms.clipping import clip, clip_by_global_norm
from optax_like.transforms.combine import (
    MaskedState,
    MultiTransformState,
    chain,
    masked,
    multi_transform,
    named_chain,
)
from optax_like.transforms.conditionality import ApplyIfFiniteState, apply_if_finite
from optax_like.transforms.inject import HyperparamsDict, InjectHyperparamsState, inject_hyperparams
from optax_like.transforms.momentum import TraceState, trace
from optax_like.transforms.scaling import (
    ScaleByScheduleState,
    negate,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from optax_like.transforms.weight_decay import (
    WeightDecayState,
    add_decayed_weights,
    add_decoupled_weight_decay,
)

__all__ = [
    "ApplyIfFiniteState",
    "HyperparamsDict",
    "InjectHyperparamsState",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "ScaleByAdamState",
    "ScaleByScheduleState",
    "TraceState",
    "WeightDecayState",
    "add_decayed_weights",
    "add_decoupled_weight_decay",
    "apply_if_finite",
    "chain",
    "clip",
    "clip_by_global_norm",
    "inject_hyperparams",
    "masked",
    "multi_transform",
    "named_chain",
    "negate",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "trace",
]
