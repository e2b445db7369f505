"""ReduceLROnPlateau as a transformation that scales the final update by the current lr factor."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformationExtraArgs
from optax_like.core.tree import map_params
from optax_like.schedules._common import JAX


# ---------------------------------------------------------------- formulas (shared with the class)
def check_plateau(factor, mode, threshold_mode):
    if factor >= 1.0:
        raise ValueError("Factor should be < 1.0.")
    if mode not in {"min", "max"}:
        raise ValueError("mode " + mode + " is unknown!")
    if threshold_mode not in {"rel", "abs"}:
        raise ValueError("threshold mode " + threshold_mode + " is unknown!")


def mode_worse(mode):
    return math.inf if mode == "min" else -math.inf


def is_better(a, best, mode, threshold_mode, threshold):
    """torch's `ReduceLROnPlateau._is_better`."""
    if mode == "min" and threshold_mode == "rel":
        rel_epsilon = 1.0 - threshold
        return a < best * rel_epsilon
    if mode == "min" and threshold_mode == "abs":
        return a < best - threshold
    if mode == "max" and threshold_mode == "rel":
        rel_epsilon = threshold + 1.0
        return a > best * rel_epsilon
    return a > best + threshold


def plateau_step(ops, best, num_bad_epochs, cooldown_counter, current, *, mode, threshold_mode,
                 threshold, patience, cooldown):
    """One `ReduceLROnPlateau.step(metrics)` of the bookkeeping.

    Returns (best, num_bad_epochs, cooldown_counter, reduce) where `reduce` says whether the
    lrs are cut at this step.
    """
    better = is_better(current, best, mode, threshold_mode, threshold)
    best = ops.where(better, current, best)
    num_bad_epochs = ops.where(better, 0, num_bad_epochs + 1)
    in_cooldown = cooldown_counter > 0
    cooldown_counter = ops.where(in_cooldown, cooldown_counter - 1, cooldown_counter)
    num_bad_epochs = ops.where(in_cooldown, 0, num_bad_epochs)
    reduce = num_bad_epochs > patience
    cooldown_counter = ops.where(reduce, cooldown, cooldown_counter)
    num_bad_epochs = ops.where(reduce, 0, num_bad_epochs)
    return best, num_bad_epochs, cooldown_counter, reduce


def reduced_lr(ops, old_lr, factor, min_lr, eps):
    """torch's `_reduce_lr` for one group: `max(old * factor, min_lr)`, kept only if the cut
    exceeds `eps`."""
    new_lr = ops.maximum(old_lr * factor, min_lr)
    return ops.where(old_lr - new_lr > eps, new_lr, old_lr)


# ---------------------------------------------------------------- the transformation
class ReduceLROnPlateauState(NamedTuple):
    best: jax.Array  # best metric so far (torch's `best`)
    num_bad_epochs: jax.Array  # int32
    cooldown_counter: jax.Array  # int32
    last_epoch: jax.Array  # int32: metrics seen so far
    lr: jax.Array  # current lr (initial_lr * scale), torch's group['lr']
    scale: jax.Array  # lr / initial_lr: the factor applied to the updates


def reduce_lr_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0,
    eps: float = 1e-8,
    mode: str = "min",
    *,
    initial_lr: float = 1.0,
) -> GradientTransformationExtraArgs:
    """torch.optim.lr_scheduler.ReduceLROnPlateau as a transformation.

    `update(updates, state, params, value=metric)` multiplies the updates by `state.scale`,
    then feeds `metric` to torch's plateau logic (the order of torch's loop
    `optimizer.step(); scheduler.step(metric)`: a metric affects the following updates):

        better   = metric < best * (1 - threshold)   (mode 'min', 'rel'; 'abs': best - threshold;
                                                        'max' mirrors)
        best, num_bad_epochs = (metric, 0) if better else (best, num_bad_epochs + 1)
        in cooldown: cooldown_counter -= 1, num_bad_epochs = 0
        if num_bad_epochs > patience:
            new = max(lr * factor, min_lr);  lr = new if lr - new > eps;
            cooldown_counter = cooldown;  num_bad_epochs = 0

    Place it after the optimizer: `chain(sgd(lr=0.1), reduce_lr_on_plateau(initial_lr=0.1))`.
    It scales the final update, which is the same as multiplying the lr for every optimizer
    whose update is proportional to lr (SGD, Adam, RMSprop, ...; not Rprop, whose lr is only
    the initial step size, nor LBFGS's line search). `min_lr` and `eps`
    are in lr units, as in torch, so pass the optimizer's lr as `initial_lr` (default 1.0: they
    are then in units of the scale). torch's per-group `min_lr` list is not supported: one
    transformation serves one lr. The metric is compared in the default float dtype (float64
    under x64, like torch's `float(metrics)`). Fully jit-able; `value` may be traced.
    """
    check_plateau(factor, mode, threshold_mode)
    if isinstance(min_lr, (list, tuple)):
        raise TypeError("reduce_lr_on_plateau takes one min_lr (one transformation serves one lr).")
    hyper = dict(mode=mode, threshold_mode=threshold_mode, threshold=threshold, patience=patience,
                 cooldown=cooldown)

    def init(params):
        del params
        dtype = numerics.float_dtype()
        zero = jnp.zeros((), jnp.int32)
        return ReduceLROnPlateauState(
            best=jnp.asarray(mode_worse(mode), dtype), num_bad_epochs=zero, cooldown_counter=zero,
            last_epoch=zero, lr=jnp.asarray(initial_lr, dtype), scale=jnp.ones((), dtype))

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is None:
            raise TypeError("reduce_lr_on_plateau's update needs the metric as keyword `value=`.")
        scale = state.scale

        def scaled(u):
            dtype = numerics.compute_dtype(u.dtype)
            return (scale.astype(dtype) * u.astype(dtype)).astype(u.dtype)

        updates = map_params(scaled, updates)
        current = jnp.asarray(value).astype(state.best.dtype).reshape(())
        best, bad, cooldown_counter, reduce = plateau_step(
            JAX, state.best, state.num_bad_epochs, state.cooldown_counter, current, **hyper)
        lr = jnp.where(reduce, reduced_lr(JAX, state.lr, factor, min_lr, eps), state.lr)
        new_scale = lr / initial_lr if initial_lr != 0 else jnp.ones_like(lr)
        new_state = ReduceLROnPlateauState(
            best=best.astype(state.best.dtype), num_bad_epochs=bad.astype(jnp.int32),
            cooldown_counter=jnp.asarray(cooldown_counter).astype(jnp.int32),
            last_epoch=numerics.safe_increment(state.last_epoch), lr=lr.astype(state.lr.dtype),
            scale=new_scale.astype(state.scale.dtype))
        return updates, new_state

    return GradientTransformationExtraArgs(init, update)


__all__ = ["ReduceLROnPlateauState", "reduce_lr_on_plateau"]
