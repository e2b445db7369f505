"""Combinators: `chain`, `named_chain`, `masked`, `multi_transform`.

Masking works by replacing the leaves a transformation must not see with `None`: every
transformation passes `None` leaves through and allocates no state for them, so a masked-out
leaf costs no memory and a param group's state holds exactly its own params.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, NamedTuple, Union, cast

import jax

from optax_like.core.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Params,
    with_extra_args_support,
)
from optax_like.core.tree import check_params, check_same_structure, is_none, is_params_placeholder


def _forward_extra_args(tx: GradientTransformation):
    return with_extra_args_support(tx).update


def chain(*transforms: GradientTransformation) -> GradientTransformationExtraArgs:
    """Applies `transforms` in sequence; the state is the tuple of their states.

    Extra keyword arguments given to `update` reach every inner transformation that accepts
    them (`GradientTransformationExtraArgs`). `init` rejects non-array leaves and `update`
    rejects updates whose structure or shapes differ from the params, naming the leaf path
    (at trace time, before any XLA error).
    """
    updates_fns = tuple(_forward_extra_args(t) for t in transforms)

    def init(params):
        check_params(params)
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None, **extra_args):
        if params is not None:
            check_same_structure(params, updates, "params", "updates")
        if len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transformations got a state with {len(state)} entries."
            )
        new_state = []
        for fn, s in zip(updates_fns, state):
            updates, s = fn(updates, s, params, **extra_args)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformationExtraArgs(init, update)


def named_chain(*transforms: tuple[str, GradientTransformation]) -> GradientTransformationExtraArgs:
    """Like `chain`, with a state that is a dict keyed by the given names."""
    names = [name for name, _ in transforms]
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain names must be unique, got {names}.")
    inner = chain(*(t for _, t in transforms))

    def init(params) -> Any:
        return dict(zip(names, cast(tuple, inner.init(params))))

    def update(updates, state, params=None, **extra_args) -> tuple[Any, Any]:
        updates, new = inner.update(updates, tuple(state[n] for n in names), params, **extra_args)
        return updates, dict(zip(names, cast(tuple, new)))

    return GradientTransformationExtraArgs(init, update)


# ------------------------------------------------------------------------------------------
# Masks
# ------------------------------------------------------------------------------------------

MaskOrFn = Union[Any, Callable[[Params], Any]]


def is_mask_fn(mask: MaskOrFn) -> bool:
    """Whether `mask` is a function of the params rather than a tree of bools (optax's rule):
    every leaf of `mask` is callable, and it has one. A callable pytree whose leaves are bools
    (an equinox module used as a mask) is a tree, not a function."""
    leaves = jax.tree.leaves(jax.tree.map(callable, mask))
    return len(leaves) > 0 and all(leaves)


def _full_mask(mask: MaskOrFn, params: Any) -> Any:
    """The mask as a tree of bools with `params`' structure (a prefix tree is broadcast)."""
    mask = mask(params) if is_mask_fn(mask) else mask

    def broadcast(m, sub):
        return jax.tree.map(lambda _: bool(m), sub)

    return jax.tree.map(broadcast, mask, params, is_leaf=is_none)


def select(tree: Any, mask: Any) -> Any:
    """`tree` with every leaf whose mask is False replaced by None. Mapped over the mask's
    structure: a leaf of `tree` may itself be a pytree (a BCOO sparse gradient)."""
    return jax.tree.map(lambda m, x: x if m else None, mask, tree)


def merge(selected: Any, others: Any, mask: Any) -> Any:
    """Leaf from `selected` where the mask is True, else from `others`."""
    return jax.tree.map(
        lambda m, a, b: a if m else b, mask, selected, others, is_leaf=is_none
    )


class MaskedState(NamedTuple):
    inner_state: Any


def masked(inner: GradientTransformation, mask: MaskOrFn) -> GradientTransformationExtraArgs:
    """Applies `inner` only to the leaves where `mask` is True; other updates pass unchanged.

    `mask` is a tree of bools with the params' structure (or a prefix of it, broadcast), or a
    function `params -> mask` (`is_mask_fn`). `inner` allocates state only for the selected
    leaves; a masked-out leaf is None in its state (optax's `MaskedNode()`).
    """
    inner_update = _forward_extra_args(inner)

    def init(params):
        if is_params_placeholder(params):  # optax.tree.map_params: no params to mask
            return MaskedState(inner.init(params))
        full = _full_mask(mask, params)
        return MaskedState(inner.init(select(params, full)))

    def update(updates, state, params=None, **extra_args):
        full = _full_mask(mask, updates if params is None else params)
        sub_params = None if params is None else select(params, full)
        new, inner_state = inner_update(select(updates, full), state.inner_state, sub_params, **extra_args)
        return merge(new, updates, full), MaskedState(inner_state)

    return GradientTransformationExtraArgs(init, update)


class MultiTransformState(NamedTuple):
    inner_states: dict


def multi_transform(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Union[Any, Callable[[Params], Any]],
) -> GradientTransformationExtraArgs:
    """Functional param groups: each leaf is transformed by `transforms[label]`.

    `param_labels` is a tree of labels with the params' structure (or a prefix of it), or a
    function `params -> labels`. Each group's transformation sees (and keeps state for) only
    its own leaves; a label with no transformation raises a ValueError naming it.
    """
    update_fns = {k: _forward_extra_args(t) for k, t in transforms.items()}

    def labels_for(params):
        labels = param_labels(params) if is_mask_fn(param_labels) else param_labels
        full = jax.tree.map(lambda l, sub: jax.tree.map(lambda _: l, sub), labels, params, is_leaf=is_none)
        used = set(jax.tree.leaves(full))
        missing = used - set(transforms)
        if missing:
            raise ValueError(
                f"param_labels use {sorted(map(str, missing))} but transforms only has "
                f"{sorted(map(str, transforms))}."
            )
        return full

    def mask_of(labels, key):
        return jax.tree.map(lambda l: l == key, labels)

    def init(params):
        if is_params_placeholder(params):  # optax.tree.map_params: no params to label
            return MultiTransformState({k: t.init(params) for k, t in transforms.items()})
        labels = labels_for(params)
        return MultiTransformState(
            {k: t.init(select(params, mask_of(labels, k))) for k, t in transforms.items()}
        )

    def update(updates, state, params=None, **extra_args):
        labels = labels_for(updates if params is None else params)
        new_updates = updates
        new_states = {}
        for key, fn in update_fns.items():
            mask = mask_of(labels, key)
            sub_params = None if params is None else select(params, mask)
            group_updates, new_states[key] = fn(
                select(updates, mask), state.inner_states[key], sub_params, **extra_args
            )
            new_updates = merge(group_updates, new_updates, mask)
        return new_updates, MultiTransformState(new_states)

    return GradientTransformationExtraArgs(init, update)
