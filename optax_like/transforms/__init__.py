"""Building blocks (one family per module) and combinators."""

from optax_like.transforms.accumulation import MultiSteps, MultiStepsState
from optax_like.transforms.averaging import (
    AveragedParamsState,
    ParamAverager,
    averaged_params,
    ema_params,
    swa_params,
)
from optax_like.transforms.adadelta import ScaleByAdadeltaState, scale_by_adadelta
from optax_like.transforms.adagrad import ScaleByAdagradState, scale_by_adagrad
from optax_like.transforms.asgd import ScaleByASGDState, scale_by_asgd
from optax_like.transforms.rmsprop import ScaleByRMSpropState, scale_by_rmsprop
from optax_like.transforms.rprop import ScaleByRpropState, scale_by_rprop
from optax_like.transforms.moments import ScaleByAdamState, scale_by_adam
from optax_like.transforms.adamax import ScaleByAdamaxState, scale_by_adamax
from optax_like.transforms.lion import ScaleByLionState, scale_by_lion
from optax_like.transforms.trust_ratio import ScaleByLarsState, scale_by_lars
from optax_like.transforms.adabelief import ScaleByAdabeliefState, scale_by_adabelief
from optax_like.transforms.timm_adamw import ScaleByTimmAdamwState, scale_by_timm_adamw
from optax_like.transforms.madgrad import ScaleByMadgradState, scale_by_madgrad
from optax_like.transforms.rmsprop_tf import ScaleByRMSpropTFState, scale_by_rmsprop_tf
from optax_like.transforms.nadam_legacy import ScaleByNadamLegacyState, scale_by_nadam_legacy
from optax_like.transforms.mars import ScaleByMarsState, scale_by_mars
from optax_like.transforms.adamp import ScaleByAdampState, scale_by_adamp
from optax_like.transforms.adahessian import (ScaleByAdahessianState, adahessian_probes, hutchinson,
                                               hutchinson_estimate, rademacher_probes, scale_by_adahessian)
