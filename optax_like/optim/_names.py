"""Param names for the `optim` adapter: torch's `named_parameters` spelled over pytrees.

A leaf's name is its key path joined with dots, as torch's module names: `{'layer': [{'weight':
w}]}` names `w` `"layer.0.weight"`; a dict keyed by torch's names (`model.state_dict()`'s) keeps
them (`"10.weight"`). Names are what `optimizer.state_dict()["param_groups"][i]["param_names"]`
holds and what `load_state_dict` matches a saved state by.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax

from optax_like.core.tree import is_none

__all__ = ["named_parameters", "param_name"]


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def param_name(path) -> str:
    """A key path as torch spells a parameter name: `('layer', 0, 'weight')` -> `"layer.0.weight"`.
    A last `.value` attribute (how a flax.nnx Variable flattens) is dropped: `"dense.kernel"`."""
    path = tuple(path)
    if len(path) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
        path = path[:-1]
    return ".".join(_key_name(k) for k in path)


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
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]:
        if leaf is not None:
            name = param_name(path)
            yield (f"{prefix}.{name}" if prefix and name else prefix or name), leaf


def _is_named_pair(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


def split_named(params: Any) -> tuple[Any, list[str] | None]:
    """`params` as (tree, names): a list of `(name, array)` pairs becomes the list of arrays and
    their names (torch's named params); anything else is returned as is, with names None.
    A list that mixes pairs and bare params raises torch's ValueError."""
    if not isinstance(params, (list, tuple)) or not params:
        return params, None
    named = [_is_named_pair(item) for item in params]
    if not any(named):
        return params, None
    if not all(named):
        raise ValueError("all optimizer params should be with/without names. Some param names are missing")
    return [p for _, p in params], [n for n, _ in params]


def dict_order_issue(tree: Any) -> str | None:
    """Describes the first plain dict of `tree` with several keys, or None.

    JAX numbers a dict's leaves in sorted key order; a torch model numbers its params in
    registration order, which a dict's keys do not record (`{"bias": b, "weight": w}` is sorted,
    but nn.Linear registers weight first). So a state saved without names cannot be matched to
    such a tree by position, whatever order the dict was built in."""

    def walk(node, path):
        if type(node) is dict:
            keys = list(node)
            if len(keys) > 1:
                where = f"the dict at {path!r}" if path else "the params dict"
                shown = ", ".join(repr(k) for k in sorted(keys, key=str)[:4])
                return (f"{where} has several keys, which JAX orders by sorted key ({shown}"
                        f"{', ...' if len(keys) > 4 else ''}), not in the saver's (torch's: registration) order")
            items = ((str(k), v) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            items = ((str(i), v) for i, v in enumerate(node))
        else:
            return None
        for key, child in items:
            found = walk(child, f"{path}.{key}" if path else key)
            if found:
                return found
        return None

    return walk(tree, "")
