"""Stacked layers (a scan over layers): each slice along the leading axis is one layer.

A model whose blocks are stacked (`params["blocks"]["attn"]["qkv"]` of shape `(L, ...)`, from
`flax.linen.scan`, `nnx.vmap`, `equinox.filter_vmap`) names its layers `blocks.0`, ...,
`blocks.{L-1}` only implicitly. `unstacked_names` spells them out (`blocks.attn.qkv`'s slice `i`
is `blocks.{i}.attn.qkv`, the unstacked model's name), so timm's layer grouping, rules and
plans apply to the slices exactly as to the unstacked model; `layer_vectors` gives a group
entry (`lr_scale`) of each stacked leaf as a vector along the leading axis; and `unstacked(tx)`
runs an optimizer that matches params by name (`plan_transform`, `partition(rules, ...)`,
`create_optimizer(..., stacked=...)`) on the slices. The slices' numbers are the unstacked model's, bit for
bit (tests/param_groups/test_stacked.py), by construction: each slice is updated by the same
program as the unstacked layer. The cost is a slice and a stack of the updates per step (one
extra read and write of the stacked updates); the state holds one entry per layer, named as
the unstacked model's (so it exports to the torch model's state dict by name).
"""

from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core.base import GradientTransformationExtraArgs, with_extra_args_support
from optax_like.core.tree import is_none
from optax_like.param_groups._rules import named_leaves, param_name

__all__ = ["layer_vectors", "unstacked", "unstacked_names"]


def _stacked_prefix(name: str, stacked: Collection[str]) -> str | None:
    for prefix in stacked:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


def _slice_name(name: str, prefix: str, i: int) -> str:
    return f"{prefix}.{i}{name[len(prefix):]}"


def unstacked_names(params: Any, stacked: Collection[str]) -> list[tuple[str, Any]]:
    """The unstacked model's named params: every leaf under a `stacked` prefix becomes its
    slices along axis 0 (`blocks.attn.w` -> `blocks.0.attn.w`, ...: layer by layer, in the
    leaves' order within a layer), other leaves stay. Leaves may be arrays or shape structs."""
    out: list[tuple[str, Any]] = []
    pending: dict[str, list[tuple[str, Any]]] = {}
    for name, leaf in named_leaves(params):
        prefix = _stacked_prefix(name, stacked)
        if prefix is None:
            out.append((name, leaf))
            continue
        if prefix not in pending:
            pending[prefix] = []
            out.append((prefix, None))  # placeholder: the layers come where the stack first appears
        pending[prefix].append((name, leaf))
    result = []
    for name, leaf in out:
        if leaf is not None or name not in pending:
            result.append((name, leaf))
            continue
        leaves = pending[name]
        sizes: set[tuple[int, ...]] = {tuple(getattr(x, "shape", ()))[:1] for _, x in leaves}
        if len(sizes) != 1 or not next(iter(sizes)):
            raise ValueError(f"the leaves under the stacked prefix {name!r} must share a leading axis, got "
                             f"shapes {[tuple(getattr(x, 'shape', ())) for _, x in leaves]}.")
        (size,) = next(iter(sizes))
        for i in range(size):
            for leaf_name, x in leaves:
                result.append((_slice_name(leaf_name, name, i), jax.ShapeDtypeStruct(tuple(x.shape)[1:], x.dtype)))
    return result


def layer_vectors(groups: Sequence[Mapping], params: Any, stacked: Collection[str], key: str = "lr_scale",
                  default: float = 1.0) -> dict[str, np.ndarray]:
    """`{stacked leaf name: vector}`: each stacked leaf's `key` entry (timm's `lr_scale`) per
    slice along its leading axis, read from `groups` made for the unstacked names (the values
    are those groups' own floats). A slice in no group (frozen) reads 0."""
    of = {}
    for group in groups:
        for name, _ in group["params"]:
            of[name] = group.get(key, default)
    out = {}
    for name, leaf in named_leaves(params):
        prefix = _stacked_prefix(name, stacked)
        if prefix is not None:
            out[name] = np.array([of.get(_slice_name(name, prefix, i), 0.0) for i in range(leaf.shape[0])],
                                 dtype=np.float64)
    return out


def unstacked(inner, stacked: Collection[str]) -> GradientTransformationExtraArgs:
    """`inner` (made for the unstacked names, e.g. `plan_transform` of groups from
    `unstacked_names`) applied to stacked params: `init`/`update` split each stacked leaf into
    its layers, named as in the unstacked model, and stack the updates back."""
    inner_update = with_extra_args_support(inner).update

    def split(tree):
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)
        out, layout = {}, []
        for path, leaf in flat:
            name = param_name(path)
            prefix = _stacked_prefix(name, stacked) if leaf is not None else None
            if prefix is None or leaf is None:  # (prefix is None when leaf is)
                out[name] = leaf
                layout.append((name, None))
            else:
                names = [_slice_name(name, prefix, i) for i in range(leaf.shape[0])]
                out.update(zip(names, (leaf[i] for i in range(leaf.shape[0]))))
                layout.append((name, names))
        return out, (treedef, layout)

    def join(flat, structure):
        treedef, layout = structure
        leaves = [flat[name] if names is None else jnp.stack([flat[n] for n in names]) for name, names in layout]
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def init(params):
        return inner.init(split(params)[0])

    def update(updates, state, params=None, **extra_args):
        flat_updates, structure = split(updates)
        flat_params = None if params is None else split(params)[0]
        new, state = inner_update(flat_updates, state, flat_params, **extra_args)
        return join(new, structure), state

    return GradientTransformationExtraArgs(init, update)
