"""torch.optim's optimizers as functional (init, update) pairs; names are torch's, lower case."""

from optax_like.optimizers.adabelief import adabelief
from optax_like.optimizers.adadelta import adadelta
from optax_like.optimizers.adagrad import adagrad
from optax_like.optimizers.adam import adam
from optax_like.optimizers.adamax import adamax
from optax_like.optimizers.adamp import adamp
from optax_like.optimizers.adahessian import adahessian
from optax_like.optimizers.sgdp import sgdp
from optax_like.optimizers.radam_legacy import radam_legacy
from optax_like.optimizers.nvnovograd import nvnovograd
from optax_like.optimizers.adan import adan
from optax_like.optimizers.lamb import lamb
from optax_like.optimizers.adamw import adamw
from optax_like.optimizers.adamw_legacy import adamw_legacy
from optax_like.optimizers.lion import lion
from optax_like.optimizers.madgrad import madgrad
from optax_like.optimizers.mars import mars
from optax_like.optimizers.adopt import adopt
from optax_like.optimizers.laprop import laprop
from optax_like.optimizers.lars import lars
from optax_like.optimizers.lbfgs import LBFGSState, lbfgs, lbfgs_history
from optax_like.optimizers.nadam import nadam
from optax_like.optimizers.nadamw import nadamw
from optax_like.optimizers.nadam_legacy import nadam_legacy
from optax_like.optimizers.radam import radam
from optax_like.optimizers.asgd import asgd, asgd_averaged_params
from optax_like.optimizers.rmsprop import rmsprop
from optax_like.optimizers.rmsprop_tf import rmsprop_tf
from optax_like.optimizers.rprop import rprop
from optax_like.optimizers.sgd import sgd
from optax_like.optimizers.sgdw import sgdw
from optax_like.optimizers.sparse_adam import sparse_adam
from optax_like.optimizers.adafactor import adafactor
from optax_like.optimizers.timm_adafactor import timm_adafactor
from optax_like.optimizers.adafactor_big_vision import adafactor_big_vision
from optax_like.optimizers.muon import muon
from optax_like.optimizers.timm_muon import timm_muon
from optax_like.optimizers.kron import kron, kron_with_seed
from optax_like.optimizers.schedule_free import (
    recalibrate_batch_stats,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_radam,
    schedule_free_sgd,
    schedule_free_train_params,
    schedule_free_wrapper,
)
from optax_like.optimizers.quantized_adam import adam4bit, adam8bit, adam_fp8, adamw4bit, adamw8bit, adamw_fp8

__all__ = [
    "adafactor",
    "timm_adafactor",
    "adafactor_big_vision",
    "muon",
    "timm_muon",
    "kron",
    "kron_with_seed",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "LBFGSState",
    "lbfgs",
    "lbfgs_history",
    "lion",
    "adopt",
    "laprop",
    "lars",
    "adabelief",
    "nadamw",
    "madgrad",
    "rmsprop_tf",
    "adamw_legacy",
    "nadam_legacy",
    "mars",
    "adamp",
    "adahessian",
    "sgdp",
    "radam_legacy",
    "nvnovograd",
    "lamb",
    "adan",
    "nadam",
    "radam",
    "asgd",
    "asgd_averaged_params",
    "rmsprop",
    "rprop",
    "sgd",
    "sgdw",
    "sparse_adam",
    "adam8bit",
    "adamw8bit",
    "adam4bit",
    "adamw4bit",
    "adam_fp8",
    "adamw_fp8",
]
__all__ += ["schedule_free_adamw", "schedule_free_sgd", "schedule_free_radam", "schedule_free_wrapper",
            "schedule_free_eval_params", "schedule_free_train_params", "recalibrate_batch_stats"]
