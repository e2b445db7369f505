"""Pytree helpers: checks with leaf-path error messages, and `None`-aware maps.

Params may be any pytree of arrays: dicts, lists, tuples, NamedTuples, dataclass-style
modules. `None` marks a leaf that is not optimized (frozen, or filtered out of an
equinox/flax module with `eqx.filter(model, eqx.is_inexact_array)`); it passes through every
transformation. Any other non-array leaf (a Python callable, a string, an integer array) is
rejected with an error that names its path, rather than failing deep inside jax.

Buffers shaped and sharded like the params are allocated here (`zeros_like`, `full_like`);
per-parameter scalars (torch's `state['step']`) are `core.leaf_scalars.LeafScalars`.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import core as jax_core
import numpy as np


def is_none(x: Any) -> bool:
    return x is None


def path_str(path) -> str:
    """A leaf path as a user reads it: `['encoder']['layers'][0].w`."""
    return jax.tree_util.keystr(tuple(path)) or "<root>"


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


def is_named_pair(item: Any) -> bool:
    """A `(name, param)` pair, as torch >= 2.5's named params and `named_parameters()` give."""
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


def is_named_pairs(params: Any) -> bool:
    """A non-empty list (or tuple) of `(name, param)` pairs."""
    return isinstance(params, (list, tuple)) and bool(params) and all(is_named_pair(p) for p in params)


def is_params_placeholder(x: Any) -> bool:
    """Whether `x` is the placeholder `optax.tree.map_params` calls a transformation's `init`
    with, to find the params-shaped parts of its state (optax's `_ParamsPlaceholder`, a pytree
    node without leaves). Only optax makes one: without optax imported this is False."""
    module = sys.modules.get("optax.tree_utils._state_utils")
    placeholder = getattr(module, "_ParamsPlaceholder", None)
    return placeholder is not None and isinstance(x, placeholder)


def map_params(fn: Callable, tree: Any, *rest: Any) -> Any:
    """`jax.tree.map` that treats `None` as a leaf and maps it to `None`."""

    def f(x, *xs):
        if x is None:
            return None
        return fn(x, *xs)

    return jax.tree.map(f, tree, *rest, is_leaf=is_none)


def _is_array_like(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic)) or hasattr(x, "__jax_array__")


def check_params(params: Any, what: str = "params") -> None:
    """Raises a TypeError naming the first leaf that is not a float/complex array (or None)."""
    leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_none)[0]
    for path, leaf in leaves:
        if leaf is None:
            continue
        if isinstance(leaf, jax.ShapeDtypeStruct) or _is_array_like(leaf):
            dtype = jnp.dtype(leaf.dtype)
            if jnp.issubdtype(dtype, jnp.inexact):
                continue
            raise TypeError(
                f"optax_like optimizes floating-point or complex arrays, but {what} leaf "
                f"{path_str(path)} has dtype {dtype}. Replace leaves that are not optimized by "
                "None (e.g. eqx.filter(model, eqx.is_inexact_array))."
            )
        raise TypeError(
            f"{what} leaf {path_str(path)} is a {type(leaf).__name__}, not an array. Replace "
            "leaves that are not optimized by None (e.g. eqx.filter(model, "
            "eqx.is_inexact_array)) before calling init/update."
        )


def check_same_structure(reference: Any, other: Any, ref_name: str, other_name: str) -> None:
    """Raises a ValueError naming the first leaf path where two trees' structure or shape differ.

    `None` in `other` where `reference` has an array is allowed (a param without gradient);
    the converse is not.
    """
    ref_def = jax.tree.structure(reference, is_leaf=is_none)
    other_def = jax.tree.structure(other, is_leaf=is_none)
    if ref_def != other_def:
        ref_paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(reference, is_leaf=is_none)[0]]
        other_paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(other, is_leaf=is_none)[0]]
        missing = [p for p in ref_paths if p not in set(other_paths)]
        extra = [p for p in other_paths if p not in set(ref_paths)]
        detail = []
        if missing:
            detail.append(f"missing from {other_name}: {', '.join(missing[:5])}")
        if extra:
            detail.append(f"not in {ref_name}: {', '.join(extra[:5])}")
        if not detail:
            detail.append(f"{ref_name} is {ref_def}, {other_name} is {other_def}")
        raise ValueError(
            f"{other_name} do not have the structure of {ref_name} ({'; '.join(detail)})."
        )
    ref_leaves = jax.tree_util.tree_flatten_with_path(reference, is_leaf=is_none)[0]
    other_leaves = jax.tree.leaves(other, is_leaf=is_none)
    for (path, r), o in zip(ref_leaves, other_leaves):
        if r is None or o is None:
            continue
        if jnp.shape(r) != jnp.shape(o):
            raise ValueError(
                f"{other_name} leaf {path_str(path)} has shape {jnp.shape(o)} but the "
                f"{ref_name} leaf has shape {jnp.shape(r)}."
            )
        _check_leaf_dtype(path, r, o, ref_name, other_name)


def _leaf_dtype(x: Any):
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return None
    try:
        return jnp.dtype(dtype)
    except TypeError:
        return None


