"""Cyclical policies: CyclicLR and OneCycleLR, each with the momentum schedule torch cycles.

`cyclic_lr(...)` and `one_cycle_lr(...)` return the lr schedule; its attribute `.momentum` is
the companion momentum schedule (`None` when `cycle_momentum=False`). Drive SGD's `momentum` or
Adam's `betas[0]` with it, e.g.

    sched = one_cycle_lr(0.1, total_steps=1000)
    opt = adam(lr=sched, betas=(sched.momentum, 0.999))         # if betas accept schedules
    opt = inject_hyperparams(sgd)(lr=sched, momentum=sched.momentum)

torch overwrites `group['momentum']` (or `betas[0]`) with these values at every step.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from optax_like.schedules._common import concrete_count, make_schedule


# ---------------------------------------------------------------- CyclicLR formulas
def triangular_scale_fn(x):
    return 1.0


def triangular2_scale_fn(x):
    return 1 / 2.0 ** (x - 1)


def exp_range_scale_fn(gamma, x):
    return gamma**x


def cyclic_position(ops, n, total_size, step_ratio):
    """(cycle, scale_factor): torch's CyclicLR cycle number and position in the triangle."""
    cycle = ops.floor(1 + n / total_size)
    x = 1.0 + n / total_size - cycle
    scale_factor = ops.lazy_where(x <= step_ratio, lambda: x / step_ratio, lambda: (x - 1) / (step_ratio - 1))
    return cycle, scale_factor


def cyclic_values(ops, n, base, peak, total_size, step_ratio, scale_fn, scale_mode, momentum=False):
    """torch's CyclicLR value at `n` (lr from (base_lr, max_lr); momentum from (base, max) is
    mirrored: max_momentum - height)."""
    cycle, scale_factor = cyclic_position(ops, n, total_size, step_ratio)
    base_height = (peak - base) * scale_factor
    scale = scale_fn(cycle) if scale_mode == "cycle" else scale_fn(n)
    if momentum:
        return peak - base_height * scale
    return base + base_height * scale


def cyclic_scale_fn(mode, gamma, scale_fn, scale_mode):
    """(scale_fn, scale_mode) as torch's `_init_scale_fn` resolves them."""
    if scale_fn is not None:
        return scale_fn, scale_mode
    if mode == "triangular":
        return triangular_scale_fn, "cycle"
    if mode == "triangular2":
        return triangular2_scale_fn, "cycle"
    return (lambda x: exp_range_scale_fn(gamma, x)), "iterations"


def check_cyclic_mode(mode, scale_fn):
    if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
        raise ValueError("mode is invalid and scale_fn is None")


def cyclic_lr(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable | None = None,
    scale_mode: str = "cycle",
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
):
    """torch.optim.lr_scheduler.CyclicLR (Smith's triangular / triangular2 / exp_range policies):

        cycle = floor(1 + n / (up + down));  x = 1 + n / (up + down) - cycle
        s = x / r  if x <= r  else  (x - 1) / (r - 1),   r = up / (up + down)
        lr(n) = base_lr + (max_lr - base_lr) * s * scale_fn(cycle or n)
        momentum(n) = max_momentum - (max_momentum - base_momentum) * s * scale_fn(cycle or n)

    A custom `scale_fn(x)` must be written with jnp-compatible operations (it receives a traced
    float: the cycle number for `scale_mode='cycle'`, the count for 'iterations'). torch's class
    is already in closed form: this is the same formula. The momentum schedule is
    `schedule.momentum` (None without `cycle_momentum`); torch additionally requires the
    optimizer to have `momentum` or `betas`, which a function cannot check.
    """
    check_cyclic_mode(mode, scale_fn)
    up = float(step_size_up)
    down = float(step_size_down) if step_size_down is not None else up
    total_size = up + down
    step_ratio = up / total_size
    fn, fn_mode = cyclic_scale_fn(mode, gamma, scale_fn, scale_mode)

    def values(lo, hi, momentum):
        return lambda ops, n: cyclic_values(ops, ops.as_float(n), lo, hi, total_size, step_ratio, fn, fn_mode, momentum)

    momentum_schedule = None
    if cycle_momentum:
        momentum_schedule = make_schedule(values(base_momentum, max_momentum, True), max_momentum)
    return make_schedule(values(base_lr, max_lr, False), base_lr, momentum=momentum_schedule)


