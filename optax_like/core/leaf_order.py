"""Whose order a param group's leaves are in: the order the user listed, or JAX's.

torch matches a state saved without names by position, in the order the params were listed
(its registration order for `model.parameters()`). JAX flattens a dict in sorted key order and
any other pytree node by its flatten rule, so the leaves of a params tree need not be in the
saver's order. `order_issue` says why a group's order may not be the user's; the arrays named
from such a tree (by `optim.named_parameters`, and by the param-groups helpers that name a
params tree: timm's and HF's grouping, rules' plans) are remembered here (`remember_listed`), so
that a group built from them later, as bare arrays or `(name, param)` pairs, knows it too and a
state saved without names is not loaded onto it by position (optim/optimizer.py).

The functional core never reads this; it lives here (not in `optax_like.optim`) so that
`optax_like.param_groups` can record its listings without importing the adapter.
"""

from __future__ import annotations

import collections
import weakref
from typing import Any, NamedTuple

import jax

from optax_like.core.tree import is_named_pair, param_name

__all__ = ["NAMED_PARAMETERS", "Listing", "listing", "order_issue", "remember_listed"]

NAMED_PARAMETERS = "optim.named_parameters"  # the `by` of `optim.named_parameters`' listings


class Listing(NamedTuple):
    """How an array was listed: `why` its order is JAX's (None: the tree's order was the
    user's), `by` what listed it last, and whether `optim.named_parameters` listed it."""

    why: str | None
    by: str
    by_named_parameters: bool


# id(array) -> (weak reference, its Listing), for the arrays listed from a user's tree.
_listed: dict[int, tuple[Any, Listing]] = {}


def listing(leaf: Any) -> Listing | None:
    """How `leaf` (an array object) was listed from a tree, or None if it was not."""
    entry = _listed.get(id(leaf))
    if entry is None or entry[0]() is not leaf:
        return None
    return entry[1]


def remember_listed(leaf: Any, why: str | None, by: str) -> None:
    """Records that `by` listed `leaf` from a tree whose order is JAX's for the reason `why`
    (None: the user's). The latest listing's reason is kept; once listed by
    `optim.named_parameters`, an array stays marked so (its warning, see
    `listed_by_named_parameters` in optim/_names.py)."""
    key = id(leaf)
    old = listing(leaf)
    named = by == NAMED_PARAMETERS or (old is not None and old.by_named_parameters)
    try:
        ref = weakref.ref(leaf, lambda _, key=key: _listed.pop(key, None))
    except TypeError:
        return  # not weak-referenceable (a NumPy scalar): nothing to remember it by
    _listed[key] = (ref, Listing(why, by, named))


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