def _check_leaf_dtype(path, r: Any, o: Any, ref_name: str, other_name: str) -> None:
    """Raises a TypeError naming the leaf when `o` cannot be an update of `r`: an integer or
    bool leaf, or a complex leaf for a real one (the update would silently change the math or
    fail deep inside a transform). Floating precisions may differ (arithmetic promotes)."""
    rd, od = _leaf_dtype(r), _leaf_dtype(o)
    if rd is None or od is None or not jnp.issubdtype(rd, jnp.inexact):
        return
    if not jnp.issubdtype(od, jnp.inexact) or (
        jnp.issubdtype(od, jnp.complexfloating) and not jnp.issubdtype(rd, jnp.complexfloating)
    ):
        raise TypeError(
            f"{other_name} leaf {path_str(path)} has dtype {od} but the {ref_name} leaf has "
            f"dtype {rd}: {other_name} must be floating-point arrays (complex only for complex "
            f"{ref_name})."
        )


def num_leaves(tree: Any) -> int:
    """The number of non-None leaves."""
    return len([x for x in jax.tree.leaves(tree, is_leaf=is_none) if x is not None])


def update_leaves(fn: Callable, updates: Any, *trees: Any, counts=None):
    """Maps `fn` leaf-wise over `updates` and `trees` (params-shaped; None = not optimized).

    The first tree gives the structure. Where it and `updates` both have a leaf, calls
    `fn(update, *tree_leaves[, count])`, which returns `(new_update, *new_tree_leaves)`.
    Where `updates` is None the leaf is skipped (torch's `grad is None`): the update stays None
    and every tree leaf is returned unchanged. `counts` (a `core.leaf_scalars.LeafScalars`, or
    any sequence with one entry per non-None leaf) passes the leaf's entry as the last argument.
    Returns `(new_updates, *new_trees)`, each with the first tree's structure.
    """
    reference = trees[0]
    treedef = jax.tree.structure(reference, is_leaf=is_none)
    ref_leaves = jax.tree.leaves(reference, is_leaf=is_none)
    upd_leaves = treedef.flatten_up_to(updates)
    tree_leaves = [treedef.flatten_up_to(t) for t in trees]
    outs = [[] for _ in range(1 + len(trees))]
    index = 0
    for i, (r, u) in enumerate(zip(ref_leaves, upd_leaves)):
        olds = [t[i] for t in tree_leaves]
        if r is None or u is None:
            results = (None if r is not None else u, *olds)
        else:
            extra = (counts[index],) if counts is not None else ()
            results = fn(u, *olds, *extra)
        if r is not None:
            index += 1
        for out, value in zip(outs, results):
            out.append(value)
    return tuple(treedef.unflatten(out) for out in outs)


def _filled_tree(leaves: list, value: Any, dtype) -> list:
    """Arrays of `value` with each leaf's shape and sharding (dtype `dtype`, default the
    leaf's); None leaves stay None.

    Outside tracing `jnp.full_like` already keeps a committed array's sharding. Under `jit`
    the tracer's aval carries the sharding only on an Explicit mesh; on an Auto mesh
    `jnp.full_like` gives an unconstrained constant that XLA places on one device (or
    replicates). So under tracing each buffer is written as `select(False, p, value)`: an
    elementwise op of `p`, which both sharding-in-types (Explicit) and XLA's sharding
    propagation (Auto) give `p`'s sharding. XLA folds it to a broadcast after propagation
    (no runtime cost), and the result is exactly `value` whatever `p` holds (no `0 * nan`).
    The data dependence on `p` is also what `optax_like.sharding.state_shardings` reads to
    map state leaves to their params.
    """
    traced = isinstance(value, jax_core.Tracer) or any(isinstance(p, jax_core.Tracer) for p in leaves)
    if not traced:
        return [None if p is None else jnp.full_like(p, value, dtype=dtype) for p in leaves]
    srcs, fills, nevers = [], [], []
    for p in leaves:
        if p is None:
            continue
        p = jnp.asarray(p)
        target = jnp.dtype(p.dtype if dtype is None else dtype)
        src = p
        if jnp.iscomplexobj(src) and not jnp.issubdtype(target, jnp.complexfloating):
            src = jax.lax.real(src)
        src = jax.lax.convert_element_type(src, target)
        srcs.append(src)
        nevers.append(jax.lax.full_like(src, False, dtype=bool))
        fills.append(jnp.full_like(src, value) if isinstance(value, jax_core.Tracer) else jax.lax.full_like(src, value))
    selected = iter(_select_all(nevers, srcs, fills))
    return [None if p is None else next(selected) for p in leaves]


@jax.jit
def _select_all(preds: list, on_true: list, on_false: list) -> list:
    # `select(False, p, fill)` for every leaf of a tree inside one nested jit (jnp.where's
    # construction, once per tree instead of once per leaf: ~100 us of tracing per leaf): the
    # call boundary keeps XLA from folding the constant select before sharding propagation
    # (a bare select in the caller's computation loses `p`'s sharding on an Auto mesh).
    return [jax.lax.select(c, t, f) for c, t, f in zip(preds, on_true, on_false)]


def zeros_like(params: Any, dtype=None) -> Any:
    """Zero state buffers shaped and sharded like `params` (eager and under jit, on Auto and
    Explicit meshes); `dtype` defaults to each param's dtype; None stays None.

    Every optimizer allocates its params-shaped state through this function (or `full_like`),
    so that layout and sharding rules live in one place. Each call returns fresh buffers
    (no two state leaves share one, as donation requires).
    """
    return full_like(params, 0, dtype)


def full_like(params: Any, value, dtype=None) -> Any:
    """Like `zeros_like`, filled with `value` (a host scalar or a traced scalar)."""
    leaves, treedef = jax.tree.flatten(params, is_leaf=is_none)
    return treedef.unflatten(_filled_tree(leaves, value, dtype))
