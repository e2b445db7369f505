"""`scale_by_adagrad`: torch.optim.Adagrad's accumulator, decayed learning rate and step.

Also the helpers that let torch's dense optimizers take sparse (COO) gradient leaves, as
torch.optim.SGD and torch.optim.Adagrad do: a gradient leaf may be a
`jax.experimental.sparse.BCOO` (no batch dimensions) or an `optax_like.RowSparseGrad`, the two
forms SparseAdam takes (see `optax_like.transforms.sparse_adam`). `scale_by_adagrad` runs
torch's sparse path on such a leaf; `optax_like.sgd` densifies them (`densify_sparse_grads`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import sparse as jsparse

from optax_like.core import numerics
from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.tree import LeafScalars, check_same_structure, init_counts, is_none, map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.line_search import rounded
from optax_like.transforms.sparse_adam import RowSparseGrad, check_sparse_updates as _check_sparse_structure, coalesce
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN


class ScaleByAdagradState(NamedTuple):
    sum: Any  # accumulated squared gradients, params-shaped (torch's state['sum'])
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByAdagradState,
    buffers=("sum",),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    construction_args=("initial_accumulator_value",),
)


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

    A traced or scheduled weight_decay (`inject_hyperparams`) cannot be read while tracing: it
    is refused too, with a hint. A concrete zero passes."""
    value = v.concrete_value(weight_decay)
    if value is None and v.maybe_nonzero(weight_decay):
        raise RuntimeError(
            f"{message} (weight_decay is a traced value or a schedule here, so it may be nonzero: "
            "give it as a Python number, e.g. inject_hyperparams(..., static_args=('weight_decay',)), "
            "to step with sparse gradients)"
        )
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


