"""`scale_by_timm_muon`: timm.optim.Muon's whole step (Muon or AdaMuon on matrices and
convolutions, timm's AdamW / NAdamW fallback on the other params)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import sparse as jsparse

from optax_like.core import numerics
from optax_like.core import validation
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.hyperparams import as_flag
from optax_like.core.leaf_scalars import LeafScalars, increment_counts, init_counts
from optax_like.core.torch_layout import BOOL, STARTED, STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.tree import map_params
from optax_like.core.tree import zeros_like as tree_zeros_like
from optax_like.transforms._per_param import hyperparams, per_param_update, refuse_complex
from optax_like.transforms.muon import newton_schulz_iteration
from optax_like.transforms.trust_ratio import leaf_norm
from optax_like.transforms.weight_decay import decoupled_decay_keep

MUON_EPS = 1e-7
DEFAULT_NS_STEPS = 5
CONV_MODES = ("flatten", "batched")
ALGOS = ("muon", "adamuon")
COMPLEX_MESSAGE = ("timm's Muon: complex params are not supported (timm casts a complex matrix to bfloat16 for "
                   "Newton-Schulz, dropping the imaginary part)")

# timm's `_COEFFICIENTS` presets (timm/optim/muon.py)
COEFFICIENTS = {
    "original": [(3.4445, -4.7750, 2.0315)],
    "quintic": [
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ],
    "polar_express": [
        (8.237312490495555, -23.157747414558198, 16.680568411445915),
        (4.082441999064835, -2.893047735332586, 0.5252849256975648),
        (3.9263479922546582, -2.8547468034765298, 0.5318022422894988),
        (3.2982187133085143, -2.424541981026706, 0.48632008358844075),
        (2.2970369434552573, -1.63662558125903, 0.4002628455953627),
        (1.8763805351440397, -1.2347896577722228, 0.35891887501668385),
        (1.8564423485617974, -1.2132449880935525, 0.3568003487825883),
        (1.8749994008682747, -1.2499988017229169, 0.3749994008546422),
    ],
    "polar_express_safer": [
        (8.156554524902461, -22.48329292557795, 15.878769915207462),
        (4.0429299351667245, -2.808917465908704, 0.5000178451051299),
        (3.8916678022926563, -2.7724841532176825, 0.5060648178503389),
        (3.285753657755658, -2.3681294933425394, 0.46449024233003117),
        (2.3005307116270983, -1.6111665557258408, 0.3833374427545273),
        (1.8631210546382593, -1.2042160621002727, 0.3421879560523383),
        (1.8382572152247512, -1.1779263289537742, 0.3396513038637379),
        (1.8749999923301852, -1.2499999836060613, 0.374999991275876),
    ],
}

_BUFFERS = ("momentum_buffer", "exp_avg", "exp_avg_sq")


class ScaleByTimmMuonState(NamedTuple):
    use_muon: LeafScalars  # per leaf, a bool: the param's route (timm's state['use_muon']), fixed by the options
    momentum_buffer: Any  # Muon params' momentum; None leaves for the fallback's params
    exp_avg: Any  # the AdamW fallback's first moment; None leaves for Muon params
    exp_avg_sq: Any  # the fallback's second moment, and AdaMuon's (of the orthogonalised update); else None
    step: LeafScalars  # per-leaf step count (timm's state['step'], a 0-d float32 tensor; beside exp_avg_sq only)
    count: LeafScalars  # per-leaf updates applied (0 = timm has no state for the param yet)
    schedule_count: jax.Array  # updates applied so far, for scheduled hyperparameters


declare_torch_state(
    ScaleByTimmMuonState,
    buffers=_BUFFERS,
    scalars={"use_muon": BOOL, "step": STEP},
    internal={"count": STARTED, "schedule_count": STEPS_TAKEN},
    started="count",
    scalars_with={"step": "exp_avg_sq"},
    attribute_group_entries=("adamw_lr",),  # timm turns it into fallback_lr_scale: not in its groups
)


def resolve_ns_coefficients(value: Any) -> list[tuple[float, float, float]]:
    """timm's `resolve_ns_coefficients(value, _COEFFICIENTS)`: a preset name, one (a, b, c)
    triple or a sequence of triples, checked with timm's errors."""
    def is_seq(x):
        return isinstance(x, Sequence) and not isinstance(x, (str, bytes))

    def is_real(x):
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))

    def as_coeff(x):
        if not is_seq(x) or len(x) != 3 or not all(is_real(v) for v in x):
            raise ValueError(f"Coefficient must be length-3 of real numbers, got: {x!r}")
        a, b, c = x
        return float(a), float(b), float(c)

    if isinstance(value, str):
        if value not in COEFFICIENTS:
            raise ValueError(f"Unknown coefficients preset '{value}'. Valid options: {', '.join(sorted(COEFFICIENTS))}")
        return [as_coeff(item) for item in COEFFICIENTS[value]]
    if not is_seq(value):
        raise TypeError("Coefficients must be a preset name (str), a 3-sequence (a,b,c), "
                        "or a sequence of 3-sequences.")
    if len(value) == 3 and all(is_real(v) for v in value):
        return [as_coeff(value)]
    out = []
    for i, item in enumerate(value):
        if not is_seq(item):
            raise TypeError(f"Item {i} is not a sequence: {item!r}")
        out.append(as_coeff(item))
    if not out:
        raise ValueError("Coefficient list cannot be empty")
    return out


