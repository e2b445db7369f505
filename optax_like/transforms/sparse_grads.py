"""Sparse (COO) gradient leaves for torch's dense optimizers.

torch.optim.SGD and torch.optim.Adagrad take sparse `grad`s; here a gradient leaf may be a
`jax.experimental.sparse.BCOO` (no batch dimensions) or an `optax_like.RowSparseGrad`, the two
forms SparseAdam takes (see `optax_like.transforms.sparse_adam`). `scale_by_adagrad` runs
torch's sparse path on such a leaf; `optax_like.sgd` densifies them (`densify_sparse_grads`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import sparse as jsparse

from optax_like.core import numerics
from optax_like.core import validation as v
from optax_like.core.tree import check_same_structure, is_none
from optax_like.transforms.sparse_adam import RowSparseGrad, check_sparse_updates as _check_sparse_structure


def _wide_dtype(dtype) -> jnp.dtype:
    """The dtype torch's host scalar math maps to here: float64 under x64, else float32."""
    return jnp.promote_types(numerics.float_dtype(), dtype)


def _real_dtype(dtype) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def _array_dtype(x) -> jnp.dtype:
    """The float dtype of an array hyperparameter (the default float dtype for integers)."""
    dtype = jnp.asarray(numerics.plain(x)).dtype
    return dtype if jnp.issubdtype(dtype, jnp.floating) else numerics.float_dtype()


# ------------------------------------------------------------------------------------------
# Sparse gradient leaves (torch's `grad.is_sparse`) for the dense optimizers
# ------------------------------------------------------------------------------------------


def is_sparse_leaf(x: Any) -> bool:
    """True for a sparse gradient leaf: a BCOO, a RowSparseGrad (or another JAXSparse, refused
    with a TypeError when read)."""
    return isinstance(x, (jsparse.JAXSparse, RowSparseGrad))


def _sparse_or_none(x: Any) -> bool:
    return x is None or is_sparse_leaf(x)


def has_sparse_grads(updates: Any) -> bool:
    """Whether any leaf of `updates` is a sparse gradient (decided while tracing: a leaf's type,
    never its values)."""
    return any(is_sparse_leaf(x) for x in jax.tree.leaves(updates, is_leaf=_sparse_or_none))


def check_sparse_grads(params: Any, updates: Any) -> None:
    """`chain`'s check (structure, shapes, dtypes, naming the leaf path) for an `updates` tree
    with sparse leaves, which `chain` would flatten into their index and value arrays. A BCOO
    is checked by its shape and dtype; a RowSparseGrad's shape when it is read."""
    _check_sparse_structure(params, updates)
    treedef = jax.tree.structure(params, is_leaf=is_none)

    def placeholder(g, p):
        if isinstance(g, RowSparseGrad):
            return None if p is None else jax.ShapeDtypeStruct(jnp.shape(p), jnp.asarray(g.values).dtype)
        if isinstance(g, jsparse.JAXSparse):
            return jax.ShapeDtypeStruct(tuple(g.shape), g.dtype)
        return g

    leaves = [placeholder(g, p) for g, p in zip(treedef.flatten_up_to(updates), treedef.flatten_up_to(params))]
    check_same_structure(params, treedef.unflatten(leaves), "params", "updates")


def refuse_sparse_weight_decay(weight_decay: Any, message: str) -> None:
    """torch's error for a sparse gradient with `weight_decay != 0` (`message`, a RuntimeError).

    A traced or scheduled weight_decay cannot be read while tracing: it is refused too (the
    adapter traces only nonzero ones), with a note on the way out for `inject_hyperparams`. A
    concrete zero passes."""
    value = v.concrete_value(weight_decay)
    if value is None and v.maybe_nonzero(weight_decay):
        error = RuntimeError(message)  # torch's message, word for word; the way out as a note
        note = ("weight_decay is a traced value or a schedule here, so it may be nonzero: give it as a "
                "Python number (e.g. inject_hyperparams(..., static_args=('weight_decay',))) to step "
                "with sparse gradients.")
        add_note = getattr(error, "add_note", None)  # BaseException.add_note: Python >= 3.11
        if add_note is not None:
            add_note(note)
        else:  # Python 3.10: kept in __notes__ (not printed)
            setattr(error, "__notes__", [note])
        raise error
    if value:
        raise RuntimeError(message)