def scale_by_adagrad(
    learning_rate: ScalarOrSchedule = 1e-2,
    lr_decay: ScalarOrSchedule = 0.0,
    initial_accumulator_value: ScalarOrSchedule = 0.0,
    eps: ScalarOrSchedule = 1e-10,
) -> GradientTransformation:
    """torch.optim.Adagrad's step, *including the learning rate and its sign* (descent):

        t     <- t + 1                                   (per leaf)
        clr    = lr / (1 + (t - 1) * lr_decay)           (host float64 in torch)
        sum_t  = sum_{t-1} + g * g                       (sum_0 = initial_accumulator_value)
        u      = (-clr * g) / (sqrt(sum_t) + eps)        (eps outside the square root)

    The learning rate lives inside this block, not in a trailing `scale_by_learning_rate`,
    because torch's decayed rate `clr` depends on each parameter's own step count (a leaf that
    missed an update keeps a smaller `t`) and torch rounds `-clr` once before multiplying,
    `param.addcdiv_(grad, std, value=-clr)`; both are reproduced here. `clr` is computed in
    float64 under x64 (torch's Python float), else float32; for an array `lr` (torch's Tensor
    lr, which torch keeps a tensor) the division is done in the array's dtype, as torch does.

    Complex params are treated as pairs of reals (torch's `view_as_real`); their accumulator
    starts at `initial_accumulator_value * (1 + 1j)`, as torch's `complex(v, v)`.
    `initial_accumulator_value` is read once, at `init` (a schedule is evaluated at count 0).
    Leaves whose update is None are skipped with their state untouched.

    Sparse gradients: a gradient leaf may be a `jax.experimental.sparse.BCOO` (no batch
    dimensions) or a `RowSparseGrad`; it takes torch's `grad.is_sparse` branch. With `g` the
    coalesced gradient (duplicate indices summed, indices outside the param dropped) and `I`
    its entries:

        sum[I] <- sum[I] + g * g
        u[I]    = (-clr) * (g / (sqrt(sum[I]) + eps))    (torch's `add_(g / std, alpha=-clr)`)
        u       = -0.0 elsewhere

    which rounds differently from the dense rule (`(-clr * g) / std`) on `I`; `sum` and (through
    `p + (-0.0)`) the params are left bit-identical outside `I`. It computes in the param's own
    dtype (complex params as complex numbers, as torch's sparse branch does: no real view). A
    gradient with no entries counts a step and changes nothing else. Which leaves are sparse is
    read from the gradient's type while tracing; the state is the same either way.
    Every product is rounded before it is added (`g * g` before the add to `sum`; `u` before
    `apply_updates` adds it), so the result does not depend on XLA's FMA contractions: `sum`
    is torch's bit for bit, and the params are those of torch's portable kernels
    (ATEN_CPU_CAPABILITY=default). torch's AVX2/AVX-512 kernels add `u` with a fused
    multiply-add, and torch's CPU `sqrt` is not always correctly rounded (~0.5% of float64
    values, measured), so the params there differ from ours by an ulp in some entries.
    """

    def init(params):
        count = jnp.zeros((), jnp.int32)
        start = numerics.resolve(initial_accumulator_value, count)

        def fill(z):
            real = numerics.scalar(start, jnp.real(z).dtype)
            value = jax.lax.complex(real, real) if jnp.iscomplexobj(z) else real
            return z + value.astype(z.dtype)

        return ScaleByAdagradState(
            sum=map_params(fill, zeros_like(params)),
            step=init_counts(params),
            schedule_count=count,
        )

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, lr=learning_rate, lr_decay=lr_decay, eps=eps)

        @numerics.once_per_step
        def decayed_lr(t, wide):
            """torch's `clr = lr / (1 + (step - 1) * lr_decay)`."""
            denom = 1 + (t.astype(wide) - 1) * numerics.scalar(h.lr_decay, wide)
            if numerics.is_host_scalar(h.lr):
                return numerics.scalar(h.lr, wide) / denom
            # torch keeps a Tensor lr a tensor: `lr / denom` is computed in lr's dtype.
            lr_dtype = _array_dtype(h.lr)
            return numerics.scalar(h.lr, lr_dtype) / denom.astype(lr_dtype)

        def math(leaf, g, acc, t):
            dtype = leaf.dtype
            clr = decayed_lr(t, _wide_dtype(dtype))
            acc = lax.add(acc, lax.mul(g, g))
            std = lax.add(lax.sqrt(acc), numerics.scalar(h.eps, dtype))
            return lax.div(lax.mul(numerics.cast(-clr, dtype), g), std), acc

        if not has_sparse_grads(updates):
            return per_param_update(state, updates, math, buffers=("sum",))

        def sparse_math(leaf, g, acc, t):
            """torch's `grad.is_sparse` branch, on the stored (complex: not viewed) arrays."""
            dtype = acc.dtype  # torch's sparse branch computes in the param's own dtype
            real = _real_dtype(dtype)
            clr = decayed_lr(t, _wide_dtype(real))
            shape = tuple(acc.shape)
            indices, values, k = sparse_grad_parts(g, shape)
            outside = lax.neg(jnp.zeros(shape, dtype))  # -0.0 (both parts): `p + (-0.0)` is `p`, bit for bit
            if values.shape[0] == 0:  # no entries: only the step counts (as in torch)
                return outside, acc
            values = numerics.cast(values, dtype)
            rows, g_rows, num_rows = coalesce(indices, values, shape)  # torch's coalesce()
            dense = shape[k:]
            acc2 = acc.reshape((num_rows, *dense))
            old = acc2.at[rows].get(mode="fill", fill_value=0)
            # state_sum.add_(sparse(values.pow(2))): the square rounded before the add (no FMA)
            new = lax.add(old, rounded(lax.mul(g_rows, g_rows)))
            std = lax.add(lax.sqrt(new), numerics.cast(numerics.scalar(h.eps, real), dtype))
            u_rows = lax.mul(numerics.cast(-clr, dtype), lax.div(g_rows, std))  # add_(g / std, alpha=-clr)
            # Scattered after rounding: `p + u` is never contracted into an FMA (see the docstring)
            u = outside.reshape((num_rows, *dense)).at[rows].set(u_rows, mode="drop")
            acc2 = acc2.at[rows].set(new, mode="drop")
            return u.reshape(shape), acc2.reshape(shape)

        def mixed_math(leaf, g, acc, t):
            # `views=False`: each leaf arrives as stored; dense leaves get `math` as above.
            if is_sparse_leaf(g):
                return sparse_math(leaf, g, acc, t)
            u, new_acc = math(leaf, leaf.load(g), leaf.load(acc), t)
            return leaf.emit(u), leaf.store(new_acc)

        return per_param_update(state, updates, mixed_math, buffers=("sum",), views=False)

    return GradientTransformation(init, update)


__all__ = [
    "ScaleByAdagradState",
    "check_sparse_grads",
    "densify_sparse_grads",
    "has_sparse_grads",
    "is_sparse_leaf",
    "negate_sparse_aware",
    "refuse_sparse_weight_decay",
    "scale_by_adagrad",
    "sparse_grad_parts",
]
