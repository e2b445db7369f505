"""`scale_by_sparse_adam`: torch.optim.SparseAdam's masked Adam, for row-sparse gradients.

Sparse gradients
----------------
A gradient leaf may be given in either of two sparse forms (a dense array is rejected with
torch's RuntimeError, as torch rejects dense gradients):

- `jax.experimental.sparse.BCOO` with no batch dimensions (`n_batch == 0`): `indices` of shape
  `(nse, n_sparse)` address the leading `n_sparse` axes of the param, `data` of shape
  `(nse, *param.shape[n_sparse:])` holds the values. This is what sparse autodiff
  (`sparse.grad`, `sparse.sparsify`) produces, and what `BCOO.fromdense` gives.
- `RowSparseGrad(indices, values)`: `indices` of shape `(nnz,)` are rows of the param's first
  axis (an embedding table's ids), `values` of shape `(nnz, *param.shape[1:])`; `indices` of
  shape `(nnz, k)` address the leading `k` axes instead, like BCOO.

Both forms are torch's `sparse_coo_tensor` (`indices` transposed). Duplicate indices are summed
first (torch's `coalesce()`); an index outside the param (BCOO's padding convention) is
ignored. The number of entries is a static shape, so a jitted step compiles once per nnz.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import check_same_structure, is_none, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, INT_STEP, STEPS_TAKEN

DENSE_GRAD_MESSAGE = "SparseAdam does not support dense gradients, please consider Adam instead"


class RowSparseGrad(NamedTuple):
    """A row-sparse gradient: `param[indices[i]] += values[i]` for each entry i (a pytree).

    `indices`: int array `(nnz,)` (rows of axis 0) or `(nnz, k)` (the leading k axes);
    `values`: `(nnz, *param.shape[k:])`. Duplicates are summed; out-of-range indices are ignored.
    """

    indices: jax.Array
    values: jax.Array


class ScaleBySparseAdamState(NamedTuple):
    exp_avg: Any  # first moment, params-shaped; only touched entries ever change
    exp_avg_sq: Any  # second moment
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled betas


declare_torch_state(
    ScaleBySparseAdamState,
    buffers=("exp_avg", "exp_avg_sq"),
    scalars={"step": INT_STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def is_sparse_grad(x: Any) -> bool:
    """True for the sparse gradient forms this module accepts (BCOO, RowSparseGrad)."""
    return isinstance(x, (jsparse.BCOO, RowSparseGrad))


def _sparse_or_none(x: Any) -> bool:
    return x is None or is_sparse_grad(x) or isinstance(x, jsparse.JAXSparse)


def check_sparse_updates(params: Any, updates: Any) -> None:
    """Raises a ValueError unless `updates` has `params`' structure, sparse gradients as leaves.

    (`chain`'s own check flattens a sparse gradient into its index and value arrays, so the
    sparse optimizer checks structure here and hands its chain no params.) Per-leaf shapes
    are checked when the leaf is read.
    """
    reference = jax.tree.structure(params, is_leaf=is_none)
    if jax.tree.structure(updates, is_leaf=_sparse_or_none) != reference:
        placeholders = jax.tree.map(
            lambda g: None if g is None else jax.ShapeDtypeStruct((), jnp.float32),
            updates,
            is_leaf=_sparse_or_none,
        )
        check_same_structure(params, placeholders, "params", "updates")
        raise ValueError(f"updates do not have the structure of params ({reference}).")


def check_dense_real_params(params: Any) -> None:
    """torch's construction checks: no sparse params, no complex params (indices as [group, i])."""
    leaves = jax.tree.leaves(params, is_leaf=lambda x: x is None or isinstance(x, jsparse.JAXSparse))
    leaves = [x for x in leaves if x is not None]
    sparse_params = [[0, i] for i, x in enumerate(leaves) if isinstance(x, jsparse.JAXSparse)]
    if sparse_params:
        raise ValueError(
            f"Sparse params at indices {sparse_params}: SparseAdam requires dense parameter tensors"
        )
    complex_params = [[0, i] for i, x in enumerate(leaves) if jnp.iscomplexobj(x)]
    if complex_params:
        raise ValueError(
            f"Complex params at indices {complex_params}: SparseAdam does not support complex parameters"
        )


