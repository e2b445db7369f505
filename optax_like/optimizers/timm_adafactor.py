"""timm.optim.Adafactor as a functional optimizer (`timm_adafactor`: the name `adafactor` is
torch.optim.Adafactor's here)."""

from __future__ import annotations

from typing import Optional

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.hyperparams import integer_args, number_args
from optax_like.transforms.combine import chain
from optax_like.transforms.timm_adafactor import scale_by_timm_adafactor


@integer_args("min_dim_size_to_factor")
@number_args("lr")
def timm_adafactor(
    lr: Optional[ScalarOrSchedule] = None,
    eps: ScalarOrSchedule = 1e-30,
    eps_scale: ScalarOrSchedule = 1e-3,
    clip_threshold: ScalarOrSchedule = 1.0,
    decay_rate: ScalarOrSchedule = -0.8,
    betas: Optional[tuple[ScalarOrSchedule, ScalarOrSchedule]] = None,
    weight_decay: ScalarOrSchedule = 0.0,
    scale_parameter: bool = True,
    warmup_init: bool = False,
    min_dim_size_to_factor: int = 16,
    caution: bool = False,
    *,
    beta1: Optional[ScalarOrSchedule] = None,
    relative_step: Optional[bool] = None,
) -> GradientTransformation:
    """Adafactor (Shazeer & Stern, 2018) as timm.optim.Adafactor (timm 1.0.31, from fairseq)
    computes it; named `timm_adafactor` (class `optax_like.optim.TimmAdafactor`) because
    `adafactor` / `Adafactor` are torch.optim.Adafactor's here. For each param p with gradient
    g, at its step t:

        RMS  = ||p|| / sqrt(numel(p))
        lr_t = min(1e-6 t if warmup_init else 1e-2, 1 / sqrt(t))
               * (max(eps_scale, RMS) if scale_parameter else 1)      if relative_step (lr None)
             = lr                                                     otherwise
        w    = t^decay_rate  (timm's 1 - beta2t);  G2 = g^2 + eps
        factored (timm's dims: the two leading dims of a param of ndim > 2 whose sizes both
        exceed min_dim_size_to_factor, else the two trailing ones if both exceed it):
             R <- lerp(R, mean(G2, row dim), w);  C <- lerp(C, mean(G2, col dim), w)
             u  = rsqrt(R / mean(R)) rsqrt(C) g
        else: V <- lerp(V, G2, w);  u = rsqrt(V) g
        u   <- lr_t u / max(RMS(u) / clip_threshold, 1)
        m   <- lerp(m, u, 1 - beta1);  u = m (`caution`: masked)      if betas given
        p   <- p - weight_decay lr_t p - u

    timm counterpart: `timm.optim.Adafactor(params, lr=None, eps=1e-30, eps_scale=1e-3,
    clip_threshold=1.0, decay_rate=-0.8, betas=None, weight_decay=0.0, scale_parameter=True,
    warmup_init=False, min_dim_size_to_factor=16, caution=False)`. As in timm, `lr=None`
    selects relative step sizes (`relative_step`) and only `betas[0]` is read. timm keeps
    `beta1` and `relative_step` in its param groups: here they are keyword arguments (None:
    from `betas`, and `lr is None`), which the class fills from the constructor's arguments as
    timm does. State keys are timm's: `step` (a Python int), `exp_avg_sq_row`/`exp_avg_sq_col`
    (the param's shape without the row/col dim) or `exp_avg_sq`, `exp_avg` (with beta1), `RMS`;
    buffers are float32 for 16-bit params, as timm keeps them. Numbers may be schedules.

    Deviations: complex params are refused at `init` (timm steps them with its real-valued math
    as they are); an empty param's `RMS` is 0 (timm's 0 / 0 is nan); with relative steps timm
    writes each param's step size into its group's `lr` (a tensor when it takes the RMS), where
    the class keeps the given `lr`.
    """
    if lr is not None:
        v.check_hyperparam(lr, "lr")
    if relative_step is None:
        relative_step = lr is None
    if beta1 is None and betas is not None:
        beta1 = betas[0]
    if warmup_init and not relative_step:
        raise ValueError("warmup_init requires relative_step=True")
    if not relative_step and lr is None:
        raise ValueError("relative_step=False needs an lr (timm's lr=None selects relative step sizes)")
    return chain(scale_by_timm_adafactor(  # (chain: the updates' structure is checked against the params')
        lr, eps, eps_scale, clip_threshold, decay_rate, beta1, weight_decay, relative_step=bool(relative_step),
        scale_parameter=scale_parameter, warmup_init=warmup_init, min_dim_size_to_factor=min_dim_size_to_factor,
        caution=caution))
