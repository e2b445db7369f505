"""`scale_by_mars`: timm.optim.Mars's whole step (MARS, Yuan et al., 2024)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.torch_layout import INT_STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update, refuse_complex
from optax_like.transforms.caution import cautious, refuse_complex as refuse_complex_caution
from optax_like.transforms.trust_ratio import leaf_norm

MARS_TYPES = ("adamw", "lion")


class ScaleByMarsState(NamedTuple):
    exp_avg: Any  # first moment of the corrected gradient, params-shaped
    last_grad: Any  # the previous gradient, params-shaped
    exp_avg_sq: Any  # second moment (mars_type "adamw", and the 1-D AdamW path), params-shaped
    step: LeafScalars  # per-leaf step count (timm's state['step'], a Python int)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByMarsState,
    buffers=("exp_avg", "last_grad", "exp_avg_sq"),
    scalars={"step": INT_STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
)


def scale_by_mars(
    lr: ScalarOrSchedule = 3e-3,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.99,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    gamma: ScalarOrSchedule = 0.025,
    lr_1d_factor: ScalarOrSchedule = 1.0,
    b1_1d: ScalarOrSchedule = 0.9,
    b2_1d: ScalarOrSchedule = 0.99,
    *,
    mars_type: str = "adamw",
    optimize_1d: bool = False,
    caution: bool = False,
) -> GradientTransformation:
    """MARS's step, learning rate and decay included, in timm's order of operations
    (`_mars_single_tensor_step`), on params of >= 2 dimensions (and all with `optimize_1d`):

        t   <- t + 1
        c    = g  (t == 1),  else  g + gamma * b1 / (1 - b1) * (g - g_{t-1})    (variance reduction)
        c   <- c / max(1, ||c||)
        m    = b1 m + (1 - b1) c;   m~ = m masked by caution (the state keeps m)
        adamw:  v = b2 v + (1 - b2) c^2;   u = wd p + (m~ / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps)
        lion:   u = wd p + sign(m~)
        p   <- p - lr u

    and on the others AdamW with `(b1_1d, b2_1d)` on g itself and lr * lr_1d_factor. Every
    param stores its gradient (`last_grad`). The block emits the whole step (the decay is in
    the update). Complex params are computed on as complex numbers, as timm does (`c^2` and
    its root are complex; the lion type's sign and caution's mask are refused on them, torch's
    errors). A leaf whose update is None is skipped with its state untouched.
    """
    if mars_type not in MARS_TYPES:
        raise AssertionError("MARS type not supported")
    optimize_1d, caution = bool(optimize_1d), bool(caution)

    def init(params):
        if caution:
            refuse_complex_caution(params)
        if mars_type == "lion":
            refuse_complex(params, lambda dtype: NotImplementedError(
                "Unlike NumPy, torch.sign is not intended to support complex numbers. Please use torch.sgn instead."))
        return ScaleByMarsState(exp_avg=zeros_like(params), last_grad=zeros_like(params),
                                exp_avg_sq=zeros_like(params), step=init_counts(params),
                                schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_mars needs the params: call update(updates, state, params).")
        h = hyperparams(state.schedule_count, lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                        gamma=gamma, lr_1d_factor=lr_1d_factor, b1_1d=b1_1d, b2_1d=b2_1d)
        wide = numerics.float_dtype()

        def step_scalars(t, dtype):
            corrections = []
            for beta1, beta2 in ((h.b1, h.b2), (h.b1_1d, h.b2_1d)):
                corrections.append(numerics.bias_correction(beta1, t, dtype))
                corrections.append(numerics.cast(jnp.sqrt(numerics.bias_correction(beta2, t, wide)), dtype))
            return tuple(corrections)

        def math(leaf, g, m, last, v, p, t, scalars):
            dtype = leaf.dtype
            mars = optimize_1d or leaf.like.ndim >= 2
            g, m, last, v, p = leaf.as_complex(g, m, last, v, p)
            bc1, bc2_sqrt, bc1_1d, bc2_sqrt_1d = scalars
            wd, eps_ = numerics.scalar(h.weight_decay, dtype), numerics.scalar(h.eps, dtype)
            if mars:
                scale = numerics.host_or_traced(lambda c, b: c * (b / (1.0 - b)), h.gamma, h.b1, dtype=dtype)
                c = jnp.where(t == 1, g, (g - last) * scale + g)
                c = c / jnp.maximum(leaf_norm(jnp.abs(c)) if leaf.is_complex else leaf_norm(c), 1.0).astype(dtype)
                m = m * numerics.scalar(h.b1, dtype) + numerics.one_minus(h.b1, dtype) * c
                step = cautious(m, g) if caution else m
                if mars_type == "adamw":
                    v = v * numerics.scalar(h.b2, dtype) + numerics.one_minus(h.b2, dtype) * c * c
                    direction = (step / bc1) / (jnp.sqrt(v) / bc2_sqrt + eps_)
                else:
                    direction = jnp.sign(step)
                rate = numerics.scalar(h.lr, dtype)
            else:
                m = m * numerics.scalar(h.b1_1d, dtype) + numerics.one_minus(h.b1_1d, dtype) * g
                v = v * numerics.scalar(h.b2_1d, dtype) + numerics.one_minus(h.b2_1d, dtype) * g * g
                step = cautious(m, g) if caution else m
                direction = (step / bc1_1d) / (jnp.sqrt(v) / bc2_sqrt_1d + eps_)
                rate = numerics.host_or_traced(lambda a, b: a * b, h.lr, h.lr_1d_factor, dtype=dtype)
            u = -rate * (p * wd + direction)
            return leaf.as_real(u, m, g, v)

        return per_param_update(state, updates, math, buffers=("exp_avg", "last_grad", "exp_avg_sq"),
                                inputs=(params,), step_scalars=step_scalars, pin_step_scalars=True)

    return GradientTransformation(init, update)


__all__ = ["MARS_TYPES", "ScaleByMarsState", "scale_by_mars"]