def _coo_parts(grad: Any, shape: tuple[int, ...]):
    """(indices (nnz, k), values (nnz, *shape[k:]), k) of a sparse gradient for a param of `shape`
    (`transforms.sparse_grads.sparse_grad_parts`, with SparseAdam's messages)."""
    from optax_like.transforms.sparse_grads import sparse_grad_parts  # (that module imports this one)

    if isinstance(grad, jsparse.BCOO) and grad.n_batch != 0:
        raise ValueError(
            f"SparseAdam takes BCOO gradients without batch dimensions, got n_batch={grad.n_batch} "
            "(use bcoo_update_layout(g, n_batch=0))."
        )
    if isinstance(grad, (jsparse.BCOO, RowSparseGrad)):
        return sparse_grad_parts(grad, shape)
    if isinstance(grad, jsparse.JAXSparse):
        raise TypeError(f"SparseAdam takes BCOO or RowSparseGrad gradients, got {type(grad).__name__}.")
    raise RuntimeError(DENSE_GRAD_MESSAGE)


def coalesce(indices: jax.Array, values: jax.Array, shape: tuple[int, ...]):
    """torch's `coalesce()` with a static size: returns `(rows, summed)`.

    `rows` (nnz,) are the distinct flat row ids over the leading `k = indices.shape[1]` axes,
    padded with `R = prod(shape[:k])` (out of range, so gathers fill and scatters drop); an
    out-of-range input index also maps to R. `summed` holds each row's summed values.
    """
    nnz, k = indices.shape
    lead = shape[:k]
    num_rows = int(np.prod(lead, dtype=np.int64))
    if num_rows >= np.iinfo(np.int32).max:
        raise ValueError(f"SparseAdam supports at most 2**31 - 2 rows, got {num_rows}.")
    idx = indices.astype(jnp.int32)
    strides = np.cumprod((1,) + tuple(lead[::-1]))[:-1][::-1] if k else np.zeros((0,), np.int64)
    flat = jnp.sum(idx * jnp.asarray(np.asarray(strides, np.int32)), axis=1) if k else jnp.zeros((nnz,), jnp.int32)
    valid = jnp.all((idx >= 0) & (idx < jnp.asarray(np.asarray(lead, np.int32))), axis=1) if k else jnp.ones((nnz,), bool)
    flat = jnp.where(valid, flat, num_rows)
    rows, inverse = jnp.unique(flat, size=nnz, fill_value=num_rows, return_inverse=True)
    summed = jax.ops.segment_sum(values, inverse.reshape(-1), num_segments=nnz)
    return rows, summed, num_rows


