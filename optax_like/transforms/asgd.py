"""`scale_by_asgd`: torch.optim.ASGD's decayed step and its running average of the params."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts, leaf_scalars, select_present
from optax_like.core.tree import check_same_structure, is_none, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, FLOAT32, STEP, STEPS_TAKEN

# torch keeps `eta` and `mu` as 0-dim tensors of its default scalar dtype (`_get_scalar_dtype()`:
# float32 unless torch's default dtype is float64), so both are rounded to float32 every step,
# even for float64 params. We store them the same way.
ETA_MU_DTYPE = jnp.float32


class ScaleByASGDState(NamedTuple):
    eta: LeafScalars  # per-leaf current step size, float32 (torch's state['eta'])
    mu: LeafScalars  # per-leaf averaging weight, float32 (torch's state['mu'])
    ax: Any  # averaged params, params-shaped (torch's state['ax'])
    step: LeafScalars  # per-leaf step count (torch's state['step'])
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByASGDState,
    buffers=("ax",),
    scalars={"step": STEP, "eta": FLOAT32, "mu": FLOAT32},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def _wide_dtype(dtype) -> jnp.dtype:
    """The dtype torch's host scalar math maps to here: float64 under x64, else float32."""
    return jnp.promote_types(numerics.float_dtype(), dtype)


