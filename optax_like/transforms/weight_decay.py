"""Weight decay, coupled (torch's `grad += wd * p`) and decoupled (AdamW's `p *= 1 - lr*wd`)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.tree import is_none, update_leaves
from optax_like.core.torch_layout import declare_torch_state, STEPS_TAKEN
from optax_like.transforms.combine import masked


class WeightDecayState(NamedTuple):
    count: jax.Array  # updates applied so far (for scheduled weight decay / lr)


declare_torch_state(
    WeightDecayState,
    internal={"count": STEPS_TAKEN},
)


def _weight_decay_transform(leaf_fn, hyper_values) -> GradientTransformation:
    def init(params):
        del params
        return WeightDecayState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs the params: call update(updates, state, params).")
        values = [numerics.resolve(v, state.count) for v in hyper_values]

        def leaf(u, p):
            return leaf_fn(u, p, *values), p

        updates, _ = update_leaves(leaf, updates, params)
        return updates, WeightDecayState(numerics.safe_increment(state.count))

    return GradientTransformation(init, update)


def decoupled_decay_alpha(decay_lr: Any, weight_decay: Any, dtype) -> Any:
    """timm's `-wd_scale * weight_decay` in `dtype` (the alpha of `p.add_(p, alpha=...)`, for
    transforms that decay inside their own step: ADOPT, LaProp): float64 host math for host
    numbers, rounded once."""
    if numerics.is_host_scalar(decay_lr) and numerics.is_host_scalar(weight_decay):
        return numerics.scalar(-(float(decay_lr) * float(weight_decay)), dtype)
    return -(numerics.scalar(decay_lr, dtype) * numerics.scalar(weight_decay, dtype))


def decoupled_decay_keep(lr: Any, weight_decay: Any, dtype) -> Any:
    """torch's `1 - lr * weight_decay` in `dtype` (the factor of `param.mul_(...)`): float64 host
    math for host numbers, rounded once; in `dtype` for traced ones."""
    return numerics.host_or_traced(lambda a, b: 1 - a * b, lr, weight_decay, dtype=dtype)


def _with_mask(tx, mask):
    return tx if mask is None else masked(tx, mask)


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Union[Any, Callable[[Any], Any], None] = None,
) -> GradientTransformation:
    """Coupled L2 weight decay: `u <- u + weight_decay * p` (torch's `grad.add(param, alpha=wd)`).

    Placed before the adaptive scaling, as in torch's SGD/Adam/RMSprop/... `weight_decay`.
    `mask` (tree of bools or function of params) restricts it to some leaves. A None update
    (for a leaf, a subtree or the whole tree) is no gradient: it stays None (torch skips a param
    whose `.grad` is None); with no gradient at all the state is returned as it is.
    """

    def leaf(u, p, wd):
        dtype = numerics.compute_dtype(jnp.result_type(u, p))
        return lax.add(numerics.cast(u, dtype), lax.mul(numerics.scalar(wd, dtype), numerics.cast(p, dtype)))

    inner = _weight_decay_transform(leaf, [weight_decay])

    def update(updates, state, params=None):
        if all(u is None for u in jax.tree.leaves(updates, is_leaf=is_none)):
            return updates, state  # no gradient at all: nothing to decay, no step counted
        if params is not None:  # a None standing for a params subtree: one None per leaf
            updates = jax.tree.map(lambda u, p: jax.tree.map(lambda _: None, p) if u is None else u,
                                   updates, params, is_leaf=is_none)
        return inner.update(updates, state, params)

    return _with_mask(GradientTransformation(inner.init, update), mask)


def add_decoupled_weight_decay(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 1e-2,
    mask: Union[Any, Callable[[Any], Any], None] = None,
) -> GradientTransformation:
    """Decoupled weight decay, torch AdamW's `p <- p * (1 - lr * wd)`, as an update.

    Emits `u + (p * c - p)` with `c = 1 - lr * wd`, so `apply_updates` gives `p * c + u`; place
    it *after* the adaptive scaling and learning rate (its `u` is the already-scaled step).
    Like torch, `c` is formed in float64 for host scalars and rounded once to the compute dtype.
    The decayed param is written `p - (1 - c) * p` (`1 - c` is exact for c in [0.5, 1]): it
    equals torch's rounded `p * c` whether or not XLA's CPU backend contracts the multiply-add
    into an FMA (which it does inside fusions), and `p * c - p` is then exact, so the step
    rounds like torch's `param.mul_(c)` followed by `param.add_(u)`. (`u - lr*wd*p` drifts by
    about 1e-6 relative over 50 float32 steps at lr=1e-3, wd=1e-2: the rounding of `c` and of
    `p * c` are both systematic parts of torch's result.)
    """

    def leaf(u, p, lr, wd):
        dtype = numerics.compute_dtype(jnp.result_type(u, p))
        keep = decoupled_decay_keep(lr, wd, dtype)
        p = numerics.cast(p, dtype)
        decayed = lax.sub(p, lax.mul(1 - keep, p))
        return lax.add(numerics.cast(u, dtype), lax.sub(decayed, p))

    return _with_mask(_weight_decay_transform(leaf, [learning_rate, weight_decay]), mask)