def scale_by_sparse_adam(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    maximize: bool = False,
    learning_rate: ScalarOrSchedule | None = None,
) -> GradientTransformation:
    """SparseAdam's direction (without the learning rate), at the touched entries only.

    With `g` the coalesced (duplicate-summed) sparse gradient, negated if `maximize`, and `I` its
    entries, torch's `_functional.sparse_adam` order of operations:

        t    <- t + 1                                   (every step the leaf has a gradient)
        m[I] <- m[I] + (g - m[I]) * (1 - b1)
        v[I] <- v[I] + (g*g - v[I]) * (1 - b2)
        u[I]  = (m[I] / (sqrt(v[I]) + eps)) * sqrt(1 - b2^t) / (1 - b1^t)
        u     = +0.0 elsewhere

    `m`, `v` (and so the params) outside `I` are never written: they stay bit-identical. The
    emitted `u` is dense (params-shaped) so that `apply_updates` can use it; it is +0.0 outside
    `I`, which `scale_by_learning_rate` (lr > 0) turns into -0.0, and `p + (-0.0) == p` bit for
    bit (signed zeros and infinities included; subnormal params are flushed to zero by XLA's
    CPU arithmetic, as in every `apply_updates`). A gradient with no entries still counts a step (as in torch). `maximize` lives here
    rather than in a `negate()` block because `negate` cannot see through a sparse gradient.

    With `learning_rate` given, the emitted `u` is the whole step, torch's
    `-step_size * m[I] / (sqrt(v[I]) + eps)` with `step_size = lr * sqrt(1 - b2^t) / (1 - b1^t)`
    (-0.0 outside `I`): `sparse_adam` uses it for an array lr (torch's Tensor lr), whose
    `step_size` torch computes, and rounds, in the lr's dtype.
    """

    def init(params):
        check_dense_real_params(params)
        return ScaleBySparseAdamState(
            exp_avg=zeros_like(params),
            exp_avg_sq=zeros_like(params),
            step=init_counts(params),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps, lr=learning_rate)

        @numerics.once_per_step
        def correction(t, wide):
            """sqrt(1 - beta2^t) / (1 - beta1^t), in `wide` (torch's step_size factor)."""
            return jnp.sqrt(numerics.bias_correction(h.b2, t, wide)) / numerics.bias_correction(h.b1, t, wide)

        @numerics.once_per_step
        def step_size(t, wide):
            """torch's `lr * sqrt(bc2) / bc1`: the bias corrections are Python floats (`wide`),
            the products are rounded in the lr's dtype (a Tensor lr stays a tensor)."""
            lr_dtype = jnp.result_type(numerics.plain(h.lr))
            lr_dtype = lr_dtype if jnp.issubdtype(lr_dtype, jnp.floating) else numerics.float_dtype()
            bc2_sqrt = jnp.sqrt(numerics.bias_correction(h.b2, t, wide)).astype(lr_dtype)
            return (numerics.scalar(h.lr, lr_dtype) * bc2_sqrt) / numerics.bias_correction(h.b1, t, wide).astype(lr_dtype)

        # Untouched entries step by +0.0 (a trailing `-lr` makes it -0.0), or by -0.0 when the
        # step includes the lr: `p + (-0.0)` is `p` bit for bit, signed zeros included.
        outside = 0.0 if learning_rate is None else -0.0

        def math(leaf, g, m, v, t):
            # Sparse gradients: the leaf's arrays arrive as stored (`views=False`).
            shape = tuple(m.shape)
            indices, values, k = _coo_parts(g, shape)
            dtype = leaf.dtype
            if values.size == 0:  # torch: "Skip update for empty grad" (the step still counts)
                return jnp.full(shape, outside, dtype), m, v
            values = values.astype(dtype)
            if maximize:
                values = -values
            rows, g_rows, num_rows = coalesce(indices, values, shape)
            dense = shape[k:]
            m2 = m.reshape((num_rows, *dense))
            v2 = v.reshape((num_rows, *dense))
            old_m = m2.at[rows].get(mode="fill", fill_value=0).astype(dtype)
            old_v = v2.at[rows].get(mode="fill", fill_value=0).astype(dtype)
            new_m = old_m + (g_rows - old_m) * numerics.one_minus(h.b1, dtype)
            new_v = old_v + (g_rows * g_rows - old_v) * numerics.one_minus(h.b2, dtype)
            wide = jnp.promote_types(dtype, numerics.float_dtype())
            direction = new_m / (jnp.sqrt(new_v) + numerics.scalar(h.eps, dtype))
            if learning_rate is None:
                u_rows = direction * correction(t, wide).astype(dtype)
            else:
                u_rows = (-step_size(t, wide)).astype(dtype) * direction
            u = jnp.full((num_rows, *dense), outside, dtype).at[rows].set(u_rows, mode="drop")
            m2 = m2.at[rows].set(new_m.astype(m.dtype), mode="drop")
            v2 = v2.at[rows].set(new_v.astype(v.dtype), mode="drop")
            return u.reshape(shape), m2.reshape(shape), v2.reshape(shape)

        return per_param_update(state, updates, math, buffers=("exp_avg", "exp_avg_sq"), views=False)

    return GradientTransformation(init, update)


__all__ = [
    "RowSparseGrad",
    "ScaleBySparseAdamState",
    "is_sparse_grad",
    "scale_by_sparse_adam",
]
