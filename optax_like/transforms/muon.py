"""`scale_by_muon`: torch.optim.Muon's momentum and Newton-Schulz orthogonalisation."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from optax_like.core import numerics
from optax_like.core import validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import init_counts
from optax_like.core.tree import is_none, zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update
from optax_like.core.torch_layout import declare_torch_state, STARTED, STEPS_TAKEN

EPS = 1e-7
DEFAULT_A = 3.4445
DEFAULT_B = -4.7750
DEFAULT_C = 2.0315
DEFAULT_NS_STEPS = 5


class ScaleByMuonState(NamedTuple):
    momentum_buffer: Any  # params-shaped, params' dtype
    count: Any  # per-leaf updates applied (LeafScalars; 0 = torch has no state for the param yet)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByMuonState,
    buffers=("momentum_buffer",),
    internal={"count": STARTED, "schedule_count": STEPS_TAKEN},
    started="count",
)


def check_ns_arguments(ns_coefficients, ns_steps) -> None:
    """torch's `_zeropower_via_newtonschulz` checks (torch runs them at every step).

    A traced `ns_steps` (from `inject_hyperparams`) is not checked: it runs as a loop count.
    """
    steps = validation.concrete_value(ns_steps)
    if steps is not None and steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")


def _torch_size(shape) -> str:
    return f"torch.Size({list(shape)})"


def check_muon_params(params: Any) -> None:
    """torch's checks: 2-D params only (ValueError, at construction), no complex (RuntimeError)."""
    for leaf in jax.tree.leaves(params, is_leaf=is_none):
        if leaf is None:
            continue
        if jnp.ndim(leaf) != 2:
            raise ValueError(
                "Muon only supports 2D parameters whereas we found a parameter with size: "
                f"{_torch_size(jnp.shape(leaf))}"
            )
    for leaf in jax.tree.leaves(params, is_leaf=is_none):
        if leaf is not None and jnp.iscomplexobj(leaf):
            raise RuntimeError("Muon does not support complex parameters")


def zeropower_via_newtonschulz(
    grad: jax.Array,
    ns_coefficients: tuple = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
    ns_steps: int = DEFAULT_NS_STEPS,
    eps: ScalarOrSchedule = EPS,
) -> jax.Array:
    """torch's `_zeropower_via_newtonschulz`, in bfloat16 as torch runs it. Returns bfloat16.

        X = bf16(G) (transposed if rows > cols);  X <- X / max(||X||_F, eps)
        repeat ns_steps:  A = X X^T;  B = b A + c A A;  X <- a X + B X

    Each matmul accumulates in float32 and its result (with the fused `addmm` terms) is
    rounded to bfloat16 once, as torch's CPU bf16 gemm does.
    """
    check_ns_arguments(ns_coefficients, ns_steps)
    if grad.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    a, b, c = (numerics.scalar(x, jnp.float32) for x in ns_coefficients)
    bf16, f32 = jnp.bfloat16, jnp.float32
    x = grad.astype(bf16)
    transpose = grad.shape[0] > grad.shape[1]
    if transpose:
        x = x.T
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(f32)))).astype(bf16)
    norm = jnp.maximum(norm, numerics.scalar(eps, bf16))
    x = (x.astype(f32) / norm.astype(f32)).astype(bf16)

    def iteration(_, x):
        return newton_schulz_iteration(x, a, b, c)

    if isinstance(ns_steps, (int, np.integer)):
        for i in range(int(ns_steps)):
            x = iteration(i, x)
    else:  # an injected (traced) step count
        x = jax.lax.fori_loop(0, jnp.asarray(ns_steps, jnp.int32), iteration, x)
    if transpose:
        x = x.T
    return jnp.asarray(x)


def newton_schulz_iteration(x: jax.Array, a, b, c) -> jax.Array:
    """One bfloat16 Newton-Schulz step on `x` (2-D, or 3-D batched over the leading axis), as
    torch's CPU `addmm`/`baddbmm` computes it: each matmul accumulates in float32 and its result
    (with the fused terms) is rounded to bfloat16 once:

        A = X X^T;  B = b A + c A A;  X <- a X + B X

    `a`, `b`, `c`: float32 scalars (a Python float's float32 rounding, as torch's `beta`/`alpha`)."""
    bf16, f32 = jnp.bfloat16, jnp.float32

    def mm(p, q):
        return jnp.matmul(p, q, preferred_element_type=f32)

    gram = mm(x, jnp.swapaxes(x, -1, -2)).astype(bf16)
    gram_update = (b * gram.astype(f32) + c * mm(gram, gram)).astype(bf16)
    return (a * x.astype(f32) + mm(gram_update, x)).astype(bf16)


def adjust_lr_ratio(adjust_lr_fn: Optional[str], shape) -> float:
    """torch's `_adjust_lr(lr, fn, shape) / lr`: "original" sqrt(max(1, A/B)), or 0.2 sqrt(max(A, B))."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def scale_by_muon(
    momentum: ScalarOrSchedule = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
    eps: ScalarOrSchedule = EPS,
    ns_steps: int = DEFAULT_NS_STEPS,
    adjust_lr_fn: Optional[str] = None,
) -> GradientTransformation:
    """Muon's direction (without the learning rate), as torch's `_single_tensor_muon`:

        B <- lerp(B, G, 1 - momentum)                 (= momentum * B + (1 - momentum) * G)
        M  = lerp(G, B, momentum)  if nesterov  else  B
        u  = ratio(shape) * NS(M)                     (NS in bfloat16; ratio from adjust_lr_fn)

    torch's docs write B <- momentum * B + G and M = G + momentum * B; the code (followed
    here) keeps an exponential moving average. 2-D params only; the momentum buffer starts at
    zero (equal to torch's buffer created at the first gradient); the internal per-leaf `count`
    says which params have had a gradient (torch has no state entry for the others).
    """
    check_ns_arguments(ns_coefficients, ns_steps)

    def init(params):
        check_muon_params(params)
        return ScaleByMuonState(zeros_like(params), init_counts(params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        h = hyperparams(state.schedule_count, momentum=momentum, eps=eps)

        def check(g):
            if isinstance(g, jsparse.JAXSparse):
                raise RuntimeError("Muon does not support sparse gradients")
            if jnp.iscomplexobj(g):
                raise RuntimeError("Muon does not support complex parameters")
            if jnp.ndim(g) != 2:
                raise ValueError("Param gradient must be a 2D matrix")

        def math(leaf, g, buf):
            if jnp.iscomplexobj(leaf.like):
                raise RuntimeError("Muon does not support complex parameters")
            dtype = leaf.dtype
            new_buf = numerics.lerp(buf, g, numerics.one_minus(h.momentum, dtype))
            m = numerics.lerp(g, new_buf, numerics.scalar(h.momentum, dtype)) if nesterov else new_buf
            ortho = zeropower_via_newtonschulz(m, ns_coefficients, ns_steps, h.eps)
            ratio = adjust_lr_ratio(adjust_lr_fn, leaf.like.shape)
            return ortho.astype(dtype) * numerics.scalar(ratio, dtype), new_buf

        return per_param_update(
            state, updates, math, buffers=("momentum_buffer",), counts=None, step_field="count", check=check
        )

    return GradientTransformation(init, update)


__all__ = ["ScaleByMuonState", "newton_schulz_iteration", "scale_by_muon", "zeropower_via_newtonschulz"]