from optax_like.transforms.sgdp import ScaleBySgdpState, scale_by_sgdp
from optax_like.transforms.radam_legacy import ScaleByRadamLegacyState, scale_by_radam_legacy
from optax_like.transforms.nvnovograd import ScaleByNvNovoGradState, scale_by_nvnovograd
from optax_like.transforms.lamb import LambGroup, LambState, ScaleByLambState, lamb_global_clip, scale_by_lamb
from optax_like.transforms.adan import AdanGroup, AdanState, ScaleByAdanState, scale_by_adan
from optax_like.transforms.quantized_adam import QuantizedMoment, ScaleByQuantizedAdamState, scale_by_quantized_adam
from optax_like.transforms.adopt import ScaleByAdoptState, scale_by_adopt
from optax_like.transforms.laprop import ScaleByLapropState, scale_by_laprop
from optax_like.transforms.nadam import ScaleByNadamState, scale_by_nadam
from optax_like.transforms.radam import ScaleByRadamState, scale_by_radam
from optax_like.transforms.sparse_adam import RowSparseGrad, ScaleBySparseAdamState, scale_by_sparse_adam
from optax_like.transforms.adafactor import ScaleByAdafactorState, scale_by_adafactor
from optax_like.transforms.timm_adafactor import ScaleByTimmAdafactorState, scale_by_timm_adafactor
from optax_like.transforms.adafactor_big_vision import ScaleByAdafactorBigVisionState, scale_by_adafactor_big_vision
from optax_like.transforms.muon import ScaleByMuonState, scale_by_muon, zeropower_via_newtonschulz
from optax_like.transforms.timm_muon import ScaleByTimmMuonState, scale_by_timm_muon
from optax_like.transforms.kron import ScaleByKronState, kron_draws, scale_by_kron
from optax_like.transforms.schedule_free import (
    ScheduleFreeAdamState,
    ScheduleFreeGroup,
    ScheduleFreeSGDState,
    ScheduleFreeState,
    scale_by_schedule_free,
    wrap_schedule_free,
)
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
from optax_like.transforms.mixed_precision import LossScalingState, loss_scaling, scale_loss
from optax_like.transforms.inject import HyperparamsDict, InjectHyperparamsState, inject_hyperparams
from optax_like.transforms.layout import GroupedLayout, GroupedState, grouped
from optax_like.transforms.momentum import NoTraceState, TraceState, no_trace, trace
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
    "LossScalingState",
    "loss_scaling",
    "scale_loss",
    "AveragedParamsState",
    "ParamAverager",
    "averaged_params",
    "ema_params",
    "swa_params",
    "ScaleByAdafactorState",
    "scale_by_adafactor",
    "ScaleByTimmAdafactorState",
    "scale_by_timm_adafactor",
    "ScaleByAdafactorBigVisionState",
    "scale_by_adafactor_big_vision",
    "ScaleByMuonState",
    "scale_by_muon",
    "zeropower_via_newtonschulz",
    "ScaleByTimmMuonState",
    "scale_by_timm_muon",
    "ScaleByKronState",
    "kron_draws",
    "scale_by_kron",
    "RowSparseGrad",
    "ScaleBySparseAdamState",
    "scale_by_sparse_adam",
    "ApplyIfFiniteState",
    "HyperparamsDict",
    "InjectHyperparamsState",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "ScaleByASGDState",
    "ScaleByAdadeltaState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByLionState",
    "ScaleByLarsState",
    "ScaleByAdabeliefState",
    "ScaleByTimmAdamwState",
    "ScaleByMadgradState",
    "ScaleByRMSpropTFState",
    "ScaleByNadamLegacyState",
    "ScaleByMarsState",
    "ScaleByAdampState",
    "ScaleByAdoptState",
    "ScaleByLapropState",
    "ScaleByNadamState",
    "ScaleByRadamState",
    "ScaleByRMSpropState",
    "ScaleByRpropState",
    "ScaleByScheduleState",
    "NoTraceState",
    "TraceState",
    "WeightDecayState",
    "add_decayed_weights",
    "add_decoupled_weight_decay",
    "apply_if_finite",
    "chain",
    "clip",
    "clip_by_global_norm",
    "inject_hyperparams",
    "GroupedLayout",
    "GroupedState",
    "grouped",
    "masked",
    "multi_transform",
    "named_chain",
    "negate",
    "scale",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_lion",
    "scale_by_adopt",
    "scale_by_laprop",
    "scale_by_lars",
    "scale_by_adabelief",
    "scale_by_timm_adamw",
    "scale_by_madgrad",
    "scale_by_rmsprop_tf",
    "scale_by_nadam_legacy",
    "scale_by_mars",
    "scale_by_adamp",
    "ScaleByAdahessianState",
    "adahessian_probes",
    "hutchinson",
    "hutchinson_estimate",
    "rademacher_probes",
    "scale_by_adahessian",
    "ScaleBySgdpState",
    "scale_by_sgdp",
    "ScaleByRadamLegacyState",
    "scale_by_radam_legacy",
    "ScaleByNvNovoGradState",
    "scale_by_nvnovograd",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_asgd",
    "scale_by_rmsprop",
    "scale_by_rprop",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "trace",
    "no_trace",
    "QuantizedMoment",
    "ScaleByQuantizedAdamState",
    "scale_by_quantized_adam",
]
__all__ += ["ScheduleFreeAdamState", "ScheduleFreeGroup", "ScheduleFreeSGDState", "ScheduleFreeState",
            "scale_by_schedule_free", "wrap_schedule_free"]
__all__ += ["LambGroup", "LambState", "ScaleByLambState", "lamb_global_clip", "scale_by_lamb",
            "AdanGroup", "AdanState", "ScaleByAdanState", "scale_by_adan"]

from optax_like.transforms.lookahead import (  # noqa: E402
    LookaheadGroup, LookaheadSlowState, LookaheadState, lookahead, lookahead_sync)

__all__ += ["LookaheadGroup", "LookaheadSlowState", "LookaheadState", "lookahead", "lookahead_sync"]