def scale_by_asgd(
    learning_rate: ScalarOrSchedule = 1e-2,
    lambd: ScalarOrSchedule = 1e-4,
    alpha: ScalarOrSchedule = 0.75,
    t0: ScalarOrSchedule = 1e6,
) -> GradientTransformation:
    """torch.optim.ASGD's step (Polyak & Juditsky, 1992), *including the learning rate*:

        t       <- t + 1                                       (per leaf)
        p'       = p * (1 - lambd * eta_{t-1}) - eta_{t-1} * g (torch: p.mul_(..).add_(g, alpha=-eta))
        ax_t     = ax_{t-1} + mu_{t-1} * (p' - ax_{t-1})   if mu_{t-1} != 1   else   p'
        eta_t    = lr / (1 + lambd * lr * t) ** alpha          (rounded to float32; computed
                                                               in lr's dtype for an array lr,
                                                               as torch's Tensor lr)
        mu_t     = 1 / max(1, t - t0)                          (rounded to float32)
        u        = p' - p                                      (0 where p' == p, +-inf too)

    eta_0 = lr (read at `init`) and mu_0 = 1; `eta` and `mu` are per-leaf float32 scalars, like
    torch's float32 0-dim state tensors; `ax` is the averaged params (see
    `optax_like.asgd_averaged_params`). The learning rate lives here because it enters through
    the `eta` recurrence, not linearly. Coupled weight decay is a preceding
    `add_decayed_weights` (as in `asgd`).

    The step multiplies the params, so this block needs `params` and emits `u = p' - p`;
    `apply_updates` then gives `p + (p' - p)`, which equals p' exactly whenever p' is within a
    factor of 2 of p (Sterbenz) and otherwise to an ulp of max(|p|, |p'|). It should be the
    last block of a chain (it computes the new params itself). Complex params are treated as
    pairs of reals. Leaves whose update is None are skipped with their state untouched.
    torch's `capturable=True` path (eta/mu recurrences in on-device tensors) has the same
    math; its float rounding of `1 - lambd * eta` differs from the default path's and is not
    reproduced.
    """

    def init(params):
        count = jnp.zeros((), jnp.int32)
        lr0 = numerics.resolve(learning_rate, count)
        return ScaleByASGDState(
            eta=leaf_scalars(params, numerics.scalar(lr0, ETA_MU_DTYPE), ETA_MU_DTYPE),
            mu=leaf_scalars(params, 1, ETA_MU_DTYPE),
            ax=zeros_like(params),
            step=init_counts(params),
            schedule_count=count,
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_asgd needs the params: call update(updates, state, params).")
        check_same_structure(state.ax, params, "the optimizer state", "params")
        h = hyperparams(state.schedule_count, lr=learning_rate, lambd=lambd, alpha=alpha, t0=t0)

        def math(leaf, g, ax, p, eta_mu):
            eta, mu = eta_mu
            dtype = leaf.dtype
            wide = _wide_dtype(dtype)
            eta_w = eta.astype(wide)
            decay = (1 - numerics.scalar(h.lambd, wide) * eta_w).astype(dtype)
            new_p = p * decay + (-eta_w).astype(dtype) * g
            new_ax = jnp.where(mu != 1, ax + (new_p - ax) * mu.astype(dtype), new_p)
            # p' == p (an infinite param stays infinite, as in torch) steps by 0, not inf - inf.
            return jnp.where(new_p == p, jnp.zeros((), dtype), new_p - p), new_ax

        new_updates, new_state = per_param_update(
            state, updates, math, buffers=("ax",), inputs=(params,),
            counts=state.eta.map(lambda eta, mu: (eta, mu), state.mu),
        )
        wide = _wide_dtype(ETA_MU_DTYPE)
        # Once for a shared step count, else per leaf (see `core.leaf_scalars.LeafScalars`).
        eta_mu = new_state.step.map(lambda t: _eta_mu(t.astype(wide), h.lr, h.lambd, h.alpha, h.t0, wide))
        eta = select_present(eta_mu.map(lambda pair: pair[0]), state.eta, updates, state.ax)
        mu = select_present(eta_mu.map(lambda pair: pair[1]), state.mu, updates, state.ax)
        return new_updates, new_state._replace(eta=eta, mu=mu)

    return GradientTransformation(init, update)


def _eta_mu(t, lr, lam, a, start, wide):
    """ASGD's new `(eta, mu)` for a leaf at step `t` (in `wide`), rounded to float32 like torch."""
    new_mu = 1 / jnp.maximum(1, t - numerics.scalar(start, wide))
    if numerics.is_host_scalar(lr):
        # torch: Python float math, `lr / ((1 + lambd * lr * step) ** alpha)`.
        if numerics.is_host_scalar(lam):
            lam_lr = numerics.scalar(np.float64(lam) * np.float64(lr), wide)
        else:
            lam_lr = numerics.scalar(lam, wide) * numerics.scalar(lr, wide)
        new_eta = numerics.scalar(lr, wide) / jnp.power(1 + lam_lr * t, numerics.scalar(a, wide))
    else:
        # torch keeps a Tensor lr a tensor: the same expression in lr's dtype.
        lr_dtype = jnp.asarray(numerics.plain(lr)).dtype
        lr_dtype = lr_dtype if jnp.issubdtype(lr_dtype, jnp.floating) else numerics.float_dtype()
        lr_c = jnp.asarray(numerics.plain(lr)).astype(lr_dtype)
        lam_lr = numerics.scalar(lam, lr_dtype) * lr_c
        base = 1 + lam_lr * t.astype(lr_dtype)
        # torch's float32 pow is correctly rounded; XLA's is not (1 ulp off near 1), so
        # take it in the widest float available and round once.
        pw = jnp.power(base.astype(wide), numerics.scalar(numerics.scalar(a, lr_dtype), wide))
        new_eta = lr_c / pw.astype(lr_dtype)
    return new_eta.astype(ETA_MU_DTYPE), new_mu.astype(ETA_MU_DTYPE)


def averaged_params(state: Any) -> Any:
    """The averaged params `ax` held by the (single) `scale_by_asgd` state inside `state`.

    `state` may be any optimizer state containing one `ScaleByASGDState` (a chain's tuple, an
    `inject_hyperparams` state, a masked state...). Returns `ax` with the params' structure.
    """
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ScaleByASGDState) or is_none(x))
        if isinstance(s, ScaleByASGDState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one ASGD state (ScaleByASGDState) in the optimizer state, found {len(found)}."
        )
    return found[0].ax


__all__ = ["ScaleByASGDState", "averaged_params", "scale_by_asgd"]