def is_suitable_for_muon(shape: tuple, min_dim_size: int = 4, max_aspect_ratio: float = 128.0) -> bool:
    """timm's `_is_suitable_for_muon`: >= 2 non-unit dims, no unit dim in the first two
    positions, and the matrix Newton-Schulz sees (`(out, in * spatial)` for ndim >= 3) with both
    sides >= `min_dim_size` and an aspect ratio <= `max_aspect_ratio`."""
    if len(shape) < 2 or sum(1 for d in shape if d > 1) < 2 or shape[0] == 1 or shape[1] == 1:
        return False
    dims = (shape[0], math.prod(shape[1:])) if len(shape) >= 3 else tuple(shape)
    return min(dims) >= min_dim_size and max(dims) / min(dims) <= max_aspect_ratio


def _for_newton_schulz(x: jax.Array, conv_mode: str) -> jax.Array:
    """timm's `reshape_for_muon`: (out, in, *spatial) -> (out, in * spatial) ("flatten") or
    (spatial, out, in) ("batched"); a matrix as it is."""
    if x.ndim == 2:
        return x
    if conv_mode == "flatten":
        return x.reshape(x.shape[0], -1)
    return jnp.transpose(x.reshape(x.shape[0], x.shape[1], -1), (2, 0, 1))


def _from_newton_schulz(x: jax.Array, shape: tuple, conv_mode: str) -> jax.Array:
    if conv_mode == "batched" and x.ndim == 3:
        x = jnp.transpose(x, (1, 2, 0))
    return x.reshape(shape)


