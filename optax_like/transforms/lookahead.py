"""timm's Lookahead wrapper (Zhang et al., 2019, "Lookahead Optimizer: k steps forward, 1 step
back"), `timm.optim.lookahead.Lookahead` in timm 1.0.31, around any functional optimizer.

timm's wrapper lets the base optimizer step the params (the fast weights) and, every `k`-th
step of a group, pulls each param that has a gradient towards a slow copy:

    slow <- slow + alpha * (fast - slow)     (slow.add_(fast - slow, alpha=alpha))
    fast <- slow                              (fast.copy_(slow))

The slow copy is created lazily, at a param's first sync, as a copy of the fast param at that
moment (not of the params before training): the first sync of a param therefore leaves it
where the base put it, and the interpolation starts at its second sync. This is timm's code;
the paper (and optax's `lookahead`) start the slow weights at the initial params.

The state keeps timm's layout: `lookahead_slow_buff` per param (in the base optimizer's
`state[p]`, present once the param has been synced) and the group's `lookahead_step` counter
(a param-group entry in timm, counted every step, also one where no param has a gradient).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_like.core import numerics
from optax_like.core import validation as v
from optax_like.core.base import (GradientTransformation, GradientTransformationExtraArgs, ScalarOrSchedule,
                                  apply_updates, with_extra_args_support)
from optax_like.core.leaf_scalars import init_counts, select_present
from optax_like.core.torch_layout import STARTED, GroupEntries, declare_torch_state
from optax_like.core.tree import is_none

__all__ = ["LookaheadGroup", "LookaheadSlowState", "LookaheadState", "lookahead", "lookahead_sync"]


class LookaheadSlowState(NamedTuple):
    """The per-param part: timm's `state[p]['lookahead_slow_buff']`."""

    lookahead_slow_buff: Any  # the slow weights, params-shaped (meaningful once synced)
    synced: Any  # syncs of each param (a LeafScalars counter): > 0 once the slow copy exists


declare_torch_state(LookaheadSlowState, buffers=("lookahead_slow_buff",), internal={"synced": STARTED},
                    started="synced", lazy=True)


class LookaheadGroup(NamedTuple):
    """The group part: timm's `param_groups[i]['lookahead_step']` (steps the group has taken)."""

    lookahead_step: jax.Array  # int32


def _export_group(group: LookaheadGroup) -> dict:
    return {"lookahead_step": int(np.asarray(group.lookahead_step))}


def _load_group(fresh: LookaheadGroup, entries: dict) -> LookaheadGroup:
    if "lookahead_step" not in entries:
        return fresh
    step = entries["lookahead_step"]
    if hasattr(step, "item") and np.ndim(step) == 0 and np.issubdtype(np.asarray(step).dtype, np.integer):
        step = int(np.asarray(step))
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= int(step) < 2**31:
        raise ValueError(f"loaded param group entry 'lookahead_step' must be an integer in [0, 2**31), got {step!r}")
    return fresh._replace(lookahead_step=jnp.asarray(int(step), jnp.int32))


declare_torch_state(LookaheadGroup, group=GroupEntries(
    ("lookahead_step",), export=_export_group, load=_load_group,
    view=lambda group: {"lookahead_step": group.lookahead_step}))


class LookaheadState(NamedTuple):
    """The whole state (an undeclared container: the adapter's converter looks into it)."""

    base: Any  # the wrapped optimizer's state
    slow: LookaheadSlowState
    group: LookaheadGroup


