"""Param names for the `optim` adapter: torch's `named_parameters` spelled over pytrees.

A leaf's name is its key path joined with dots, as torch's module names: `{'layer': [{'weight':
w}]}` names `w` `"layer.0.weight"`; a dict keyed by torch's names (`model.state_dict()`'s) keeps
them (`"10.weight"`). Names are what `optimizer.state_dict()["param_groups"][i]["param_names"]`
holds and what `load_state_dict` matches a saved state by.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax

from optax_like.core.leaf_order import NAMED_PARAMETERS, listing, order_issue, remember_listed
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
    position: it asks for names instead (see `order_issue`, core/leaf_order.py; the param-groups
    helpers given a tree, `param_groups_weight_decay` and the like, remember their arrays so too).
    """
    issue = order_issue(tree)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]:
        if leaf is not None:
            name = param_name(path)
            remember_listed(leaf, issue, NAMED_PARAMETERS)
            yield (f"{prefix}.{name}" if prefix and name else prefix or name), leaf


def listed_by_named_parameters(leaves: Any) -> bool:
    """Whether some of `leaves` were yielded by `named_parameters` (from a tree the user has)."""
    for leaf in leaves:
        listed = listing(leaf) if leaf is not None else None
        if listed is not None and listed.by_named_parameters:
            return True
    return False


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