def zeropower_via_newtonschulz(
    grad: jax.Array,
    ns_steps: int,
    coefficients: Sequence[tuple[float, float, float]],
    eps: Any = MUON_EPS,
    safety_factor: Any = 1.0,
    scale_eps: bool = False,
) -> jax.Array:
    """timm's `zeropower_via_newtonschulz` (2-D, or 3-D batched), in bfloat16 as timm runs it;
    returns bfloat16:

        X = bf16(G) (transposed if rows > cols);  X <- X / max(||X||_F * safety_factor, eps)
        (scale_eps: X / (||X||_F * safety_factor + eps * sqrt(cols / rows)), cols/rows of G)
        for (a, b, c) in the coefficients (the first ns_steps; the last repeated beyond them):
            A = X X^T;  B = b A + c A A;  X <- a X + B X                 (newton_schulz_iteration)
    """
    bf16, f32 = jnp.bfloat16, jnp.float32
    n = len(coefficients)
    sequence = list(coefficients[:ns_steps]) if ns_steps <= n else list(coefficients) + [coefficients[-1]] * (ns_steps - n)
    if scale_eps:
        ratio = (grad.shape[-1] / grad.shape[-2]) ** 0.5
        eps = numerics.host_or_traced(lambda e: e * ratio, eps, dtype=f32)
    x = grad.astype(bf16)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = jnp.swapaxes(x, -1, -2)
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(f32)), axis=(-2, -1), keepdims=True)).astype(bf16)
    norm = (norm.astype(f32) * numerics.scalar(safety_factor, f32)).astype(bf16)  # (exact for 1.0)
    if scale_eps:
        norm = (norm.astype(f32) + numerics.scalar(eps, f32)).astype(bf16)
    else:
        norm = jnp.maximum(norm, numerics.scalar(eps, bf16))
    x = (x.astype(f32) / norm.astype(f32)).astype(bf16)
    for a, b, c in sequence:
        x = newton_schulz_iteration(x, *(numerics.scalar(v, f32) for v in (a, b, c)))
    if transposed:
        x = jnp.swapaxes(x, -1, -2)
    return x


def lr_scale(shape: tuple, adjust_lr_fn: Optional[str], algo: str) -> tuple[float, bool]:
    """timm's `get_lr_scale` (algo "muon") / `get_adamuon_lr_scale` ("adamuon") of the
    Newton-Schulz input's shape, with whether AdaMuon normalises by the RMS; (1.0, False)
    without `adjust_lr_fn`."""
    if not adjust_lr_fn:
        return 1.0, False
    rows, cols = (shape[-2], shape[-1]) if len(shape) > 1 else (1.0, 1.0)
    if algo == "muon":
        if adjust_lr_fn == "original":
            return max(1, rows / cols) ** 0.5, False
        if adjust_lr_fn == "match_rms_adamw":
            return 0.2 * max(rows, cols) ** 0.5, False
        if adjust_lr_fn == "rms_to_rms":
            return (rows / cols) ** 0.5, False
        raise AssertionError(f'Invalid scaling function "{adjust_lr_fn}" for Muon')
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.prod(shape) ** 0.5, True
    if adjust_lr_fn == "rms_to_rms":
        return (rows / cols) ** 0.5, False
    if adjust_lr_fn == "rsqrt_in":
        return cols ** -0.5, False
    raise AssertionError(f'Invalid scaling function "{adjust_lr_fn}" for AdaMuon')


def check_sparse(g: Any) -> None:
    if isinstance(g, jsparse.JAXSparse):
        raise RuntimeError("Muon does not support sparse gradients")


