"""Running averages of params (EMA, SWA) as pure functions: usable inside a jitted train step.

torch.optim.swa_utils's averaging rules, over pytrees, without mutation:

    averager = optax_like.ema_params(decay=0.999)        # or swa_params()
    avg_state = averager.init(params)                     # AveragedParamsState(averaged, n_averaged)

    @jax.jit
    def train_step(params, opt_state, avg_state, batch):
        ...
        params = optax_like.apply_updates(params, updates)
        return params, opt_state, averager.update(params, avg_state)

    avg_state.averaged                                    # the averaged params

`update` copies the params at its first call (`n_averaged == 0`, as torch's
`AveragedModel.update_parameters`) and applies the averaging rule after that; `n_averaged`
counts the calls (int32). The rules are torch's, with torch's arithmetic:

- `ema_multi_avg(decay)` (torch's `get_ema_multi_avg_fn`): `ema.lerp_(current, 1 - decay)`
  with torch's lerp formula; `ema_avg(decay)` (`get_ema_avg_fn`):
  `decay * ema + (1 - decay) * current`.
- `swa_multi_avg()` (`get_swa_multi_avg_fn`): `avg.lerp_(current, 1 / (n + 1))`, the weight a
  float32 scalar as torch's `1 / (n_averaged + 1)` tensor; `swa_avg()` (`get_swa_avg_fn`, the
  default on CPU): `avg + (current - avg) / (n + 1)`.

Both forms are pure: a multi fn maps `(averaged_leaves, current_leaves, n_averaged)` to the new
averaged leaves (torch's updates the first list in place and returns None), an avg fn maps one
leaf. Integer leaves take torch's non-float formulas, truncated to the leaf's dtype (torch's
`copy_`). `None` leaves are skipped.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.tree import check_same_structure, is_none

__all__ = [
    "AveragedParamsState",
    "ParamAverager",
    "averaged_params",
    "ema_params",
    "swa_params",
    "ema_avg",
    "ema_multi_avg",
    "swa_avg",
    "swa_multi_avg",
]


class AveragedParamsState(NamedTuple):
    averaged: Any  # the running average, in the params' structure and dtypes
    n_averaged: jax.Array  # number of update calls so far (torch's `n_averaged`), int32


class ParamAverager(NamedTuple):
    init: Callable[[Any], AveragedParamsState]
    update: Callable[[Any, AveragedParamsState], AveragedParamsState]


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _check_decay(decay) -> None:
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")


def ema_avg(decay: float = 0.999) -> Callable:
    """torch's `get_ema_avg_fn(decay)`: `(ema, current, n) -> decay * ema + (1 - decay) * current`."""
    _check_decay(decay)

    def ema_update(ema, current, n_averaged):
        out = decay * ema + (1 - decay) * current
        return out if _is_float(ema) else out.astype(jnp.result_type(ema))

    return ema_update


def swa_avg() -> Callable:
    """torch's `get_swa_avg_fn()`: `(avg, current, n) -> avg + (current - avg) / (n + 1)`."""

    def swa_update(averaged, current, n_averaged):
        out = averaged + (current - averaged) / (n_averaged + 1)
        return out if _is_float(averaged) else out.astype(jnp.result_type(averaged))

    return swa_update


def ema_multi_avg(decay: float = 0.999) -> Callable:
    """torch's `get_ema_multi_avg_fn(decay)`, pure: `ema.lerp(current, 1 - decay)` per leaf."""
    _check_decay(decay)
    weight = 1 - decay
    single = ema_avg(decay)

    def ema_update(ema_leaves: Sequence, current_leaves: Sequence, n_averaged) -> list:
        return [numerics.lerp(e, c, weight) if _is_float(e) else single(e, c, n_averaged)
                for e, c in zip(ema_leaves, current_leaves, strict=True)]

    return ema_update


def swa_multi_avg() -> Callable:
    """torch's `get_swa_multi_avg_fn()`, pure: `avg.lerp(current, 1 / (n + 1))` per leaf, the
    weight rounded to float32 as torch's `1 / (n_averaged + 1)` (a float32 tensor)."""
    single = swa_avg()

    def swa_update(averaged_leaves: Sequence, current_leaves: Sequence, n_averaged) -> list:
        weight = (1.0 / (jnp.asarray(n_averaged) + 1)).astype(jnp.float32)
        return [numerics.lerp(a, c, weight.astype(jnp.result_type(a))) if _is_float(a) else single(a, c, n_averaged)
                for a, c in zip(averaged_leaves, current_leaves, strict=True)]

    return swa_update


def averaged_params(avg_fn: Callable | None = None, multi_avg_fn: Callable | None = None) -> ParamAverager:
    """A running average of params with torch's `AveragedModel` rule: copy at the first update,
    then `multi_avg_fn` over all leaves, or `avg_fn` per leaf, or (neither) `swa_avg()`.
    `update(params, state)` is pure and traceable; a tree of another structure raises a
    ValueError naming the first differing path."""
    if avg_fn is not None and multi_avg_fn is not None:
        raise ValueError("Only one of avg_fn and multi_avg_fn should be provided")
    if multi_avg_fn is None:
        single = avg_fn if avg_fn is not None else swa_avg()

        def per_leaf(averaged, current, n):
            return [single(a, c, n) for a, c in zip(averaged, current, strict=True)]

        multi_avg_fn = per_leaf

    def init(params) -> AveragedParamsState:
        averaged = jax.tree.map(lambda p: jnp.array(p, copy=True), params)
        return AveragedParamsState(averaged, jnp.zeros((), jnp.int32))

    def update(params, state: AveragedParamsState) -> AveragedParamsState:
        check_same_structure(state.averaged, params, "averaged params", "params")
        averaged, treedef = jax.tree.flatten(state.averaged, is_leaf=is_none)
        current = treedef.flatten_up_to(params)
        present = [i for i, a in enumerate(averaged) if a is not None and current[i] is not None]
        avg_leaves = [averaged[i] for i in present]
        cur_leaves = [jnp.asarray(current[i]).astype(jnp.result_type(averaged[i])) for i in present]
        n = state.n_averaged

        def average(_):
            return [jnp.asarray(x).astype(jnp.result_type(a))
                    for x, a in zip(multi_avg_fn(avg_leaves, cur_leaves, n), avg_leaves)]

        new = jax.lax.cond(n == 0, lambda _: list(cur_leaves), average, None) if present else []
        out = list(averaged)
        for i, leaf in zip(present, new):
            out[i] = leaf
        return AveragedParamsState(treedef.unflatten(out), n + 1)

    return ParamAverager(init, update)


def ema_params(decay: float = 0.999) -> ParamAverager:
    """EMA of params (torch: `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))`)."""
    return averaged_params(multi_avg_fn=ema_multi_avg(decay))


def swa_params() -> ParamAverager:
    """Equal-weight average of params (torch's default `AveragedModel(model)`, SWA)."""
    return averaged_params()
