"""timm.optim.Muon as a functional optimizer (`timm_muon`: torch.optim.Muon has the name `muon`)."""

from __future__ import annotations

import warnings
from typing import Any, Optional

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.hyperparams import integer_args
from optax_like.optimizers._timm import validate_scalar
from optax_like.transforms.combine import chain
from optax_like.transforms.timm_muon import DEFAULT_NS_STEPS, MUON_EPS, scale_by_timm_muon


@integer_args("ns_steps")
def timm_muon(
    lr: ScalarOrSchedule = 0.02,
    weight_decay: ScalarOrSchedule = 0,
    momentum: ScalarOrSchedule = 0.95,
    nesterov: bool = False,
    ns_steps: int = DEFAULT_NS_STEPS,
    ns_coefficients: Any = "quintic",
    eps: ScalarOrSchedule = MUON_EPS,
    safety_factor: ScalarOrSchedule = 1.0,
    adjust_lr_fn: Optional[str] = "match_rms_adamw",
    conv_mode: str = "flatten",
    normalize_spatial: bool = True,
    adamw_lr: Optional[float] = None,
    fallback_lr_scale: ScalarOrSchedule = 1.0,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.95),
    algo: str = "muon",
    scale_eps: bool = False,
    capturable: bool = False,
    verbose: bool = False,
    *,
    use_fallback: bool = False,
    use_muon: Optional[bool] = None,
) -> GradientTransformation:
    """Muon (Jordan et al., 2024) with AdaMuon (Si et al., 2025) and an AdamW fallback, as
    timm.optim.Muon (timm 1.0.31) computes it. timm's class name `Muon` is taken here by
    torch.optim.Muon (`optax_like.muon` / `optax_like.optim.Muon`): this is `timm_muon` /
    `optax_like.optim.TimmMuon`, which `create_optimizer_v2` reaches for timm's names 'muon',
    'nmuon' (nesterov), 'adamuon' (algo="adamuon") and 'nadamuon'.

    Params with >= 2 non-unit dims, no unit dim in the first two positions, and (for ndim >= 3
    flattened to (out, in * spatial)) both sides >= 4 and an aspect ratio <= 128 take Muon
    (`is_suitable_for_muon`); the others timm's AdamW (NAdamW with `nesterov`) at
    `lr * fallback_lr_scale` with `betas`. The step (`scale_by_timm_muon`):

        p <- p * (1 - lr * wd);  B <- lerp(B, g, 1 - momentum);  M = lerp(g, B, momentum) | B
        O  = NS(M) in bfloat16 (quintic, original, polar_express(_safer) presets or given
             triples; conv_mode "flatten" (out, in*k) or "batched" (k, out, in) per position)
        muon:    p <- p - lr * s * O;  s from adjust_lr_fn ("match_rms_adamw" 0.2 sqrt(max(A, B)),
                 "original" sqrt(max(1, A/B)), "rms_to_rms" sqrt(A/B); None: 1), times
                 k^-1/2 ("batched" with normalize_spatial)
        adamuon: V <- b2 V + (1 - b2) O^2;  U = O / (sqrt(V (/ (1 - b2^t))) + eps), RMS-normalised
                 for "match_rms_adamw" (s = 0.2 sqrt(numel)); p <- p - lr * s * U

    Newton-Schulz runs in bfloat16 as timm's (its `dtype` default; no float32 option is exposed),
    so parity is to bfloat16 rounding (the record's `rtol32`), as for torch's Muon.

    timm counterpart: `timm.optim.Muon(params, lr=0.02, weight_decay=0, momentum=0.95,
    nesterov=False, ns_steps=5, ns_coefficients="quintic", eps=1e-7, safety_factor=1.0,
    adjust_lr_fn="match_rms_adamw", conv_mode="flatten", normalize_spatial=True, adamw_lr=None,
    fallback_lr_scale=1.0, betas=(0.9, 0.95), algo="muon", scale_eps=False, capturable=False,
    verbose=False)`. `capturable` and `verbose` (kernel choice, routing logs) are accepted and
    ignored; `adamw_lr` (deprecated in timm) sets `fallback_lr_scale = adamw_lr / lr` with timm's
    FutureWarning. `use_fallback` and `use_muon` are timm's param-group flags (not constructor
    arguments there, nor in `optim.TimmMuon`'s constructor: set them in a group's dict, where
    the class reads them only if present): `use_fallback=True` routes every param of the group
    to the fallback, else a given `use_muon` decides, else the shape. A flag present in a group
    reads as timm's `if` reads it (`use_muon: None` there is False, the fallback); as an argument
    here, `use_muon=None` is "not set". Bad `ns_coefficients` raise timm's errors here at construction,
    an unknown `adjust_lr_fn` timm's AssertionError at the first update (timm: both at the
    first step). lr, weight_decay, momentum, eps,
    betas and fallback_lr_scale may be schedules `count -> value`.
    """
    del capturable, verbose
    validate_scalar(lr, "lr", "learning rate")
    validate_scalar(weight_decay, "weight_decay", "weight_decay")
    validate_scalar(momentum, "momentum", "momentum")
    v.check(momentum, "momentum", lambda x: x < 1.0, "Invalid momentum: {}")
    validate_scalar(eps, "eps", "epsilon")
    if conv_mode not in ["flatten", "batched"]:
        raise ValueError(f"Invalid conv_mode: {conv_mode}")
    if algo not in ["muon", "adamuon"]:
        raise ValueError(f"Invalid algo: {algo}. Must be 'muon' or 'adamuon'")
    if adamw_lr is not None:
        warnings.warn("adamw_lr is deprecated, use fallback_lr_scale=adamw_lr/lr instead. "
                      "adamw_lr will be removed in a future release.", FutureWarning, stacklevel=2)
        if v.is_array(lr) or callable(lr):
            raise ValueError("adamw_lr is not supported with tensor lr; use fallback_lr_scale instead.")
        if lr == 0:
            raise ValueError("Cannot compute fallback_lr_scale from adamw_lr when lr=0")
        fallback_lr_scale = adamw_lr / lr
    return chain(scale_by_timm_muon(  # (chain: the updates' structure is checked against the params')
        lr, weight_decay, momentum, betas[0], betas[1], eps, fallback_lr_scale,
        nesterov=nesterov, ns_steps=ns_steps, ns_coefficients=ns_coefficients, safety_factor=safety_factor,
        adjust_lr_fn=adjust_lr_fn, conv_mode=conv_mode, normalize_spatial=normalize_spatial, algo=algo,
        scale_eps=scale_eps, use_fallback=use_fallback, use_muon=use_muon))
