"""schedulefree 1.4.1's AdamWScheduleFree, SGDScheduleFree and RAdamScheduleFree as functional
optimizers (train mode), and the eval/train views of their params."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable

import jax

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.optimizers._timm import check_compared
from optax_like.transforms.combine import chain
from optax_like.transforms.schedule_free import (
    scale_by_schedule_free,
    schedule_free_eval_params,
    schedule_free_train_params,
    wrap_schedule_free,
)


def _check_types(**values) -> None:
    """Types only (schedulefree checks no values of AdamW/RAdam): a real scalar, a 0-d array or a
    schedule, each named in the TypeError/ValueError."""
    for name, value in values.items():
        v.check_hyperparam(value, name)


def schedule_free_adamw(
    lr: ScalarOrSchedule = 0.0025,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    warmup_steps: int = 0,
    r: ScalarOrSchedule = 0.0,
    weight_lr_power: ScalarOrSchedule = 2.0,
    foreach: bool | None = True,
) -> GradientTransformation:
    """Schedule-Free AdamW (Defazio et al., 2024), as `schedulefree.AdamWScheduleFree` (1.4.1)
    computes it in train mode; the params a step sees and returns are schedulefree's `y`:

        sched  = (k + 1) / warmup_steps if k < warmup_steps else 1;  lr_t = lr * sched
        lr_max = max(lr_t, lr_max);  weight = (k + 1)**r * lr_max**weight_lr_power
        weight_sum += weight;  ckp1 = weight / weight_sum
        v      = beta2 v + (1 - beta2) g^2
        g'     = g / (sqrt(v / (1 - beta2**(k+1))) + eps) + weight_decay * y
        y     <- lerp(y, z, ckp1) + lr_t (beta1 (1 - ckp1) - 1) g'
        z     <- z - lr_t g'

    Evaluate at `schedule_free_eval_params(state, params)` (`.eval()`'s x) and come back with
    `schedule_free_train_params` (`.train()`). Chain: `scale_by_schedule_free` alone (it emits
    `y' - y`; see its docstring for exactness). `k`, `weight_sum` and `lr_max` are group-level
    (schedulefree's `param_groups` keys); a None gradient skips the leaf but advances them.
    schedulefree validates none of AdamW's arguments: neither do we. `foreach` selects
    schedulefree's kernel (its default: True, `hasattr(torch, "_foreach_mul_")`): accepted and
    ignored. The class `optax_like.optim.AdamWScheduleFree` adds `.train()`/`.eval()`. Reference:
    `AdamWScheduleFree(params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    warmup_steps=0, r=0.0, weight_lr_power=2.0, foreach=...)`.
    """
    del foreach
    _check_types(lr=lr, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                 weight_lr_power=weight_lr_power)
    return chain(scale_by_schedule_free(lr, betas[0], betas[1], eps, weight_decay, warmup_steps, r,
                                        weight_lr_power, kind="adamw"))


def schedule_free_sgd(
    lr: ScalarOrSchedule = 1.0,
    momentum: ScalarOrSchedule = 0.9,
    weight_decay: ScalarOrSchedule = 0,
    warmup_steps: int = 0,
    r: ScalarOrSchedule = 0.0,
    weight_lr_power: ScalarOrSchedule = 2,
    foreach: bool | None = True,
) -> GradientTransformation:
    """Schedule-Free SGD, as `schedulefree.SGDScheduleFree` (1.4.1) computes it in train mode:
    `schedule_free_adamw`'s recursion with `g' = g + weight_decay * y` (no second moment) and
    `momentum` in beta1's place. Validation and messages are schedulefree's (lr >= 0,
    weight_decay >= 0, 0 < momentum < 1). Reference: `SGDScheduleFree(params, lr=1.0,
    momentum=0.9, weight_decay=0, warmup_steps=0, r=0.0, weight_lr_power=2, foreach=...)`.
    """
    del foreach
    _check_types(warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)
    # schedulefree's own comparisons (a NaN passes them, as there; a Tensor of several elements
    # is compared as it is: torch's RuntimeError)
    for value in (lr, weight_decay, momentum):
        check_compared(value)
    v.check(lr, "lr", lambda x: not x < 0.0, "Invalid learning rate: {}")
    v.check(weight_decay, "weight_decay", lambda x: not x < 0.0, "Invalid weight_decay value: {}")
    v.check(momentum, "momentum", lambda m: not (m <= 0 or m >= 1), "Momentum must be between 0 and 1 exclusive: {}")
    return chain(scale_by_schedule_free(lr, momentum, 0.999, 0.0, weight_decay, warmup_steps, r,
                                        weight_lr_power, kind="sgd"))


def schedule_free_radam(
    lr: ScalarOrSchedule = 0.0025,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0,
    r: ScalarOrSchedule = 0.0,
    weight_lr_power: ScalarOrSchedule = 2.0,
    foreach: bool | None = True,
    silent_sgd_phase: bool = True,
) -> GradientTransformation:
    """Schedule-Free RAdam, as `schedulefree.RAdamScheduleFree` (1.4.1) computes it in train
    mode: `schedule_free_adamw` without warmup, with RAdam's rectification as the schedule,

        rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
        sched   = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                  if rho_t > 4, else 0 (silent_sgd_phase) or 1

    and the gradient normalised only while rho_t > 4. The rectification is computed as
    schedulefree's float64 host math (float64 under x64, double-float otherwise) and rounded
    once. No validation (as schedulefree). Reference: `RAdamScheduleFree(params,
    lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, r=0.0, weight_lr_power=2.0,
    foreach=..., silent_sgd_phase=True)`.
    """
    del foreach
    _check_types(lr=lr, eps=eps, weight_decay=weight_decay, r=r, weight_lr_power=weight_lr_power)
    return chain(scale_by_schedule_free(lr, betas[0], betas[1], eps, weight_decay, 0, r, weight_lr_power,
                                        kind="radam", silent_sgd_phase=silent_sgd_phase))


def schedule_free_wrapper(
    base: GradientTransformation,
    weight_decay_at_y: ScalarOrSchedule = 0.0,
    momentum: ScalarOrSchedule = 0.9,
    weight_lr_power: ScalarOrSchedule = 2,
    r: ScalarOrSchedule = 0,
    *,
    lr: ScalarOrSchedule,
) -> GradientTransformation:
    """schedulefree's `ScheduleFreeWrapper(base, weight_decay_at_y=0.0, momentum=0.9,
    weight_lr_power=2, r=0)` (1.4.1) around a functional `base` optimizer (train mode).

    The base steps from z, the wrapper keeps x (an average of z) and hands out
    y = lerp(x, z, 1 - momentum); see `transforms.schedule_free.wrap_schedule_free` for the
    recursion. `lr` (keyword-only, required) is the base's learning rate, which schedulefree
    reads from the base's `param_groups` (the weights of the average and `weight_decay_at_y`
    use it): pass the number or schedule the base was built with. schedulefree validates
    nothing here; neither do we. Evaluate at `schedule_free_eval_params(state, params)`.
    """
    return wrap_schedule_free(base, lr, weight_decay_at_y, momentum, weight_lr_power, r)


def recalibrate_batch_stats(update_stats: Callable[[Any, Any, Any], Any], eval_params: Any, batch_stats: Any,
                            batches: Iterable[Any], num_batches: int = 50) -> Any:
    """BatchNorm statistics recomputed at the eval params, as schedulefree's README asks of
    models with BatchNorm (their running statistics were gathered at the train params y, but the
    model is evaluated at x):

        model.train(); optimizer.eval()
        with torch.no_grad():
            for batch in itertools.islice(train_loader, 50):
                model(batch)
        model.eval()

    `update_stats(params, batch_stats, batch) -> batch_stats` is one train-mode forward pass
    that returns the updated statistics (flax: `model.apply({'params': p, 'batch_stats': s}, x,
    train=True, mutable=['batch_stats'])[1]['batch_stats']`); it is jitted and run over the
    first `num_batches` of `batches`, in order, without gradients. `eval_params`:
    `schedule_free_eval_params(state, params)` (functional) or `optimizer.params` after
    `optimizer.eval()` (the classes). Returns the new statistics; nothing else changes."""
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 0:
        raise ValueError(f"num_batches must be a non-negative integer, got {num_batches!r}")
    step = jax.jit(update_stats)
    eval_params = jax.lax.stop_gradient(eval_params)
    for batch in itertools.islice(batches, num_batches):
        batch_stats = step(eval_params, batch_stats, batch)
    return batch_stats


__all__ = [
    "recalibrate_batch_stats", "schedule_free_adamw", "schedule_free_eval_params", "schedule_free_radam",
    "schedule_free_sgd", "schedule_free_train_params", "schedule_free_wrapper",
]
