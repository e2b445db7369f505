"""Whose order a param group's leaves are in: the order the user listed, or JAX's.

torch matches a state saved without names by position, in the order the params were listed
(its registration order for `model.parameters()`). JAX flattens a dict in sorted key order and
any other pytree node by its flatten rule, so the leaves of a params tree need not be in the
saver's order. `order_issue` says why a group's order may not be the user's; the arrays named
from such a tree (by `optim.named_parameters`, and by the param-groups helpers that name a
params tree: timm's and HF's grouping, rules' plans) are remembered here (`remember_listed`), so
that a group built from them later, as bare arrays or `(name, param)` pairs, knows it too and a
state saved without names is not loaded onto it by position (optim/optimizer.py).

The groups' order too: a helper that orders its groups by the first appearance of their params
in its listing (timm's `param_groups_layer_decay`) remembers it (`remember_grouped`), so that
with the model's names interop.torch puts them in the order timm builds from the model's listing
(`first_param_blocks`), and without names a state is not loaded onto them by position
(`group_order_issues`).

The functional core never reads this; it lives here (not in `optax_like.optim`) so that
`optax_like.param_groups` can record its listings without importing the adapter.
"""

from __future__ import annotations

import collections
import itertools
import weakref
from typing import Any, NamedTuple, Sequence, cast

import jax

from optax_like.core.tree import is_named_pair, param_name

__all__ = ["NAMED_PARAMETERS", "GroupOrder", "Listing", "first_param_blocks", "group_order", "group_order_issues",
           "listing", "order_issue", "remember_grouped", "remember_listed"]

NAMED_PARAMETERS = "optim.named_parameters"  # the `by` of `optim.named_parameters`' listings


class Listing(NamedTuple):
    """How an array was listed: `why` its order is JAX's (None: the tree's order was the
    user's), `by` what listed it last, and whether `optim.named_parameters` listed it."""

    why: str | None
    by: str
    by_named_parameters: bool


class _ArrayNotes:
    """Notes about array objects, each kept while its array lives (by identity: a weak
    reference; an array that cannot be referenced weakly, a NumPy scalar, is not noted)."""

    def __init__(self):
        self._notes: dict[int, tuple[Any, Any]] = {}  # id(array) -> (weak reference, note)

    def get(self, leaf: Any) -> Any:
        entry = self._notes.get(id(leaf))
        return None if entry is None or entry[0]() is not leaf else entry[1]

    def put(self, leaf: Any, note: Any) -> None:
        key = id(leaf)
        try:
            ref = weakref.ref(leaf, lambda _, key=key: self._notes.pop(key, None))
        except TypeError:
            return
        self._notes[key] = (ref, note)


# the arrays listed from a user's tree: their `Listing`
_listed = _ArrayNotes()


def listing(leaf: Any) -> Listing | None:
    """How `leaf` (an array object) was listed from a tree, or None if it was not."""
    return _listed.get(leaf)


def remember_listed(leaf: Any, why: str | None, by: str) -> None:
    """Records that `by` listed `leaf` from a tree whose order is JAX's for the reason `why`
    (None: the user's). The latest listing's reason is kept; once listed by
    `optim.named_parameters`, an array stays marked so (its warning, see
    `listed_by_named_parameters` in optim/_names.py)."""
    old = listing(leaf)
    named = by == NAMED_PARAMETERS or (old is not None and old.by_named_parameters)
    _listed.put(leaf, Listing(why, by, named))


