"""The adapter's step: ONE jitted, donated XLA computation per `step()`, shared by every class.

`jitted_step(config, leaves, states, frozen, hypers, grads, args, skipped, amp, count)` runs `config.update`,
the step's rule: `gradient_update` (differentiate the closure if any, clip, update every group;
`Optimizer`'s) or LBFGS's (optim/lbfgs.py). `config` (a `Config`) is the jit key: the rule, the
closure, the params' `Layout` and each group's `GroupSpec`, and the options that shape the
program; `leaves` and `states` (per group) are donated. `init_state` builds a group's state.

Loss scaling (`optax_like.amp.GradScaler`, `config.amp`): "scale" (`step(loss_fn, ...,
grad_scaler=scaler)`): `amp` is the scale; the closure's loss is scaled, its gradients unscaled
and checked in the same computation; "skip" (`scaler.step(optimizer)` after `unscale_`): `amp`
is the scaler's `found_inf`. Either way a step with `found_inf` keeps params and state
bit-for-bit (a `lax.cond`), and `found_inf` is returned for the scaler's `update()`.
`count` (int32, or None when no group rounds stochastically) seeds the stochastic rounding of
bfloat16 params (`GroupSpec.apply`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from optax_like.core import numerics
from optax_like.core.base import apply_updates
from optax_like.core.gradients import value_and_grad
from optax_like.core.leaf_scalars import per_leaf_where_none
from optax_like.optim import clip_grad as _clip
from optax_like.transforms import mixed_precision
from optax_like.transforms.sparse_adam import RowSparseGrad

__all__ = ["Config", "GroupSpec", "Layout", "adapter_step", "gradient_update", "init_state", "jitted_step",
           "split_aux", "user_tree"]


class GroupSpec:
    """What the jitted step needs to know about one group at trace time (hashable)."""

    def __init__(self, factory, static_items, hyper_layout, zero_structural, state_dtypes=(), stochastic_rounding=None):
        self.factory = factory
        self.static_items = static_items  # tuple of (name, value)
        self.hyper_layout = hyper_layout  # tuple of (name, arity or 0 for scalars, array dtype or None)
        self.zero_structural = zero_structural  # tuple of names whose value is exactly 0
        self.state_dtypes = state_dtypes  # (("mu_dtype" | "nu_dtype", dtype name), ...): compact_state
        self.stochastic_rounding = stochastic_rounding  # None, or the seed of bfloat16 params' rounding
        self.key = (factory, static_items, hyper_layout, zero_structural, state_dtypes, stochastic_rounding)
        self._hash = hash(self.key)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return self is other or (isinstance(other, GroupSpec) and self.key == other.key)

    def build(self, hyper_rows):
        """The group's functional optimizer, with traced hyperparameters from `hyper_rows`: each
        a `numerics.PreciseScalar` (x with its host-computed float64 1 - x and log x, rounded),
        so the traced step reproduces torch's float64 scalar math."""
        kwargs, row = dict(self.static_items), 0
        for name, arity, array_dtype in self.hyper_layout:
            values = []
            for _ in range(max(arity, 1)):
                if array_dtype is not None:
                    # torch keeps a Tensor hyperparameter (lr=torch.tensor(0.01)) a tensor: its math
                    # runs in the tensor's dtype (SparseAdam's step_size), so ours gets an array of
                    # that dtype, not a float64-backed PreciseScalar.
                    values.append(hyper_rows[row, 0].astype(array_dtype))
                else:
                    values.append(numerics.PreciseScalar(hyper_rows[row, 0], hyper_rows[row, 1], hyper_rows[row, 2]))
                row += 1
            if name in self.zero_structural:
                kwargs[name] = 0.0
            else:
                kwargs[name] = tuple(values) if arity else values[0]
        if self.state_dtypes:
            return mixed_precision.compact_state(self.factory(**kwargs), **dict(self.state_dtypes))
        return self.factory(**kwargs)

    def apply(self, params, updates, group: int, count):
        """`params + updates`; bfloat16 params with the group's `stochastic_rounding` get
        `apply_updates_stochastic` with a key from (seed, step `count`, `group`)."""
        if self.stochastic_rounding is None:
            return apply_updates(params, updates)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.stochastic_rounding), count), group)
        return mixed_precision.apply_updates_stochastic(params, updates, key)


