"""`optax_like.amp`: torch.amp's GradScaler for the `optax_like.optim` adapter (and its functional form).

torch's AMP recipe, with explicit gradients (torch's numbers and errors, step for step):

    scaler = optax_like.amp.GradScaler()                  # torch.amp.GradScaler("cuda" or "cpu")
    for batch in data:
        optimizer.zero_grad()
        grads = jax.grad(lambda p: scaler.scale(loss_fn(p, batch)))(optimizer.params)
        optimizer.backward(grads)                         # scaler.scale(loss).backward()
        scaler.unscale_(optimizer)                        # optional: clip unscaled gradients
        optim.clip_grad_norm_(optimizer, max_norm)
        scaler.step(optimizer)                            # skipped if a gradient is inf/nan
        scaler.update()

or the same iteration inside ONE jitted call (scale, backward, unscale, clip, skip; no host sync):

    loss = optimizer.step(loss_fn, batch, grad_scaler=scaler, clip_grad_norm=max_norm)
    scaler.update()

The functional form for your own jitted steps and `lax.scan` is `loss_scaling(inner)` (with
`scale_loss`); the arithmetic of both is in `optax_like.transforms.mixed_precision`.
"""

from __future__ import annotations

import collections
import enum
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.transforms.mixed_precision import (
    LossScaleState,
    LossScalingState,
    check_loss_scale_args,
    check_scale,
    init_loss_scale,
    loss_scaling,
    scale_loss,
    unscale_grads,
    update_loss_scale,
)

__all__ = ["GradScaler", "LossScaleState", "LossScalingState", "OptState", "loss_scaling", "scale_loss",
           "unscale_grads", "update_loss_scale"]


class OptState(enum.Enum):
    """torch.amp.grad_scaler.OptState: where an optimizer is in the current iteration."""

    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _refresh_per_optimizer_state() -> dict[str, Any]:
    # "found_inf": the optimizer's float32 device flag once checked (torch's found_inf_per_device,
    # one device here), None before (or when it had no gradient: torch's empty dict).
    return {"stage": OptState.READY, "found_inf": None}


_CLOSURE_ERROR = "Closure use is not currently supported if GradScaler is enabled."


@jax.jit
def _unscale(grads, scale):
    return unscale_grads(grads, scale)


@jax.jit
def _update(state, found_infs, growth_factor, backoff_factor, growth_interval):
    return update_loss_scale(state, sum(found_infs[1:], found_infs[0]), growth_factor, backoff_factor,
                             growth_interval)


