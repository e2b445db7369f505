"""torch.optim.SparseAdam as a functional optimizer."""

from __future__ import annotations

from optax_like.core import numerics
from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs, ScalarOrSchedule
from optax_like.optimizers.adam import check_betas
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import scale_by_learning_rate
from optax_like.transforms.sparse_adam import (
    check_dense_real_params,
    check_sparse_updates,
    scale_by_sparse_adam,
)


def _positive(x: float) -> bool:
    return 0.0 < x


def sparse_adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    maximize: bool = False,
) -> GradientTransformation:
    """SparseAdam: Adam masked to the entries a sparse gradient touches (torch.optim.SparseAdam).

        g     <- coalesce(g)  (duplicates summed);  g <- -g if maximize;  I = entries of g
        t     <- t + 1
        m[I]  <- m[I] + (g - m[I]) * (1 - beta1)
        v[I]  <- v[I] + (g*g - v[I]) * (1 - beta2)
        p[I]  <- p[I] - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m[I] / (sqrt(v[I]) + eps)

    Entries outside `I` (params, `exp_avg`, `exp_avg_sq`) are left bit-identical. Gradient leaves
    must be sparse: a `jax.experimental.sparse.BCOO` (n_batch == 0) or an
    `optax_like.RowSparseGrad(indices, values)` (see `optax_like.transforms.sparse_adam`); a
    dense gradient raises torch's `RuntimeError("SparseAdam does not support dense gradients,
    please consider Adam instead")`, and complex or sparse params raise torch's ValueError at
    `init`. A `None` gradient leaf skips the param (state and step untouched). The step counter
    is per leaf and counts a step even for a gradient with no entries, as torch does.

    torch counterpart: `torch.optim.SparseAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    maximize=False)` (no keyword-only arguments, no kernel switches). torch's `step_size = lr *
    sqrt(bc2) / bc1` is applied here as two factors (`sqrt(bc2) / bc1`, then `-lr`): a rounding
    difference of an ulp; for an array lr (torch's Tensor lr) `step_size` is formed as torch
    does, in the lr's dtype (a float32 lr rounds it to float32, also for float64 params). lr,
    betas and eps may be schedules `count -> value`.
    """
    v.check(lr, "lr", _positive, "Invalid learning rate: {}")
    v.check(eps, "eps", _positive, "Invalid epsilon value: {}")
    check_betas(betas)
    if callable(lr) or numerics.is_python_number(lr):
        inner = chain(scale_by_sparse_adam(betas[0], betas[1], eps, maximize), scale_by_learning_rate(lr))
    else:  # torch's Tensor lr: step_size = lr * sqrt(bc2) / bc1 rounded in the lr's dtype
        inner = chain(scale_by_sparse_adam(betas[0], betas[1], eps, maximize, learning_rate=lr))

    def init(params):
        check_dense_real_params(params)
        return inner.init(params)

    def update(updates, state, params=None, **extra_args):
        # `chain` checks updates against params leaf by leaf and would flatten a sparse
        # gradient into its arrays: check the structure here; no block needs the params.
        if params is not None:
            check_sparse_updates(params, updates)
        return inner.update(updates, state, None, **extra_args)

    return GradientTransformationExtraArgs(init, update)
