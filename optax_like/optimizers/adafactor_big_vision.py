"""timm.optim.AdafactorBigVision as a functional optimizer."""

from __future__ import annotations

from typing import Any, Optional

import jax.numpy as jnp

from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.hyperparams import integer_args
from optax_like.optimizers._timm import decay_lr, decoupled_chain, validate_scalar
from optax_like.transforms.adafactor_big_vision import momentum_dtype_of, scale_by_adafactor_big_vision


@integer_args("min_dim_size_to_factor")
def adafactor_big_vision(
    lr: ScalarOrSchedule = 1.0,
    min_dim_size_to_factor: int = 16,
    decay_rate: ScalarOrSchedule = 0.8,
    decay_offset: ScalarOrSchedule = 0,
    beta2_cap: ScalarOrSchedule = 0.999,
    momentum: Optional[ScalarOrSchedule] = 0.9,
    momentum_dtype: Any = jnp.dtype("bfloat16"),
    eps: Optional[ScalarOrSchedule] = None,
    weight_decay: ScalarOrSchedule = 0.0,
    clipping_threshold: Optional[ScalarOrSchedule] = None,
    unscaled_wd: bool = False,
    caution: bool = False,
    corrected_weight_decay: bool = False,
    *,
    max_lr_snapshot: Optional[float] = None,
) -> GradientTransformation:
    """big_vision's Adafactor variant ("Scaling Vision Transformers", Zhai et al., 2021) as
    timm.optim.AdafactorBigVision (timm 1.0.31) computes it. For each param p with gradient g,
    at its step t:

        w   = 1 - min(beta2_cap, 1 - max(t - decay_offset, 1)^-decay_rate)
        G2  = g^2 + eps                                (eps None: 1e-7 for float16, else 1e-30)
        factored (the two largest dims, when the second largest is >= min_dim_size_to_factor):
            R <- lerp(R, mean(G2, dr), w);  C <- lerp(C, mean(G2, dc), w)
            u  = g rsqrt(R / mean(R, dc)) rsqrt(C)
        else: V <- lerp(V, G2, w);  u = g rsqrt(V)
        u  <- u / max(RMS(u) / clipping_threshold, 1)                        if clipping_threshold
        m  <- lerp(m, u, 1 - momentum) in momentum_dtype;  u = m (`caution`: masked)  if momentum
        p  <- p * (1 - s * weight_decay) - lr * u

    with s = lr (`unscaled_wd`: 1, big_vision's decay), or with `corrected_weight_decay`
    lr**2 / max_lr (`unscaled_wd`: lr / max_lr), max_lr = timm's `max_lr_snapshot` (the
    constructor's lr). Chain: `scale_by_adafactor_big_vision -> scale_by_learning_rate ->
    [add_decoupled_weight_decay]`. State keys are timm's: `step`, `exp_avg_sq_r` / `exp_avg_sq_c`
    (the param's shape with size 1 at the reduced dim) or `exp_avg_sq`, and `exp_avg` in
    `momentum_dtype` (bfloat16 by default, as timm's: the float32/float64 numbers then carry
    its rounding).

    timm counterpart: `timm.optim.AdafactorBigVision(params, lr=1.0, min_dim_size_to_factor=16,
    decay_rate=0.8, decay_offset=0, beta2_cap=0.999, momentum=0.9, momentum_dtype=torch.bfloat16,
    eps=None, weight_decay=0.0, clipping_threshold=None, unscaled_wd=False, caution=False,
    corrected_weight_decay=False)`. `momentum_dtype` is a name ('bfloat16', 'float16', 'float32',
    as timm's), a dtype (the default: `jnp.dtype('bfloat16')`, which `to_torch_state_dict` writes
    as torch.bfloat16) or a torch dtype of those. Complex params are refused at `init` (timm
    steps them with real-valued math as they are). Numbers may be schedules.
    """
    momentum_dtype_of(momentum_dtype)  # timm's AssertionError for another dtype, first
    validate_scalar(lr, "lr", "learning rate")
    validate_scalar(weight_decay, "weight_decay", "weight_decay")
    decay = decay_lr(lr, corrected_weight_decay, max_lr_snapshot, unscaled=bool(unscaled_wd))
    return decoupled_chain(
        scale_by_adafactor_big_vision(min_dim_size_to_factor, decay_rate, decay_offset, beta2_cap, momentum,
                                      momentum_dtype, eps, clipping_threshold, caution=caution),
        lr, weight_decay, decay, maximize=False)