# ---------------------------------------------------------------- OneCycleLR formulas
def annealing_cos(start, end, pct, ops):
    cos_out = ops.cos(ops.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def annealing_linear(start, end, pct, ops=None):
    return (end - start) * pct + start


def one_cycle_phases(total_steps, pct_start, three_phase):
    """torch's `_schedule_phases` (end steps are `pct_start * total_steps - 1`, etc.)."""
    if three_phase:
        return [
            {"end_step": float(pct_start * total_steps) - 1, "start_lr": "initial_lr", "end_lr": "max_lr",
             "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
            {"end_step": float(2 * pct_start * total_steps) - 2, "start_lr": "max_lr", "end_lr": "initial_lr",
             "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
            {"end_step": total_steps - 1, "start_lr": "initial_lr", "end_lr": "min_lr",
             "start_momentum": "max_momentum", "end_momentum": "max_momentum"},
        ]
    return [
        {"end_step": float(pct_start * total_steps) - 1, "start_lr": "initial_lr", "end_lr": "max_lr",
         "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
        {"end_step": total_steps - 1, "start_lr": "max_lr", "end_lr": "min_lr",
         "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
    ]


def one_cycle_value(ops, step_num, phases, group, anneal, key):
    """torch's OneCycleLR `get_lr` for one group; `key` is 'lr' or 'momentum'.

    The first phase whose `end_step >= step_num` (or the last one) anneals from its start value
    to its end value over `pct = (step_num - start_step) / (end_step - start_step)`.
    """
    anneal_fn = annealing_cos if anneal == "cos" else annealing_linear
    starts = [0.0] + [p["end_step"] for p in phases[:-1]]

    def phase_value(i):
        phase = phases[i]
        pct = (step_num - starts[i]) / (phase["end_step"] - starts[i])
        return anneal_fn(group[phase[f"start_{key}"]], group[phase[f"end_{key}"]], pct, ops)

    def from_phase(i):
        if i == len(phases) - 1:
            return phase_value(i)
        return ops.lazy_where(step_num <= phases[i]["end_step"], lambda: phase_value(i), lambda: from_phase(i + 1))

    return from_phase(0)


def one_cycle_total_steps(total_steps, epochs, steps_per_epoch):
    if total_steps is not None:
        if total_steps <= 0 or not isinstance(total_steps, int):
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
        return total_steps
    if epochs is not None and steps_per_epoch is not None:
        if not isinstance(epochs, int) or epochs <= 0:
            raise ValueError(f"Expected positive integer epochs, but got {epochs}")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
            raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
        return epochs * steps_per_epoch
    raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")


def check_one_cycle(pct_start, anneal_strategy):
    if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    if anneal_strategy not in ["cos", "linear"]:
        raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")


def one_cycle_overrun_message(step_num, total_steps):
    return f"Tried to step {step_num} times. The specified number of total steps is {total_steps}"


def one_cycle_lr(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
):
    """torch.optim.lr_scheduler.OneCycleLR: warm up from `max_lr / div_factor` to `max_lr`, then
    anneal to `max_lr / div_factor / final_div_factor` (cos or linear), over `total_steps`.

    Phase boundaries are torch's: the warm-up ends at step `pct_start * total_steps - 1` (a
    float), the second phase of `three_phase` at `2 * pct_start * total_steps - 2`, the last at
    `total_steps - 1`; each phase anneals over `pct = (n - start) / (end - start)`. torch allows
    n == total_steps (pct slightly past 1) and raises `ValueError("Tried to step ...")` beyond.
    Here a concrete count > total_steps raises the same error; a traced count cannot raise, so
    the value is NaN (visible at once in the loss; the lr would otherwise be an extrapolation).
    A phase of zero length (e.g. pct_start * total_steps == 1) divides by zero: torch raises
    ZeroDivisionError, the function gives NaN/inf at that count. The momentum schedule is
    `schedule.momentum` (None without `cycle_momentum`).
    """
    total = one_cycle_total_steps(total_steps, epochs, steps_per_epoch)
    phases = one_cycle_phases(total, pct_start, three_phase)
    check_one_cycle(pct_start, anneal_strategy)
    initial_lr = max_lr / div_factor
    group = {
        "initial_lr": initial_lr, "max_lr": max_lr, "min_lr": initial_lr / final_div_factor,
        "max_momentum": max_momentum, "base_momentum": base_momentum,
    }

    def make(key, first_value):
        def formula(ops, n):
            value = one_cycle_value(ops, ops.as_float(n), phases, group, anneal_strategy, key)
            return jnp.where(n > total, jnp.nan, value)

        inner = make_schedule(formula, first_value)

        def schedule(count):
            concrete = concrete_count(count)
            if concrete is not None and concrete > total:
                raise ValueError(one_cycle_overrun_message(concrete, total))
            return inner(count)

        schedule.initial_lr = first_value
        return schedule

    momentum_schedule = make("momentum", max_momentum) if cycle_momentum else None
    schedule = make("lr", initial_lr)
    schedule.momentum = momentum_schedule
    schedule.total_steps = total
    return schedule


__all__ = ["cyclic_lr", "one_cycle_lr"]