def order_issue(tree: Any, leaves: Any = ()) -> str | None:
    """Why the leaf order of a param group's `tree` may not be the order the user (and torch, the
    saver) knows, or None when it is the user's own.

    The order is the user's where they listed it: lists, tuples, OrderedDicts (and namedtuples),
    as torch's params are listed. It is JAX's where JAX chose it: a dict of several keys (its
    leaves in sorted key order, `'10.weight'` before `'2.weight'`; a torch model registers
    `weight` before `bias`), any other pytree node of several children (flax/equinox modules:
    their flatten order), and arrays in `leaves` that were listed from such a tree (by
    `optim.named_parameters`, or by a param-groups helper given the tree: see
    `remember_listed`). A state saved without names cannot be matched to such a group by
    position, whatever order the dict was built in."""

    def walk(node, path):
        if node is None or is_named_pair(node):
            return None
        where = f"the {{}} at {path!r}" if path else "the params {}"
        if isinstance(node, (list, tuple, collections.OrderedDict)):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            children = [(str(k), v) for k, v in items]
        elif type(node) in (dict, collections.defaultdict):
            if len(node) > 1:
                shown = ", ".join(repr(k) for k in sorted(node, key=str)[:4])
                return (f"{where.format('dict')} has several keys, which JAX orders by sorted key ({shown}"
                        f"{', ...' if len(node) > 4 else ''}), not in the saver's (torch's: registration) order")
            children = [(str(k), v) for k, v in node.items()]
        else:
            flat = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)[0]
            if len(flat) == 1 and flat[0][0] == ():
                return None  # a leaf
            if len(flat) > 1:
                return (f"{where.format(type(node).__name__)} is a pytree node whose leaves JAX orders "
                        "by its flatten rule, which need not be the saver's (torch's: registration) order")
            children = [(param_name(p), v) for p, v in flat]
        for key, child in children:
            found = walk(child, f"{path}.{key}" if path else key)
            if found:
                return found
        return None

    found = walk(tree, "")
    if found is not None:
        return found
    for leaf in leaves:
        listed = listing(leaf) if leaf is not None else None
        if listed is not None and listed.why is not None:
            return f"its params were listed by {listed.by} in JAX's order ({listed.why})"
    return None


class GroupOrder(NamedTuple):
    """How a helper ordered the param groups it built from one listing of params: by the first
    appearance of each group's first param in that listing (timm's `param_groups_layer_decay`
    makes a group when it meets its first param in `model.named_parameters()`). `token` tells
    the listings apart (one per call), `by` is the helper, `why` why the listing's order is
    JAX's (None: the user's order); `first`: the listing position of the group's first param."""

    token: int
    by: str
    why: str | None
    first: int


# the arrays a helper grouped: their `GroupOrder`, `first` their own position in the listing
_grouped = _ArrayNotes()
_tokens = itertools.count()


def remember_grouped(leaves: Any, by: str, why: str | None) -> None:
    """Records that `by` put `leaves` (the arrays of all the groups it built from one listing,
    in that listing's order, which is JAX's for the reason `why`, or the user's: None) into
    groups ordered by the first appearance of their params, so that a torch state's groups
    (built from the model's order) are matched to these by the model's names, not by position."""
    token = next(_tokens)
    for position, leaf in enumerate(leaves):
        _grouped.put(leaf, GroupOrder(token, by, why, position))


def group_order(leaves: Any) -> GroupOrder | None:
    """The `GroupOrder` that all of `leaves` (a group's arrays; None entries skipped) were
    grouped by (`first`: the earliest of their positions), or None (some were not, or not by
    the same listing)."""
    found = None
    for leaf in leaves:
        if leaf is None:
            continue
        order = _grouped.get(leaf)
        if order is None:
            return None
        if found is None:
            found = order
        elif found[:3] != order[:3]:
            return None
        elif order.first < found.first:
            found = order
    return found


def first_param_blocks(orders: Sequence[GroupOrder | None]) -> list[list[int]]:
    """The indices of the groups (of one optimizer, whose groups' `GroupOrder`s are `orders`)
    that one helper ordered by the first appearance of their params in one listing, a block of
    several groups per listing (a single group has no order to get wrong), where they are
    still in that order (groups rearranged since are the user's order, not the helper's)."""
    blocks: dict[int, list[int]] = {}
    for g, order in enumerate(orders):
        if order is not None:
            blocks.setdefault(order.token, []).append(g)
    out = []
    for block in blocks.values():
        firsts = [cast(GroupOrder, orders[g]).first for g in block]
        if len(block) > 1 and all(a < b for a, b in zip(firsts, firsts[1:])):
            out.append(block)
    return out


def group_order_issues(orders: Sequence[GroupOrder | None]) -> list[str | None]:
    """Per group (of one optimizer, whose groups' `GroupOrder`s are `orders`), why its position
    among the groups may not be the saver's (torch's), or None: a helper ordered it, among
    other groups, by the first appearance of their params in a listing in JAX's order (timm's
    layer decay on a params dict lists 'a.bias' first where the model registers 'z.weight'
    first). A state saved without names cannot be matched to such groups by position."""
    out: list[str | None] = [None] * len(orders)
    for block in first_param_blocks(orders):
        for g in block:
            order = orders[g]
            if order is not None and order.why is not None:
                out[g] = (f"{order.by} ordered the groups by their first params in JAX's order ({order.why}), "
                          "not the saver's (torch's: registration) order")
    return out