def sparse_grad_parts(grad: Any, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array, int]:
    """`(indices (nse, k), values (nse, *shape[k:]), k)` of a sparse gradient leaf for a param
    of `shape` (torch's `_indices().T`, `_values()`, `sparse_dim()`): a BCOO without batch
    dimensions addresses the leading `n_sparse` axes; a RowSparseGrad's `(nnz,)` indices are
    rows of axis 0, its `(nnz, k)` indices the leading k axes."""
    shape = tuple(shape)
    if isinstance(grad, jsparse.BCOO):
        if grad.n_batch != 0:
            raise ValueError(
                f"sparse gradients must be BCOO without batch dimensions, got n_batch={grad.n_batch} "
                "(use bcoo_update_layout(g, n_batch=0))."
            )
        if tuple(grad.shape) != shape:
            raise ValueError(f"sparse gradient of shape {tuple(grad.shape)} for a param of shape {shape}.")
        return grad.indices, grad.data, grad.n_sparse
    if isinstance(grad, RowSparseGrad):
        indices, values = jnp.asarray(grad.indices), jnp.asarray(grad.values)
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise TypeError(f"RowSparseGrad indices must be integers, got dtype {indices.dtype}.")
        if indices.ndim == 1:
            indices = indices[:, None]
        if indices.ndim != 2 or not 1 <= indices.shape[1] <= len(shape):
            raise ValueError(
                f"RowSparseGrad indices must have shape (nnz,) or (nnz, k) with 1 <= k <= {len(shape)}, "
                f"got {tuple(jnp.shape(grad.indices))}."
            )
        k = indices.shape[1]
        expected = (indices.shape[0], *shape[k:])
        if tuple(values.shape) != expected:
            raise ValueError(
                f"RowSparseGrad values must have shape {expected} for a param of shape {shape}, "
                f"got {tuple(values.shape)}."
            )
        return indices, values, k
    raise TypeError(f"sparse gradients must be BCOO or RowSparseGrad, got {type(grad).__name__}.")


def _densify(grad: Any, shape: tuple[int, ...], negative_zero: bool) -> jax.Array:
    indices, values, k = sparse_grad_parts(grad, shape)
    base = jnp.zeros(shape, values.dtype)
    if negative_zero:
        base = lax.neg(base)  # -0.0 (both parts for complex): `-0.0 + v` is `v`, bit for bit
    if values.shape[0] == 0:
        return base
    if k == 0:  # no sparse axes: every entry is a whole dense array
        return lax.add(base, jnp.sum(values, axis=0))
    lead = np.asarray(shape[:k], np.int32)
    idx = indices.astype(jnp.int32)
    valid = jnp.all((idx >= 0) & (idx < lead), axis=1, keepdims=True)
    idx = jnp.where(valid, idx, lead)  # outside the param (BCOO's padding): dropped, as in coalesce
    return base.at[tuple(idx[:, a] for a in range(k))].add(values, mode="drop")


def densify_sparse_grads(updates: Any, params: Any = None, *, negative_zero: bool = False) -> Any:
    """`updates` with each sparse leaf as a dense array: its entries summed at their indices
    (duplicates added, indices outside the param dropped) onto zeros, `+0.0` or, with
    `negative_zero`, `-0.0` (so that a later `negate` gives `+0.0` off the pattern). A
    RowSparseGrad needs the `params` for its shape."""
    if params is None:
        def shape_of(g):
            if isinstance(g, RowSparseGrad):
                raise ValueError("a RowSparseGrad gradient needs the params: call update(updates, state, params).")
            return tuple(g.shape)

        return jax.tree.map(
            lambda g: _densify(g, shape_of(g), negative_zero) if is_sparse_leaf(g) else g,
            updates, is_leaf=_sparse_or_none)
    treedef = jax.tree.structure(params, is_leaf=is_none)
    leaves = [
        _densify(g, tuple(jnp.shape(p)), negative_zero) if is_sparse_leaf(g) and p is not None else g
        for g, p in zip(treedef.flatten_up_to(updates), treedef.flatten_up_to(params))
    ]
    return treedef.unflatten(leaves)


def negate_sparse_aware(updates: Any) -> Any:
    """`negate()`'s `-u` for every leaf, a sparse leaf's values negated (its indices kept)."""

    def neg(g):
        if g is None:
            return None
        if isinstance(g, jsparse.BCOO):
            return jsparse.BCOO((lax.neg(g.data), g.indices), shape=g.shape,
                                indices_sorted=g.indices_sorted, unique_indices=g.unique_indices)
        if isinstance(g, RowSparseGrad):
            return RowSparseGrad(g.indices, jnp.negative(g.values))
        if isinstance(g, jsparse.JAXSparse):
            return g  # refused when read
        return jnp.negative(g)

    return jax.tree.map(neg, updates, is_leaf=_sparse_or_none)


__all__ = [
    "check_sparse_grads", "densify_sparse_grads", "has_sparse_grads", "is_sparse_leaf",
    "negate_sparse_aware", "refuse_sparse_weight_decay", "sparse_grad_parts",
]
