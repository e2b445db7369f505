"""torch.optim.Muon as a functional optimizer."""

from __future__ import annotations

from typing import Optional

from optax_like.core import validation as v
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.transforms.combine import chain
from optax_like.transforms.muon import (
    DEFAULT_A,
    DEFAULT_B,
    DEFAULT_C,
    DEFAULT_NS_STEPS,
    EPS,
    scale_by_muon,
)
from optax_like.transforms.scaling import scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decoupled_weight_decay
from optax_like.core.hyperparams import integer_args


@integer_args("ns_steps")
def muon(
    lr: ScalarOrSchedule = 1e-3,
    weight_decay: ScalarOrSchedule = 0.1,
    momentum: ScalarOrSchedule = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
    eps: ScalarOrSchedule = EPS,
    ns_steps: int = DEFAULT_NS_STEPS,
    adjust_lr_fn: Optional[str] = None,
) -> GradientTransformation:
    """Muon (Jordan et al., 2024), as torch.optim.Muon computes it. 2-D params only.

        B  <- lerp(B, G, 1 - momentum)                       (state `momentum_buffer`)
        M   = lerp(G, B, momentum)  if nesterov  else  B
        O   = NS_{a,b,c; ns_steps}(M; eps)                    (Newton-Schulz, in bfloat16)
        p  <- p * (1 - lr * weight_decay)                     (decoupled, with the raw lr)
        p  <- p - adjust(lr, shape) * O
        adjust: None/"original": lr * sqrt(max(1, A/B));  "match_rms_adamw": 0.2 lr sqrt(max(A, B))

    Where torch's docs and code disagree this follows the code: the docs write the momentum
    as B <- mu B + G and the Nesterov term as G + mu B; the code keeps an exponential moving
    average (`buf.lerp_(grad, 1 - momentum)`, `grad.lerp(buf, momentum)`).

    Newton-Schulz runs in bfloat16, as in torch (which has no float32 option), so parity with
    torch is to bfloat16 rounding, not to float32 ulps: matmul accumulation order differs
    between XLA and torch's CPU gemm and can flip the last bit of a bf16 entry of O. Measured
    against torch 2.13 CPU (`tests/parity/test_muon.py`, 50 steps, lr=0.02, shapes (4, 3),
    (3, 7), (16, 16), (64, 32), gradients drawn independently of the params): momentum
    buffers bit-identical; max |p_jax - p_torch| / (|p_torch| + 1) = 1.6e-4 for float32 and
    float64 params (7.6e-6 at the default lr=1e-3), and < 1e-7 for the matrices up to 4 x 7,
    whose single NS call is bit-identical to torch's.

    torch counterpart: `torch.optim.Muon(params, lr=1e-3, weight_decay=0.1, momentum=0.95,
    nesterov=True, ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
    adjust_lr_fn=None)` (no keyword-only arguments, no `maximize`, no kernel switches). The
    `ns_steps >= 100` and coefficient-count errors, which torch raises at each step, are raised
    here by the factory with torch's messages; a non-2-D param raises torch's ValueError at
    `init` (torch: at construction), a complex one torch's RuntimeError. lr, weight_decay,
    momentum and eps may be schedules `count -> value`.
    """
    v.check(lr, "lr", v.nonnegative, "Learning rate should be >= 0 but is: {}")
    v.check(momentum, "momentum", v.nonnegative, "momentum should be >= 0 but is: {}")
    v.check(weight_decay, "weight_decay", v.nonnegative, "weight decay should be >= 0 but is: {}")
    if adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"]:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
    return chain(
        scale_by_muon(momentum, nesterov, tuple(ns_coefficients), eps, ns_steps, adjust_lr_fn),
        scale_by_learning_rate(lr),
        *([add_decoupled_weight_decay(lr, weight_decay)] if v.maybe_nonzero(weight_decay) else []),
    )
