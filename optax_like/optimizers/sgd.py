"""torch.optim.SGD as a functional optimizer."""

from __future__ import annotations

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs, ScalarOrSchedule
from optax_like.transforms.sparse_grads import (
    check_sparse_grads,
    densify_sparse_grads,
    has_sparse_grads,
    refuse_sparse_weight_decay,
)
from optax_like.transforms.combine import chain
from optax_like.transforms.momentum import trace
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights

# torch's `grad.add(param, alpha=weight_decay)` on a sparse grad
SPARSE_WEIGHT_DECAY_MESSAGE = "add(sparse, dense) is not supported. Use add(dense, sparse) instead."


def sgd(
    lr: ScalarOrSchedule = 1e-3,
    momentum: ScalarOrSchedule = 0,
    dampening: ScalarOrSchedule = 0,
    weight_decay: ScalarOrSchedule = 0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    foreach=None,
    differentiable: bool = False,
    fused=None,
) -> GradientTransformation:
    """Stochastic gradient descent with torch.optim.SGD's momentum rule.

        g_t <- -g_t                                   if maximize
        g_t <- g_t + weight_decay * p                 if weight_decay != 0
        b_1  = g_1;  b_t = momentum * b_{t-1} + (1 - dampening) * g_t     if momentum != 0
        g_t <- g_t + momentum * b_t  if nesterov  else  b_t
        p   <- p - lr * g_t

    The momentum buffer starts at the first (weight-decayed) gradient, undamped: the quirk
    that `optax.sgd(momentum=...)` does not reproduce. torch counterpart:
    `torch.optim.SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
    *, maximize=False, foreach=None, differentiable=False, fused=None)`. `foreach`, `fused` and
    `differentiable` select torch kernels; they are accepted and ignored (one XLA computation
    serves all). Any of lr, momentum, dampening, weight_decay may be a schedule `count -> value`.

    Sparse gradients: a gradient leaf may be a `jax.experimental.sparse.BCOO` (no batch
    dimensions) or an `optax_like.RowSparseGrad`, torch's sparse COO `grad`. It is summed into
    a dense gradient (duplicate indices added, +0.0 elsewhere) that takes the rule above, which
    is what torch's sparse arithmetic computes: with momentum 0 only the params at the
    gradient's entries change (the others get `p + (-0.0)`: every bit kept); with momentum,
    torch's buffer (a sparse tensor after a sparse first gradient) is held dense here, with
    the same values (and `state_dict()` gives it dense). A weight_decay that may be nonzero
    raises torch's `RuntimeError("add(sparse, dense) is not supported. Use add(dense, sparse)
    instead.")` (a traced or scheduled one counts as nonzero; torch's raising step has already
    updated the params before the sparse one, ours changes nothing). Differences from torch:
    torch adds duplicate entries (and the entries of its sparse buffer) to the params one at a
    time, ours sums them first (an ulp apart); after a sparse first gradient torch refuses a
    dense one, and with `nesterov` it refuses a sparse gradient after a dense first one (both
    `add(sparse, dense) is not supported`): the dense buffer here takes both, since the state's
    structure cannot depend on which gradients came.
    """
    del foreach, differentiable, fused
    v.check(lr, "lr", v.nonnegative, "Invalid learning rate: {}")
    v.check(momentum, "momentum", v.nonnegative, "Invalid momentum value: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "Invalid weight_decay value: {}")
    v.check_hyperparam(dampening, "dampening")
    if nesterov:
        mu, damp = v.concrete_value(momentum), v.concrete_value(dampening)
        if (mu is not None and mu <= 0) or (damp is not None and damp != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    inner = chain(
        *([negate()] if maximize else []),
        *([add_decayed_weights(weight_decay)] if v.maybe_nonzero(weight_decay) else []),
        *([trace(momentum, dampening, nesterov)] if v.maybe_nonzero(momentum) else []),
        scale_by_learning_rate(lr),
    )

    def update(updates, state, params=None, **extra_args):
        if has_sparse_grads(updates):
            refuse_sparse_weight_decay(weight_decay, SPARSE_WEIGHT_DECAY_MESSAGE)
            if params is not None:
                check_sparse_grads(params, updates)
            # Zeros off the pattern that `negate` turns into +0.0: `(-lr) * (+0.0)` is -0.0 and
            # `p + (-0.0)` is `p`, so untouched params keep every bit (-0.0 included).
            updates = densify_sparse_grads(updates, params, negative_zero=maximize)
        return inner.update(updates, state, params, **extra_args)

    return GradientTransformationExtraArgs(inner.init, update)