def lookahead(base: GradientTransformation, alpha: ScalarOrSchedule = 0.5, k: int = 6) -> GradientTransformationExtraArgs:
    """timm's `Lookahead(base_optimizer, alpha=0.5, k=6)` around the functional `base`.

    Each step the base updates the params (fast weights); on every `k`-th step (timm's group
    counter `lookahead_step`), each param with a gradient becomes

        slow = fast            (its first sync: timm creates the slow copy then)
        slow = slow + alpha * (fast - slow)   (later syncs)
        param = slow

    `alpha` may be a number, a traced scalar or a schedule (of the steps taken); `k` is a
    compile-time integer. The emitted update is the base's, except on a sync, where it is
    `slow - params` nudged so that `params + u` is exactly `slow` (`numerics.exact_difference`).
    Validation and messages are timm's (`Invalid slow update rate`, `Invalid lookahead steps`).

    Extra keyword arguments of `update` reach the base (`GradientTransformationExtraArgs`; a
    plain base ignores them): a second-order base takes its Hessian estimate so
    (`update(..., hessian=...)`, Adahessian's; timm's Lookahead steps such a base too, its
    `is_second_order` being the base's).

    Differs from `optax.lookahead`: optax keeps slow and fast params in a `LookaheadParams`
    pair and starts the slow weights at the initial params; this is timm's recursion over
    ordinary params.
    """
    v.check(alpha, "alpha", lambda a: 0.0 <= a <= 1.0, "Invalid slow update rate: {}")
    if isinstance(k, (int, float, np.number)) and not isinstance(k, bool) and not 1 <= k:
        raise ValueError(f"Invalid lookahead steps: {k}")  # timm's check
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)) or int(k) != k:
        raise TypeError(f"lookahead k must be a whole number of steps (a compile-time constant), got {k!r}")
    k = int(k)
    base_update = with_extra_args_support(base).update

    def init(params):
        slow = jax.tree.map(lambda p: None if p is None else jnp.zeros_like(p), params, is_leaf=is_none)
        return LookaheadState(base.init(params), LookaheadSlowState(slow, init_counts(params)),
                              LookaheadGroup(jnp.zeros((), jnp.int32)))

    def update(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("lookahead needs the params: call update(updates, state, params).")
        base_updates, base_state = base_update(updates, state.base, params, **extra_args)
        step = numerics.safe_increment(state.group.lookahead_step)
        sync = lax.rem(step, jnp.asarray(k, step.dtype)) == 0
        a = numerics.resolve(alpha, state.group.lookahead_step)
        slow_state = state.slow
        synced_new = slow_state.synced.map(lambda c: jnp.where(sync, numerics.safe_increment(c), c))
        synced = select_present(synced_new, slow_state.synced, updates, params)
        treedef = jax.tree.structure(params, is_leaf=is_none)
        ps, us = jax.tree.leaves(params, is_leaf=is_none), treedef.flatten_up_to(base_updates)
        gs, slows = treedef.flatten_up_to(updates), treedef.flatten_up_to(slow_state.lookahead_slow_buff)
        started = [c > 0 for c in slow_state.synced]
        new_u, new_slow, leaf = [], [], 0
        for p, u, g, s in zip(ps, us, gs, slows):
            if p is None:
                new_u.append(u)
                new_slow.append(s)
                continue
            was_started = started[leaf]
            leaf += 1
            if g is None or u is None:
                new_u.append(u)
                new_slow.append(s)
                continue
            fast: jax.Array = apply_updates(p, u)  # pyright: ignore[reportAssignmentType]  (a leaf)
            slow_new = _pulled(fast, s, was_started, a)
            new_slow.append(jnp.where(sync, slow_new, s))
            new_u.append(jnp.where(sync, numerics.exact_difference(slow_new, p), u))
        new_state = LookaheadState(
            base_state, LookaheadSlowState(treedef.unflatten(new_slow), synced), LookaheadGroup(step))
        return treedef.unflatten(new_u), new_state

    return GradientTransformationExtraArgs(init, update)


def _pulled(fast: jax.Array, slow: jax.Array, started: Any, alpha: Any) -> jax.Array:
    """timm's `update_slow` for one param: `slow + alpha * (fast - slow)` (`fast` at the first sync)."""
    dtype = numerics.compute_dtype(fast.dtype)
    pulled = lax.add(slow.astype(dtype), lax.mul(numerics.scalar(alpha, dtype),
                                                  lax.sub(fast, slow).astype(dtype))).astype(fast.dtype)
    return jnp.where(started, pulled, fast)


def lookahead_sync(state: LookaheadState, params: Any, grads: Any = None, *,
                   alpha: ScalarOrSchedule) -> tuple[Any, LookaheadState]:
    """timm's `Lookahead.sync_lookahead()` on a `lookahead` state: every param with a gradient
    in `grads` (timm: `p.grad is not None`; None: every param) is synced now, whatever the step,

        slow = fast (its first sync) | slow + alpha * (fast - slow);   param = slow

    and `(new params, new state)` are returned (the step counter `lookahead_step` is unchanged, as
    timm's). `alpha`: the `lookahead`'s own (timm's group `lookahead_alpha`; the state does not
    hold it, so it is required here; a schedule is read at the steps taken). Pure; usually called once before evaluating, as timm's training loop does."""
    treedef = jax.tree.structure(params, is_leaf=is_none)
    present = params if grads is None else grads
    a = numerics.resolve(alpha, state.group.lookahead_step)
    slow_state = state.slow
    synced = select_present(slow_state.synced.map(numerics.safe_increment), slow_state.synced, present, params)
    ps, gs = jax.tree.leaves(params, is_leaf=is_none), treedef.flatten_up_to(present)
    slows = treedef.flatten_up_to(slow_state.lookahead_slow_buff)
    started = iter([c > 0 for c in slow_state.synced])
    new_p, new_slow = [], []
    for p, g, s in zip(ps, gs, slows):
        was_started = None if p is None else next(started)
        if p is None or g is None:
            new_p.append(p)
            new_slow.append(s)
            continue
        slow_new = _pulled(p, s, was_started, a)
        new_p.append(slow_new)
        new_slow.append(slow_new)
    return treedef.unflatten(new_p), state._replace(slow=LookaheadSlowState(treedef.unflatten(new_slow), synced))