class Layout:
    """How the groups' leaves make the user's structure (hashable, built once per group added):
    `mode` "tree" (one group's tree), "groups" (the list of group trees) or "model" (the whole
    `model`, whose flat leaves `root_def` unflattens, group leaves at `positions`, -1 for a None
    leaf of a group's tree, frozen leaves elsewhere); `group_defs` the groups' treedefs."""

    __slots__ = ("mode", "root_def", "positions", "group_defs", "_key", "_hash")

    def __init__(self, mode: str, root_def: Any, positions: tuple, group_defs: tuple) -> None:
        self.mode, self.root_def, self.positions, self.group_defs = mode, root_def, positions, group_defs
        self._key = (mode, root_def, positions, group_defs)
        self._hash = hash(self._key)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return self is other or (isinstance(other, Layout) and self._key == other._key)


def user_tree(layout: Layout, per_group_leaves, frozen):
    """Per-group leaves in the user's structure (`Layout`), with `frozen` leaves in "model" mode."""
    if layout.mode == "model":
        flat = list(frozen)
        for group_positions, leaves in zip(layout.positions, per_group_leaves):
            for pos, leaf in zip(group_positions, leaves):
                if pos >= 0:  # -1: a None leaf of the group's tree (no position in `model`)
                    flat[pos] = leaf
        return layout.root_def.unflatten(flat)
    trees = [d.unflatten(l) for d, l in zip(layout.group_defs, per_group_leaves)]
    return trees[0] if layout.mode == "tree" else trees


def split_aux(out):
    """A closure's output as (loss, aux): a `(loss, aux)` pair carries aux (any pytree), wrapped
    in a 1-tuple so that an aux of None is told from no aux; a bare loss has aux None."""
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return out[0], (out[1],)
    return out, None


def closure_loss(layout: Layout, closure: Callable, frozen, args) -> Callable:
    """The closure as a function of the groups' leaves: `leaves -> (loss, aux)` (`split_aux`)."""
    return lambda leaves: split_aux(closure(user_tree(layout, leaves, frozen), *args))


def closure_gradients(loss_of: Callable, opt_leaves, states) -> tuple:
    """`((value, aux), grads, states)` for `loss_of(leaves) -> (value, aux)`: torch's `.grad` of
    every group's leaves (conjugated for complex params; None for a param the value does not
    reach, which the update skips, as torch skips `p.grad is None`) and the groups' states, each
    with per-leaf step counters where one of its leaves got None."""
    value, grads = value_and_grad(loss_of, has_aux=True, none_if_unreached=True)(tuple(opt_leaves))
    return value, grads, tuple(per_leaf_where_none(s, g, leaves) for s, g, leaves in zip(states, grads, opt_leaves))


class Config(NamedTuple):
    """The static part of a step (the jit key)."""

    update: Callable  # the rule: (config, leaves, states, frozen, hypers, grads, args, skipped, amp, count) -> outputs
    closure: Callable | None
    layout: Layout
    specs: tuple  # GroupSpec per group
    skip_nonfinite: bool = False
    clip: Any = None  # optim/clip_grad.py's check_step_clip
    amp: str | None = None  # loss scaling: None, "scale" or "skip" (see the module's docstring)
    # (fn, value) pairs: fn(flat gradients of every group, value) before the groups' updates (a
    # class's `cross_group` arguments, make_optimizer_class: timm Lamb's one clip over all groups)
    cross_group: tuple = ()


def _all_finite(grad) -> jax.Array:
    if isinstance(grad, RowSparseGrad):
        grad = grad.values
    elif isinstance(grad, jsparse.JAXSparse):
        grad = grad.data
    return jnp.all(jnp.isfinite(grad))


