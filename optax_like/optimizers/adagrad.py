"""torch.optim.Adagrad as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs, ScalarOrSchedule
from optax_like.transforms.sparse_grads import (
    check_sparse_grads,
    has_sparse_grads,
    negate_sparse_aware,
    refuse_sparse_weight_decay,
)
from optax_like.transforms.adagrad import scale_by_adagrad
from optax_like.transforms.combine import chain
from optax_like.transforms.scaling import negate
from optax_like.transforms.weight_decay import add_decayed_weights

SPARSE_WEIGHT_DECAY_MESSAGE = "weight_decay option is not compatible with sparse gradients"


def adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: ScalarOrSchedule = 0,
    weight_decay: ScalarOrSchedule = 0,
    initial_accumulator_value: ScalarOrSchedule = 0,
    eps: ScalarOrSchedule = 1e-10,
    foreach=None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    fused=None,
) -> GradientTransformation:
    """Adagrad (Duchi et al., 2011), as torch.optim.Adagrad computes it:

        g_t   <- -g_t                                   if maximize
        g_t   <- g_t + weight_decay * p                 if weight_decay != 0
        clr    = lr / (1 + (t - 1) * lr_decay)          (t: the param's own step count)
        sum_t  = sum_{t-1} + g_t^2                      (sum_0 = initial_accumulator_value)
        p     <- p - clr * g_t / (sqrt(sum_t) + eps)    (eps outside the square root)

    The chain is `negate -> add_decayed_weights -> scale_by_adagrad`; there is no trailing
    `scale_by_learning_rate` because torch's decayed rate depends on each param's step count
    and is rounded once as `-clr` (see `scale_by_adagrad`). `foreach`, `fused` and
    `differentiable` select torch kernels and are accepted and ignored.

    Sparse gradients: a gradient leaf may be a `jax.experimental.sparse.BCOO` (or an
    `optax_like.RowSparseGrad`), torch's sparse COO `grad`; it takes torch's sparse branch (see
    `scale_by_adagrad`: duplicates summed, only the touched entries of `sum` and the params
    change). As in torch, a sparse gradient with a weight_decay that may be nonzero raises
    `RuntimeError("weight_decay option is not compatible with sparse gradients")` (a traced
    or scheduled weight_decay counts as nonzero; torch's raising step has already counted the
    param's step and updated the params before it, ours changes nothing). torch counterpart:
    `torch.optim.Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0,
    initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
    differentiable=False, fused=None)`. lr, lr_decay, weight_decay and eps may be schedules
    `count -> value`; initial_accumulator_value is read at `init`.
    """
    del foreach, differentiable, fused
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(lr_decay, "lr_decay", v.nonnegative, "Invalid lr_decay value: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    v.check(
        initial_accumulator_value,
        "initial_accumulator_value",
        v.nonnegative,
        "Invalid initial_accumulator_value value: {}",
    )
    v.check(eps, "eps", v.nonnegative, "Invalid epsilon value: {}")

    accumulate = scale_by_adagrad(lr, lr_decay, initial_accumulator_value, eps)
    inner = chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if v.maybe_nonzero(weight_decay) else []),
        accumulate,
    )

    def update(updates, state, params=None, **extra_args):
        if not has_sparse_grads(updates):  # dense gradients: the chain, as it is
            return inner.update(updates, state, params, **extra_args)
        # torch's sparse branch: weight decay refused, `-grad` for maximize, then the accumulator
        # (`negate` and the chain's checks would read a sparse leaf as its index and value arrays).
        refuse_sparse_weight_decay(weight_decay, SPARSE_WEIGHT_DECAY_MESSAGE)
        if params is not None:
            check_sparse_grads(params, updates)
        if maximize:
            updates = negate_sparse_aware(updates)
        updates, last = accumulate.update(updates, state[-1], params)
        return updates, (*state[:-1], last)  # `negate` is stateless: its state is kept

    return GradientTransformationExtraArgs(inner.init, update)