def scale_by_timm_muon(
    lr: ScalarOrSchedule = 0.02,
    weight_decay: ScalarOrSchedule = 0.0,
    momentum: ScalarOrSchedule = 0.95,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.95,
    eps: ScalarOrSchedule = MUON_EPS,
    fallback_lr_scale: ScalarOrSchedule = 1.0,
    *,
    nesterov: bool = False,
    ns_steps: int = DEFAULT_NS_STEPS,
    ns_coefficients: Any = "quintic",
    safety_factor: ScalarOrSchedule = 1.0,
    adjust_lr_fn: Optional[str] = "match_rms_adamw",
    conv_mode: str = "flatten",
    normalize_spatial: bool = True,
    algo: str = "muon",
    scale_eps: bool = False,
    use_fallback: bool = False,
    use_muon: Optional[bool] = None,
) -> GradientTransformation:
    """timm's Muon step, learning rate and decay included (the block emits the whole step), in
    timm's order of operations. Params that `is_suitable_for_muon` (matrices, convolutions)
    take the Muon route (`_single_tensor_muon` / `_single_tensor_adamuon`):

        p  <- p * (1 - lr * wd)
        B  <- lerp(B, G, 1 - momentum);   M = lerp(G, B, momentum) if nesterov else B
        O   = NS(reshape(M))   (bfloat16; conv_mode "flatten": (out, in*k), "batched": (k, out, in))
        s   = lr_scale(shape of reshape(M)), times k^-1/2 if batched and normalize_spatial
        muon:     p <- p - lr * s * O
        adamuon:  t <- t + 1;  V <- b2 V + (1 - b2) O^2
                  D = sqrt(V) + eps (RMS-normalised "match_rms_adamw"), else sqrt(V / (1 - b2^t)) + eps
                  U = O / D;  U <- U / (||U|| + eps) (RMS-normalised);  p <- p - lr * s * U

    the others timm's AdamW (NAdamW with `nesterov`) with lr * fallback_lr_scale:

        t <- t + 1;  p <- p * (1 - lr_f * wd);  m <- lerp(m, g, 1 - b1);  v <- b2 v + (1 - b2) g^2
        p <- p - (lr_f / (1 - b1^t)) * n / (sqrt(v) / sqrt(1 - b2^t) + eps),  n = lerp(m, g, 1 - b1)
             (nesterov) or m

    The route is timm's: `use_fallback=True` (timm's param-group flag) sends every param to the
    fallback, else a `use_muon` given (True/False) decides, else the param's shape
    (`is_suitable_for_muon`). It is fixed when the state is made (timm: at a param's first step;
    the state's `use_muon`, loaded only equal): an update whose flags route a param otherwise
    than its state raises. `use_muon=True` on a param with fewer than 2 dims raises timm's
    AssertionError at `init` (timm: at the first step). Complex params are refused at `init`.
    """
    if conv_mode not in CONV_MODES:
        raise ValueError(f"Invalid conv_mode: {conv_mode}")
    if algo not in ALGOS:
        raise ValueError(f"Invalid algo: {algo}. Must be 'muon' or 'adamuon'")
    coefficients = resolve_ns_coefficients(ns_coefficients)
    ns_steps = int(ns_steps)
    nesterov, normalize_spatial, scale_eps = bool(nesterov), bool(normalize_spatial), bool(scale_eps)
    adamuon = algo == "adamuon"
    use_fallback = as_flag(use_fallback, "use_fallback")
    use_muon = None if use_muon is None else as_flag(use_muon, "use_muon")

    def route(p) -> bool:
        if use_fallback or use_muon is not None:
            return not use_fallback and bool(use_muon)
        return is_suitable_for_muon(tuple(jnp.shape(p)))

    def checked_route(p) -> bool:
        muon = route(p)
        if muon and jnp.ndim(p) < 2:
            raise AssertionError(f"Input must be 2D or 3D, got {jnp.ndim(p)}D. Flatten batch dims first. "
                                 f"(timm's Muon, a param of shape {tuple(jnp.shape(p))} with use_muon=True)")
        return muon

    def init(params):
        refuse_complex(params, lambda dtype: TypeError(COMPLEX_MESSAGE))
        leaves = [p for p in jax.tree.leaves(params)]

        def zeros_if(keep):  # tree.zeros_like: the buffers follow the params' shardings
            return tree_zeros_like(map_params(lambda p: p if keep(route(p)) else None, params))

        return ScaleByTimmMuonState(
            use_muon=LeafScalars([jnp.asarray(checked_route(p)) for p in leaves]),
            momentum_buffer=zeros_if(lambda muon: muon),
            exp_avg=zeros_if(lambda muon: not muon),
            exp_avg_sq=zeros_if(lambda muon: adamuon or not muon),
            step=init_counts(params), count=init_counts(params), schedule_count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("timm's Muon needs the params (it decays them in its step): "
                             "call update(updates, state, params).")
        h = hyperparams(state.schedule_count, lr=lr, weight_decay=weight_decay, momentum=momentum, b1=b1, b2=b2,
                        eps=eps, fallback_lr_scale=fallback_lr_scale, safety_factor=safety_factor)
        decays = validation.maybe_nonzero(h.weight_decay)
        fallback_lr = numerics.host_or_traced(lambda a, s: a * s, h.lr, h.fallback_lr_scale, dtype=numerics.float_dtype())

        def step_scalars(t, dtype):
            wide = jnp.promote_types(dtype, numerics.float_dtype())
            bc1 = numerics.bias_correction(h.b1, t, wide)
            bc2 = numerics.bias_correction(h.b2, t, wide)
            # timm's Python floats: -(lr_f / (1 - b1^t)), sqrt(1 - b2^t), 1 - b2^t
            step_size = lax.neg(lax.div(numerics.cast(numerics.scalar(fallback_lr, wide), wide), bc1))
            return tuple(numerics.cast(x, dtype) for x in (step_size, lax.sqrt(bc2), bc2))

        def decayed(p, rate, dtype):
            if not decays:
                return p
            keep = decoupled_decay_keep(rate, h.weight_decay, dtype)
            return lax.sub(p, lax.mul(1 - keep, p))

        def math_(leaf, g, buf, m, v, p, _t, scalars):
            dtype = leaf.dtype
            shape = tuple(leaf.like.shape)
            step_size, bc2_sqrt, bc2 = scalars
            eps_ = numerics.scalar(h.eps, dtype)
            if route(leaf.like) != (buf is not None):  # the state's route (its buffers) is the param's
                raise ValueError(
                    f"timm's Muon: the flags route a param of shape {shape} to "
                    f"{'Muon' if route(leaf.like) else 'the AdamW fallback'}, its state to the other (timm fixes a "
                    "param's route at its first step): set use_fallback / use_muon before the state is made.")
            if buf is None:
                moved = decayed(p, fallback_lr, dtype)
                weight = numerics.one_minus(h.b1, dtype)
                m = numerics.lerp(m, g, weight)
                v = lax.add(lax.mul(v, numerics.scalar(h.b2, dtype)),
                            lax.mul(lax.mul(numerics.one_minus(h.b2, dtype), g), g))
                n = numerics.lerp(m, g, weight) if nesterov else m
                denom = lax.add(lax.div(lax.sqrt(v), bc2_sqrt), eps_)
                step = lax.mul(step_size, lax.div(n, denom))
                return lax.add(step, lax.sub(moved, p)), buf, m, v
            moved = decayed(p, h.lr, dtype)
            buf = numerics.lerp(buf, g, numerics.one_minus(h.momentum, dtype))
            direction = numerics.lerp(g, buf, numerics.scalar(h.momentum, dtype)) if nesterov else buf
            x = _for_newton_schulz(direction, conv_mode)
            ortho = zeropower_via_newtonschulz(x, ns_steps, coefficients, h.eps, h.safety_factor, scale_eps)
            scale, rms_norm = lr_scale(x.shape, adjust_lr_fn, algo)
            batched = conv_mode == "batched" and x.ndim == 3
            if batched and normalize_spatial:
                scale *= x.shape[0] ** -0.5
            ortho = _from_newton_schulz(ortho, shape, conv_mode).astype(dtype)
            if adamuon:
                v = lax.add(lax.mul(v, numerics.scalar(h.b2, dtype)),
                            lax.mul(lax.mul(numerics.one_minus(h.b2, dtype), ortho), ortho))
                denom = lax.add(lax.sqrt(v if rms_norm else lax.div(v, bc2)), eps_)
                ortho = lax.div(ortho, denom)
                if rms_norm:
                    ortho = lax.div(ortho, lax.add(leaf_norm(ortho), eps_))
            alpha = numerics.host_or_traced(lambda a: -(a * scale), h.lr, dtype=dtype)
            return lax.add(lax.mul(alpha, ortho), lax.sub(moved, p)), buf, m, v

        new_updates, new_state = per_param_update(
            state, updates, math_, buffers=_BUFFERS, inputs=(params,), reference=params,
            step_scalars=step_scalars, pin_step_scalars=True, check=check_sparse)
        return new_updates, new_state._replace(count=increment_counts(state.count, updates, params))

    return GradientTransformation(init, update)


__all__ = ["COEFFICIENTS", "ScaleByTimmMuonState", "is_suitable_for_muon", "lr_scale", "resolve_ns_coefficients",
           "scale_by_timm_muon", "zeropower_via_newtonschulz"]
