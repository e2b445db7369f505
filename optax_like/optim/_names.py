"""Param names for the `optim` adapter: torch's `named_parameters` spelled over pytrees.

A leaf's name is its key path joined with dots, as torch's module names: `{'layer': [{'weight':
w}]}` names `w` `"layer.0.weight"`; a dict keyed by torch's names (`model.state_dict()`'s) keeps
them (`"10.weight"`). Names are what `optimizer.state_dict()["param_groups"][i]["param_names"]`
holds and what `load_state_dict` matches a saved state by.
"""

from __future__ import annotations

import collections
import weakref
from typing import Any, Iterator

import jax

from optax_like.core.tree import is_named_pair, is_none, param_name

__all__ = ["listed_by_named_parameters", "named_parameters", "order_issue", "param_name"]


def named_parameters(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yields `(name, leaf)` for the array leaves of `tree` in JAX's leaf order (torch's
    `Module.named_parameters`; `None` leaves, i.e. params that are not optimized, are skipped).

        no_decay = ("bias", "LayerNorm.weight")
        groups = [
            {"params": [(n, p) for n, p in optim.named_parameters(params) if not any(nd in n for nd in no_decay)],
             "weight_decay": 0.01},
            {"params": [(n, p) for n, p in optim.named_parameters(params) if any(nd in n for nd in no_decay)],
             "weight_decay": 0.0},
        ]
        opt = optim.AdamW(groups, lr=1e-3, model=params)

    Groups of `(name, param)` pairs are accepted directly (torch >= 2.5); with `model=`, the
    loss receives the whole tree. Keep only the leaves to get torch's `parameters()` idiom:
    `[p for n, p in named_parameters(tree) if ...]`.

    JAX's leaf order is not torch's registration order (a dict's keys are sorted: '10.weight'
    before '2.weight'). The arrays yielded here are remembered as listed in JAX's order, so an
    optimizer built from them, named or bare, never loads a state saved without names by
    position: it asks for names instead (see `order_issue`).
    """
    issue = order_issue(tree)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]:
        if leaf is not None:
            name = param_name(path)
            _remember_listed(leaf, issue)
            yield (f"{prefix}.{name}" if prefix and name else prefix or name), leaf


# id(array) -> (weak reference, why its order is JAX's or None), for the arrays named_parameters listed.
_listed: dict[int, tuple[Any, str | None]] = {}


def _remember_listed(leaf: Any, why: str | None) -> None:
    key = id(leaf)
    try:
        ref = weakref.ref(leaf, lambda _, key=key: _listed.pop(key, None))
    except TypeError:
        return  # not weak-referenceable (a NumPy scalar): nothing to remember it by
    _listed[key] = (ref, why)


def _listing(leaf: Any) -> tuple[bool, str | None]:
    entry = _listed.get(id(leaf))
    if entry is None or entry[0]() is not leaf:
        return False, None
    return True, entry[1]


def listed_by_named_parameters(leaves: Any) -> bool:
    """Whether some of `leaves` were yielded by `named_parameters` (from a tree the user has)."""
    return any(leaf is not None and _listing(leaf)[0] for leaf in leaves)


def split_named(params: Any) -> tuple[Any, list[str] | None]:
    """`params` as (tree, names): a list of `(name, array)` pairs becomes the list of arrays and
    their names (torch's named params); anything else is returned as is, with names None.
    A list that mixes pairs and bare params raises torch's ValueError."""
    if not isinstance(params, (list, tuple)) or not params:
        return params, None
    named = [is_named_pair(item) for item in params]
    if not any(named):
        return params, None
    if not all(named):
        raise ValueError("all optimizer params should be with/without names. Some param names are missing")
    return [p for _, p in params], [n for n, _ in params]


def order_issue(tree: Any, leaves: Any = ()) -> str | None:
    """Why the leaf order of a param group's `tree` may not be the order the user (and torch, the
    saver) knows, or None when it is the user's own.

    The order is the user's where they listed it: lists, tuples, OrderedDicts (and namedtuples),
    as torch's params are listed. It is JAX's where JAX chose it: a dict of several keys (its
    leaves in sorted key order, `'10.weight'` before `'2.weight'`; a torch model registers
    `weight` before `bias`), any other pytree node of several children (flax/equinox modules:
    their flatten order), and arrays in `leaves` that `named_parameters` listed from such a tree.
    A state saved without names cannot be matched to such a group by position, whatever order
    the dict was built in."""

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
        origin = _listing(leaf)[1] if leaf is not None else None
        if origin is not None:
            return f"its params were listed by optim.named_parameters in JAX's order ({origin})"
    return None