class GradScaler:
    """torch.amp.GradScaler for `optax_like.optim` optimizers (torch's methods, numbers and errors).

    `GradScaler(init_scale=2.**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
    enabled=True, *, device=None)`: `device` is accepted for ports (`GradScaler(device="cuda")`)
    and ignored; the scale lives where JAX puts arrays. The scale (float32) and growth tracker
    (int32) are device arrays, built at the first `scale()` (or scaled step) as torch builds them.

    * `scale(outputs)`: `outputs * scale` (an array or a pytree of arrays; torch's dtypes).
      Inside a function you jit yourself, a captured scale is a trace-time constant: pass
      `scaler.get_scale_array()` as an argument, or use `optimizer.step(..., grad_scaler=)`.
    * `unscale_(optimizer)`: divides the optimizer's pending gradients by the scale and records
      whether one is inf/nan (device flag; no sync). Twice per iteration, or after `step`:
      torch's RuntimeErrors. float16 gradients: torch's ValueError (keep float32 master params
      and compute in float16 inside the loss, as torch's autocast does).
    * `step(optimizer, *args, **kwargs)`: `unscale_` if not done, then `optimizer.step(*args,
      grad_scaler=self, **kwargs)`, which skips the update on device when a gradient was not
      finite (params and state bit-for-bit). Returns the step's value (None for a step on
      pending gradients, as torch's). Closures are refused, as torch refuses them.
    * `optimizer.step(loss_fn, *batch, grad_scaler=scaler)`: the scaled iteration in the step's
      one jitted call: `loss_fn`'s loss times the scale is differentiated, the gradients are
      unscaled, checked, clipped if asked, and the update is applied or skipped; returns the
      loss (unscaled). Then call `update()` as usual.
    * `update(new_scale=None)`: torch's scale update from the flags of this iteration's
      optimizers (a small jitted call, no sync), or sets the scale.
    * `get_scale()`, `get_growth_tracker()` (torch's `_get_growth_tracker`), `get/set_growth_factor`,
      `get/set_backoff_factor`, `get/set_growth_interval`, `is_enabled()`, `state_dict()` and
      `load_state_dict()` (torch's keys; torch's scaler state dicts load and continue).

    Differences from torch: a skipped step is decided on device, so `optimizer.step` (and its
    hooks, and the lr scheduler's record that it ran) is called on a skipped iteration too; torch
    does not call it, and an lr scheduler stepped after the first, skipped, iteration warns
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`" in torch only (the
    learning rates are the same: both schedules advance). Arguments torch takes silently and
    which would break training (a scale that is not finite and positive, backoff_factor <= 0, a
    growth_interval that is not a positive int) are refused, naming the argument, also on load.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True, *, device: str | None = None) -> None:
        if isinstance(init_scale, str):
            raise TypeError(
                f"GradScaler's first argument is init_scale, got the string {init_scale!r}: torch's "
                "GradScaler(device, ...) is spelled GradScaler(device=...) here (and the device is ignored).")
        self._device = device
        self._enabled = bool(enabled)
        if self._enabled:
            check_loss_scale_args(init_scale, growth_factor, backoff_factor, growth_interval)
            self._init_scale = float(init_scale)
            self._scale: LossScaleState | None = None  # built lazily, as torch's _scale and _growth_tracker
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._per_optimizer_states: dict[int, dict[str, Any]] = collections.defaultdict(
                _refresh_per_optimizer_state)

    # ------------------------------------------------------------------ scale
    def _lazy_init_scale_growth_tracker(self) -> LossScaleState:
        self._scale = state = init_loss_scale(self._init_scale, self._init_growth_tracker)
        return state

    def _check_scale_growth_tracker(self, funcname: str) -> LossScaleState:
        if self._scale is None:
            raise AssertionError(
                f"Attempted {funcname} but _scale is None.  This may indicate your script did not use "
                "scaler.scale(loss or outputs) earlier in the iteration.")
        return self._scale

    def scale(self, outputs: Any) -> Any:
        """torch's `scale`: `outputs` (an array or a pytree of arrays) times the scale."""
        if not self._enabled:
            return outputs
        state = self._scale
        if state is None:
            state = self._lazy_init_scale_growth_tracker()
        return scale_loss(outputs, state.scale)

    def get_scale_array(self) -> jax.Array:
        """The scale as a float32 device array (no sync), to pass into a function you jit.
        1.0 when disabled."""
        if not self._enabled:
            return jnp.ones((), jnp.float32)
        state = self._scale
        if state is None:
            state = self._lazy_init_scale_growth_tracker()
        return state.scale

    # ------------------------------------------------------------------ unscale_ and step
    def _optimizer_state(self, optimizer) -> dict[str, Any]:
        from optax_like.optim.optimizer import Optimizer

        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"GradScaler drives optax_like.optim optimizers, got {type(optimizer).__name__}")
        return self._per_optimizer_states[id(optimizer)]

    def unscale_(self, optimizer) -> None:
        """torch's `unscale_`: the pending gradients divided by the scale, non-finite values noted."""
        if not self._enabled:
            return
        scale = self._check_scale_growth_tracker("unscale_")
        state = self._optimizer_state(optimizer)
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        grads = optimizer._pending_grads()
        present = [g for group in grads for g in group if g is not None]
        for g in present:
            values = getattr(g, "values", getattr(g, "data", g)) if not isinstance(g, jax.Array) else g
            if values.dtype == jnp.float16:
                raise ValueError("Attempting to unscale FP16 gradients.")  # torch's
        if present:
            unscaled, state["found_inf"] = _unscale(grads, scale.scale)
            optimizer._replace_pending_grads(unscaled)
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args: Any, **kwargs: Any) -> Any:
        """torch's `step`: `unscale_(optimizer)` unless done, then the optimizer's step, skipped
        (on device) when a gradient was inf or nan. Returns the step's return value."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError(_CLOSURE_ERROR)
        if args and callable(args[0]):
            raise RuntimeError(
                _CLOSURE_ERROR + " For the scaled step in one jitted call, call "
                "optimizer.step(loss_fn, *batch, grad_scaler=scaler), then scaler.update().")
        self._check_scale_growth_tracker("step")
        state = self._optimizer_state(optimizer)
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if state["found_inf"] is None:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        return optimizer.step(*args, grad_scaler=self, **kwargs)

    def _step_operand(self, optimizer, closure) -> tuple[str | None, jax.Array | None]:
        """The optimizer's step asks (optim/optimizer.py, `_run_step`): "scale" and the scale for
        a step with a loss function; "skip" and this iteration's found_inf for pending gradients
        (unscaled first if `unscale_` was not called)."""
        if not self._enabled:
            return None, None
        state = self._optimizer_state(optimizer)
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if closure is None:
            self._check_scale_growth_tracker("step")
            if state["stage"] is OptState.READY:
                self.unscale_(optimizer)
            if state["found_inf"] is None:
                raise AssertionError("No inf checks were recorded for this optimizer.")
            return "skip", state["found_inf"]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError(
                "unscale_() was called on this optimizer's pending gradients, but this step differentiates "
                "its loss function (discarding them): call optimizer.step(loss_fn, ..., grad_scaler=scaler) "
                "without unscale_ (clip inside it with clip_grad_norm=).")
        state = self._scale
        if state is None:
            state = self._lazy_init_scale_growth_tracker()  # as scaler.scale(loss) would
        return "scale", state.scale

    def _stepped(self, optimizer, found_inf: jax.Array | None) -> None:
        """After the step: the flag it computed ("scale"; None for "skip": the one recorded)."""
        state = self._optimizer_state(optimizer)
        if found_inf is not None:
            state["found_inf"] = found_inf
        state["stage"] = OptState.STEPPED

    # ------------------------------------------------------------------ update
    def update(self, new_scale: Any = None) -> None:
        """torch's `update`: backoff after a skipped step, growth after `growth_interval`
        unskipped ones; or `new_scale` (a number or a one-element array) becomes the scale."""
        if not self._enabled:
            return
        scale = self._check_scale_growth_tracker("update")
        if new_scale is not None:
            if isinstance(new_scale, (int, float, np.integer, np.floating)) and not isinstance(new_scale, bool):
                check_scale(new_scale, "new_scale")
                value = jnp.full((), new_scale, jnp.float32)
            else:
                reason = ("new_scale should be a float or a 1-element torch.cuda.FloatTensor or "
                          "torch.FloatTensor with requires_grad=False.")
                new_scale = cast(Any, new_scale)  # a tensor-like (pyright narrows it to bool here)
                if hasattr(new_scale, "detach"):
                    if new_scale.requires_grad:
                        raise AssertionError(reason)
                    new_scale = new_scale.detach().cpu().numpy()
                if not hasattr(new_scale, "shape") or np.size(new_scale) != 1:
                    raise AssertionError(reason)
                value = jnp.asarray(new_scale, jnp.float32).reshape(())
            self._scale = LossScaleState(value, scale.growth_tracker)
        else:
            found_infs = [s["found_inf"] for s in self._per_optimizer_states.values() if s["found_inf"] is not None]
            if not found_infs:
                raise AssertionError("No inf checks were recorded prior to update.")
            self._scale = _update(scale, tuple(found_infs), self._growth_factor, self._backoff_factor,
                                  self._growth_interval)
        self._per_optimizer_states = collections.defaultdict(_refresh_per_optimizer_state)

    # ------------------------------------------------------------------ getters and setters
    def get_scale(self) -> float:
        """The scale as a Python float (a device sync); 1.0 when disabled."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale.scale)

    def get_growth_tracker(self) -> int:
        """The consecutive unskipped steps since the scale last changed (torch's
        `_get_growth_tracker`; a device sync); 0 when disabled."""
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._scale is None else int(self._scale.growth_tracker)

    _get_growth_tracker = get_growth_tracker

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        check_loss_scale_args(growth_factor=new_factor)
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        check_loss_scale_args(backoff_factor=new_factor)
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        check_loss_scale_args(growth_interval=new_interval)
        self._growth_interval = new_interval

    def is_enabled(self) -> bool:
        return self._enabled

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict[str, Any]:
        """torch's five entries (Python numbers); {} when disabled. Call it after `update()`."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self.get_growth_tracker(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads ours or torch's (`torch.amp.GradScaler.state_dict()`); checked first (a scale
        that is not finite and positive, factors or interval out of range: an error naming the
        entry, nothing changed). A no-op when disabled, as torch's."""
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        missing = [k for k in ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")
                   if k not in state_dict]
        if missing:
            raise KeyError(f"GradScaler state dict misses {missing}")

        def number(key, kind):
            value = state_dict[key]
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            if hasattr(value, "shape") and np.size(value) == 1:
                value = np.asarray(value).reshape(()).item()
            if kind is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            return value

        scale, growth_factor = number("scale", float), number("growth_factor", float)
        backoff_factor, growth_interval = number("backoff_factor", float), number("growth_interval", int)
        tracker = number("_growth_tracker", int)
        check_scale(scale, "state_dict['scale']")
        check_loss_scale_args(growth_factor=growth_factor, backoff_factor=backoff_factor,
                              growth_interval=growth_interval)
        if not isinstance(tracker, (int, np.integer)) or isinstance(tracker, bool) or tracker < 0:
            raise ValueError(f"state_dict['_growth_tracker'] must be a non-negative int, got {tracker!r}")
        self._init_scale = float(scale)
        self._growth_factor, self._backoff_factor = growth_factor, backoff_factor
        self._growth_interval, self._init_growth_tracker = int(growth_interval), int(tracker)
        if self._scale is not None:
            self._lazy_init_scale_growth_tracker()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._enabled:
            if len(self._per_optimizer_states) != 0:
                raise AssertionError("A GradScaler instance may only be pickled at the beginning "
                                     "of an iteration, or at the end after scaler.update().")
            state["_init_scale"] = self.get_scale()
            state["_init_growth_tracker"] = self.get_growth_tracker()
            state["_scale"] = None
            state["_per_optimizer_states"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._enabled:
            self._per_optimizer_states = collections.defaultdict(_refresh_per_optimizer_state)

