"""`scale_by_sgdp`: timm.optim.SGDP's whole step (Heo et al., 2021): SGD with momentum whose
update loses its radial component on scale-invariant weights (AdamP's `projection`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics, validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import STARTED, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.transforms.adamp import projection, refuse_complex_projection
from optax_like.transforms.caution import cautious


class ScaleBySgdpState(NamedTuple):
    momentum: Any  # momentum buffer, params-shaped (timm's state['momentum'], zeros at the start)
    count: LeafScalars  # per-leaf number of updates (timm creates a param's entry at its first gradient)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleBySgdpState,
    buffers=("momentum",),
    internal={"count": STARTED, "schedule_count": STEPS_TAKEN},
    started="count",
)


def scale_by_sgdp(
    lr: ScalarOrSchedule = 1e-3,
    momentum: ScalarOrSchedule = 0.0,
    dampening: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    eps: ScalarOrSchedule = 1e-8,
    delta: ScalarOrSchedule = 0.1,
    wd_ratio: ScalarOrSchedule = 0.1,
    *,
    nesterov: bool = False,
    caution: bool = False,
) -> GradientTransformation:
    """SGDP's step, learning rate and decay included, in timm's order of operations:

        b   <- momentum * b + (1 - dampening) * g          (b starts at zeros)
        d    = g + momentum * b  if nesterov  else  b
        d   <- projection(p, g, d)  (params of >= 2 dimensions; AdamP's, `transforms.adamp`),
               r = wd_ratio if it projected, else 1;  d masked by caution on the others
        p   <- p * (1 - lr * weight_decay * r / (1 - momentum))        (weight_decay != 0)
        p   <- p - lr * d

    The block emits the whole step (the decay depends on the projection): `(p * c - p) - lr * d`.
    The decay factor is timm's Python float64 expression for host numbers (momentum = 1 with a
    decay divides by zero, as timm's). Complex params of fewer than 2 dimensions are computed on
    as complex numbers, as timm does; complex matrices are refused with torch's error (its cosine
    similarity is real only), and with caution every complex param (torch's `>`). A leaf whose
    update is None is skipped with its state untouched.
    """
    nesterov, caution = bool(nesterov), bool(caution)
    decays = validation.maybe_nonzero(weight_decay)

    def init(params):
        refuse_complex_projection(params, caution)
        return ScaleBySgdpState(momentum=zeros_like(params), count=init_counts(params),
                                schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_sgdp needs the params: call update(updates, state, params).")
        h = hyperparams(state.schedule_count, lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, eps=eps, delta=delta, wd_ratio=wd_ratio)
        host_decay = numerics.is_host_scalar(h.weight_decay)

        def keep(ratio_one: bool, dtype):
            """timm's `1. - lr * weight_decay * wd_ratio / (1 - momentum)` (wd_ratio: 1. or the
            argument), float64 host math rounded once; where a traced weight_decay is 0: 1."""
            if ratio_one:
                factor = numerics.host_or_traced(lambda lr_, wd, mu: 1. - lr_ * wd * 1. / (1 - mu),
                                                 h.lr, h.weight_decay, h.momentum, dtype=dtype)
            else:
                factor = numerics.host_or_traced(lambda lr_, wd, ratio, mu: 1. - lr_ * wd * ratio / (1 - mu),
                                                 h.lr, h.weight_decay, h.wd_ratio, h.momentum, dtype=dtype)
            if host_decay:
                return factor
            return jnp.where(numerics.scalar(h.weight_decay, dtype) != 0, factor, jnp.ones((), dtype))

        def math(leaf, g, buf, p):
            dtype = leaf.dtype
            g, buf, p = leaf.as_complex(g, buf, p)
            mu = numerics.scalar(h.momentum, dtype)
            buf = buf * mu + numerics.one_minus(h.dampening, dtype) * g
            d = g + mu * buf if nesterov else buf
            projected = None
            if leaf.like.ndim > 1 and leaf.like.size:  # an empty matrix: nothing to project (deviations)
                d, projected = projection(p, g, d, h.delta, h.eps, caution)
            elif caution:
                d = cautious(d, g)
            u = -numerics.scalar(h.lr, dtype) * d
            if decays:
                factor = keep(True, dtype) if projected is None else jnp.where(
                    projected, keep(False, dtype), keep(True, dtype))
                u = (p * factor - p) + u
            return leaf.as_real(u, buf)

        return per_param_update(state, updates, math, buffers=("momentum",), inputs=(params,), counts=None,
                                step_field="count")

    return GradientTransformation(init, update)


__all__ = ["ScaleBySgdpState", "scale_by_sgdp"]