def gradient_update(config: Config, opt_leaves, states, frozen, hypers, grads, args, skipped, amp=None, count=None):
    """`Optimizer`'s rule: the closure's loss and gradients (when given, else the pending `grads`),
    unscaled (loss scaling), clipped, through the class's `cross_group` functions, then each
    group's update; -> ((loss, aux, grad_norm, found_inf), leaves, states, skipped)."""
    closure, layout, specs = config.closure, config.layout, config.specs
    loss = aux = None
    found_inf = amp if config.amp == "skip" else None
    if closure is not None:
        loss_and_aux = closure_loss(layout, closure, frozen, args)

        def loss_of(leaves):
            loss, aux = loss_and_aux(leaves)
            # torch's `scaler.scale(loss).backward()`; the step returns the loss itself
            return (mixed_precision.scale_loss(loss, amp) if config.amp == "scale" else loss), (loss, aux)

        (_, (loss, aux)), grads, states = closure_gradients(loss_of, opt_leaves, states)
        if config.amp == "scale":
            grads, found_inf = mixed_precision.unscale_grads(grads, amp)
    grads, grad_norm = _clip.apply_step_clip(config.clip, grads)
    def update(operands):
        opt_leaves, states, grads = operands
        for fn, value in config.cross_group:
            grads = _clip._regroup(grads, fn([g for group in grads for g in group], value))
        new_leaves, new_states = [], []
        for g, (spec, treedef) in enumerate(zip(specs, layout.group_defs)):
            tx = spec.build(hypers[g])
            params = treedef.unflatten(opt_leaves[g])
            updates = treedef.unflatten(grads[g])
            updates, state = tx.update(updates, states[g], params)
            params = spec.apply(params, updates, g, count)
            new_leaves.append(tuple(treedef.flatten_up_to(params)))
            new_states.append(state)
        return tuple(new_leaves), tuple(new_states)

    operands = (tuple(opt_leaves), tuple(states), tuple(grads))
    if not config.skip_nonfinite and found_inf is None:
        new_leaves, new_states = update(operands)
    else:
        # One flag for the whole step (all groups), as torch.amp.GradScaler skips a step: params
        # and state are kept bit-for-bit when any gradient has a nan or inf. A `cond`, not a
        # select: a skipped step runs no update kernels, a taken one no extra pass.
        take = jnp.asarray(True) if found_inf is None else found_inf == 0
        if config.skip_nonfinite:
            finite = jnp.all(jnp.stack([_all_finite(g) for group in grads for g in group if g is not None]
                                       or [jnp.asarray(True)]))
            skipped = skipped + jnp.where(finite, 0, 1).astype(skipped.dtype)
            take = take & finite

        def keep(ops):
            return ops[0], ops[1]

        new_leaves, new_states = jax.lax.cond(take, update, keep, operands)
    # found_inf goes back only when computed here: an operand passed straight through costs a copy
    return (loss, aux, grad_norm, found_inf if config.amp == "scale" else None), new_leaves, new_states, skipped


def reached_by_closure(layout: Layout, closure: Callable, opt_leaves, frozen, args) -> list[tuple[bool, ...]]:
    """Per group, per leaf: whether `closure`'s loss reaches the param (the step gives it a
    gradient; `core.gradients`' `none_if_unreached`). Abstract: `jax.eval_shape`, no computation."""
    loss_of = closure_loss(layout, closure, frozen, args)
    grads = jax.eval_shape(lambda leaves: value_and_grad(loss_of, has_aux=True, none_if_unreached=True)(leaves)[1],
                           tuple(tuple(group) for group in opt_leaves))
    return [tuple(g is not None for g in group) for group in grads]


def adapter_step(config: Config, opt_leaves, states, frozen, hypers, grads, args, skipped, amp=None, count=None):
    return config.update(config, opt_leaves, states, frozen, hypers, grads, args, skipped, amp, count)


# `skipped` is None unless skip_nonfinite: a non-donated scalar passed straight through the step
# made every step several times slower on CPU (measured: 26 -> 104 us for a 4-leaf SGD step).
jitted_step = jax.jit(adapter_step, static_argnums=(0,), donate_argnums=(1, 2))


@functools.partial(jax.jit, static_argnums=(0,))
def init_state(spec: GroupSpec, hyper_rows, params):
    # Traced hyperparameters give the chain the same blocks as in the step (a concrete 0 would
    # drop a block); init reads no values.
    return spec.build(hyper_rows).init(params)
