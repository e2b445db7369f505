"""`scale_by_adagrad`: torch.optim.Adagrad's accumulator, decayed learning rate and step
(and torch's sparse path for sparse gradient leaves: `transforms.sparse_grads`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import map_params, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.line_search import rounded
from optax_like.transforms.sparse_adam import coalesce
from optax_like.core.torch_layout import declare_torch_state, STEP, STEPS_TAKEN
from optax_like.transforms.sparse_grads import (
    _array_dtype, _real_dtype, _wide_dtype, has_sparse_grads, is_sparse_leaf, sparse_grad_parts,
)


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
    `apply_updates` adds it), so the result does not depend on XLA's FMA contractions, jitted
    or not: `sum` is torch's bit for bit, the params are torch's formula with every operation
    correctly rounded. torch's own params differ from that by an ulp in some entries: its
    AVX2/AVX-512 kernels add `u` with a fused multiply-add (its portable ones do not), and its
    CPU `sqrt` is not always correctly rounded (~0.5% of float64 values, measured).
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


__all__ = ["ScaleByAdagradState", "scale_by_adagrad"]
