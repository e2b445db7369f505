"""Mixed precision: torch.amp.GradScaler's arithmetic (dynamic loss scaling) and `loss_scaling`, its functional form.

torch's recipe for float16 training multiplies the loss by a scale before the backward pass
(so that small float16 cotangents do not flush to zero), divides the gradients by it again,
skips the optimizer step when a gradient is inf or nan (the scale was too large), and adapts
the scale: `backoff_factor` times after a skipped step, `growth_factor` times after
`growth_interval` consecutive unskipped steps. The pieces here are torch's kernels, written once
and used by the functional wrapper below and by the stateful `optax_like.amp.GradScaler`:

- `scale_loss(outputs, scale)`: torch's `outputs * scale` (its dtype rule included);
- `unscale_grads(grads, scale)`: torch's `_amp_foreach_non_finite_check_and_unscale_`, with
  `inv_scale = float32(1 / float64(scale))`: `(grads * inv_scale, found_inf)`;
- `update_loss_scale(state, found_inf, ...)`: torch's `_amp_update_scale_`.

Compact state and bfloat16 params (below): `compact_state(inner, mu_dtype=jnp.bfloat16)` stores
the optimizer's buffers in a narrower dtype (optax's `mu_dtype`/`nu_dtype`, by torch's state
names); `stochastic_round` and `apply_updates_stochastic` update bfloat16 params with torchao's
stochastic rounding (`bf16_stochastic_round`), reproducible from a PRNG key.

`loss_scaling(inner, ...)` wraps an optimizer for jitted train steps and `lax.scan`:

    tx = optax_like.loss_scaling(optax_like.adam(1e-3))    # or chain(clip_by_global_norm(1.), adam(...))
    state = tx.init(params)

    @jax.jit
    def train_step(params, state, batch):
        grads = jax.grad(lambda p: scale_loss(loss_fn(p, batch), state.scale))(params)
        updates, state = tx.update(grads, state, params)    # unscale, check, step or skip, rescale
        return optax_like.apply_updates(params, updates), state
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import core as jax_core

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support
from optax_like.core.torch_layout import torch_layout_of

__all__ = [
    "FIRST_MOMENTS",
    "SECOND_MOMENTS",
    "LossScaleState",
    "LossScalingState",
    "apply_updates_stochastic",
    "check_loss_scale_args",
    "compact_state",
    "init_loss_scale",
    "loss_scaling",
    "scale_loss",
    "stochastic_round",
    "unscale_grads",
    "update_loss_scale",
]


class LossScaleState(NamedTuple):
    """torch.amp.GradScaler's device state: `scale` (float32) and `growth_tracker` (int32, the
    consecutive unskipped steps since the scale last changed)."""

    scale: jax.Array
    growth_tracker: jax.Array


class LossScalingState(NamedTuple):
    scale: jax.Array  # float32: multiply the loss by it (`scale_loss(loss, state.scale)`)
    growth_tracker: jax.Array  # int32
    inner_state: Any


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def check_scale(value: Any, name: str = "init_scale") -> None:
    """A scale is a finite positive number (torch does not check; a zero, negative, inf or nan
    scale makes every later step skip or corrupt the params). Traced values pass."""
    if isinstance(value, jax_core.Tracer):
        return
    if not _is_number(value) and not (hasattr(value, "shape") and np.size(value) == 1):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(np.asarray(value).reshape(()))
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value}")


def check_loss_scale_args(init_scale: Any = 2.0**16, growth_factor: Any = 2.0, backoff_factor: Any = 0.5,
                          growth_interval: Any = 2000) -> None:
    """torch.amp.GradScaler's checks and messages (AssertionErrors for growth_factor <= 1 and
    backoff_factor >= 1), and ours for what torch accepts silently: a scale that is not a
    finite positive number, a backoff_factor <= 0, a non-finite factor, a growth_interval that is
    not a positive integer. Traced values are not checked."""
    check_scale(init_scale, "init_scale")
    for name, value in (("growth_factor", growth_factor), ("backoff_factor", backoff_factor)):
        if not isinstance(value, jax_core.Tracer) and not _is_number(value):
            raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if _is_number(growth_factor):
        if growth_factor <= 1.0:
            raise AssertionError("The growth factor must be > 1.0.")  # torch's
        if not math.isfinite(growth_factor):
            raise ValueError(f"growth_factor must be finite, got {growth_factor}")
    if _is_number(backoff_factor):
        if backoff_factor >= 1.0:
            raise AssertionError("The backoff factor must be < 1.0.")  # torch's
        if not backoff_factor > 0.0:
            raise ValueError(f"backoff_factor must be in (0, 1), got {backoff_factor}")
    if not isinstance(growth_interval, jax_core.Tracer):
        if not isinstance(growth_interval, (int, np.integer)) or isinstance(growth_interval, bool):
            raise TypeError(f"growth_interval must be an int, got {type(growth_interval).__name__} {growth_interval!r}")
        if growth_interval < 1:
            raise ValueError(f"growth_interval must be a positive integer, got {growth_interval}")


def init_loss_scale(init_scale: Any = 2.0**16, growth_tracker: Any = 0) -> LossScaleState:
    """torch's lazily built `_scale` (float32) and `_growth_tracker` (int32)."""
    return LossScaleState(jnp.full((), init_scale, jnp.float32), jnp.full((), growth_tracker, jnp.int32))


def scale_loss(outputs: Any, scale: Any) -> Any:
    """torch's `GradScaler.scale(outputs)`: `outputs * scale`, leaf by leaf (an array, or any
    pytree of arrays). The dtype is torch's: a 0-d output (a loss) promotes with the float32
    scale (a float16 loss becomes float32, a float64 one stays float64); an output with
    dimensions keeps its dtype, computed in its opmath dtype and rounded once."""
    scale = jnp.asarray(scale, jnp.float32)

    def one(x):
        x = jnp.asarray(x)
        if x.ndim == 0:
            return x * scale
        compute = numerics.compute_dtype(x.dtype)
        return (x.astype(compute) * scale.astype(compute)).astype(x.dtype)

    return jax.tree.map(one, outputs)


def _inverse(scale: jax.Array, dtype) -> jax.Array:
    """torch's `scale.double().reciprocal().float()`. Without x64 the float32 division is the
    same number (checked for every float32 mantissa; a scale above 2**126, whose inverse is
    subnormal, aside)."""
    dtype = jnp.dtype(dtype)
    return (1 / jnp.asarray(scale).astype(dtype)).astype(jnp.float32)


def _values(grad):
    """The array a gradient leaf's numbers live in (sparse forms: their values) and a rebuild."""
    if hasattr(grad, "_replace") and hasattr(grad, "values") and hasattr(grad, "indices"):  # RowSparseGrad
        return grad.values, lambda v: grad._replace(values=v)
    if hasattr(grad, "data") and hasattr(grad, "indices") and hasattr(grad, "shape") and not isinstance(grad, jax.Array):
        return grad.data, lambda v: type(grad)((v, grad.indices), shape=grad.shape)  # BCOO
    return grad, lambda v: v


def _is_grad_leaf(x) -> bool:
    return x is None or _values(x)[0] is not x


def unscale_grads(grads: Any, scale: Any) -> tuple[Any, jax.Array]:
    """torch's `_amp_foreach_non_finite_check_and_unscale_` over a pytree of gradients (None
    leaves skipped; sparse gradients by their values): each element times `inv_scale` (torch's
    float32 `1 / scale`, computed in float64), in the gradient's opmath dtype (float32 for
    bfloat16 and float16, float64 for float64) and rounded once; `found_inf` is float32 1.0 when
    any element is inf or nan, else 0.0. Returns `(unscaled grads, found_inf)`."""
    inv_scale = _inverse(scale, numerics.float_dtype())
    flags = []

    def one(grad):
        if grad is None:
            return None
        values, rebuild = _values(grad)
        compute = numerics.compute_dtype(values.dtype)
        wide = values.astype(compute)
        flags.append(jnp.any(~jnp.isfinite(wide)))
        return rebuild((wide * inv_scale.astype(jnp.finfo(compute).dtype)).astype(values.dtype))

    out = jax.tree.map(one, grads, is_leaf=_is_grad_leaf)
    found = jnp.any(jnp.stack(flags)) if flags else jnp.asarray(False)
    return out, found.astype(jnp.float32)


def update_loss_scale(state: LossScaleState, found_inf: Any, growth_factor: Any = 2.0, backoff_factor: Any = 0.5,
                      growth_interval: Any = 2000) -> LossScaleState:
    """torch's `_amp_update_scale_`: after a step with `found_inf` (nonzero: some gradient was
    not finite) the scale is multiplied by `backoff_factor` and the tracker reset; otherwise the
    tracker counts the step, and when it reaches `growth_interval` the scale is multiplied by
    `growth_factor` (unless that overflows float32: then kept) and the tracker reset.

    torch multiplies the float32 scale by the float64 factor and rounds once. The product here
    is taken in the default float dtype: the same number under x64, and without x64 whenever
    the factor is a float32 number (2.0, 0.5, any power of two, 0.75, ...); a factor such as 0.3
    may then round one float32 ulp away from torch's. A scale below float32's smallest normal
    number (1.2e-38, after some 150 backoffs) is flushed to zero by XLA:CPU; torch keeps it."""
    scale, tracker = state
    wide = numerics.float_dtype()
    scale_wide = scale.astype(wide)
    found = jnp.asarray(found_inf) != 0
    backed_off = (scale_wide * numerics.scalar(backoff_factor, wide)).astype(jnp.float32)
    grown = (scale_wide * numerics.scalar(growth_factor, wide)).astype(jnp.float32)
    successful = tracker + 1
    grow = successful == jnp.asarray(growth_interval, tracker.dtype)
    new_scale = jnp.where(found, backed_off, jnp.where(grow & jnp.isfinite(grown), grown, scale))
    new_tracker = jnp.where(found | grow, jnp.zeros_like(tracker), successful)
    return LossScaleState(new_scale, new_tracker)


def loss_scaling(inner: GradientTransformation, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000) -> GradientTransformationExtraArgs:
    """torch.amp.GradScaler around `inner`, as one transformation for jitted steps and scans.

    `update(scaled_grads, state, params)` takes the gradients of `scale_loss(loss, state.scale)`
    and does torch's iteration after the backward pass: unscale them (`unscale_grads`); when all
    are finite, run `inner` on the unscaled gradients (put clipping inside `inner`, as torch
    clips after `scaler.unscale_`); when one is not, return updates that leave every param
    bit-for-bit (negative zeros: `p + -0.0 == p`) and `inner`'s state untouched, as
    `scaler.step` skips `optimizer.step()`; then update the scale (`update_loss_scale`, torch's
    `scaler.update()`). The decision is a `lax.cond` on device: no host sync.

    State: `LossScalingState(scale, growth_tracker, inner_state)`; `scale` is the float32
    scale for the next loss. torch counterpart: `torch.amp.GradScaler(device, init_scale,
    growth_factor, backoff_factor, growth_interval)` with `scale`, `step` and `update` per
    iteration (`optax_like.amp.GradScaler` is the stateful one).
    """
    check_loss_scale_args(init_scale, growth_factor, backoff_factor, growth_interval)
    inner_update = with_extra_args_support(inner).update

    def init(params):
        return LossScalingState(*init_loss_scale(init_scale), inner.init(params))

    def update(updates, state, params=None, **extra_args):
        grads, found_inf = unscale_grads(updates, state.scale)

        def step(operands):
            grads, inner_state = operands
            return inner_update(grads, inner_state, params, **extra_args)

        def skip(operands):
            shapes = jax.eval_shape(step, operands)[0]
            return jax.tree.map(lambda s: jnp.full(s.shape, -0.0, s.dtype), shapes), operands[1]

        new_updates, inner_state = jax.lax.cond(found_inf == 0, step, skip, (grads, state.inner_state))
        scale = update_loss_scale(LossScaleState(state.scale, state.growth_tracker), found_inf,
                                  growth_factor, backoff_factor, growth_interval)
        return new_updates, LossScalingState(scale.scale, scale.growth_tracker, inner_state)

    return GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------------------- compact state

# torch's names of the first- and second-moment buffers (optax's `mu` and `nu`).
FIRST_MOMENTS = ("exp_avg", "momentum_buffer", "grad_avg", "exp_avg_lr_1")
SECOND_MOMENTS = ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "exp_inf", "acc_delta")


def _declared_buffers(state: Any) -> set[str]:
    names: set[str] = set()

    def visit(node):
        layout = torch_layout_of(node)
        if layout is not None:
            names.update(layout.buffers)
        if isinstance(node, (tuple, list)):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)

    visit(state)
    return names


def _cast_buffers(state: Any, dtypes: dict[str, Any], to_compute: bool) -> Any:
    """`state` with the real floating leaves of its declared buffers named in `dtypes` cast to
    their dtype (`to_compute`: back to the compute dtype, float32 for a 16-bit one). The
    structure is kept: the adapter's state_dict converter and the state contract see the
    inner state as it is."""
    def cast(x, dtype):
        if x is None or not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            return x  # complex buffers (and integer ones) keep their dtype
        target = numerics.compute_dtype(x.dtype) if to_compute else jnp.dtype(dtype)
        return x if x.dtype == target else x.astype(target)

    def visit(node):
        layout = torch_layout_of(node)
        if layout is not None and hasattr(node, "_fields"):
            return type(node)(*(
                jax.tree.map(lambda x, d=dtypes[name]: cast(x, d), value, is_leaf=lambda x: x is None)
                if name in dtypes and name in layout.buffers else visit(value)
                for name, value in zip(node._fields, node)))
        if hasattr(node, "_fields"):
            return type(node)(*(visit(child) for child in node))
        if isinstance(node, (tuple, list)):
            return type(node)(visit(child) for child in node)
        if isinstance(node, dict):
            return type(node)((k, visit(v)) for k, v in node.items())
        return node

    return visit(state)


def compact_state(inner: GradientTransformation, dtypes: dict[str, Any] | None = None, *, mu_dtype: Any = None,
                  nu_dtype: Any = None) -> GradientTransformationExtraArgs:
    """`inner` with some of its buffers stored in a narrower float dtype (bfloat16 moments for
    float32 params: half the optimizer memory), as optax's `adam(mu_dtype=...)`.

    `dtypes` maps torch's state names (`{"exp_avg": jnp.bfloat16}`) to a dtype; `mu_dtype` is
    every first moment of `FIRST_MOMENTS` (Adam's `exp_avg`, SGD's `momentum_buffer`, ...),
    `nu_dtype` every second moment of `SECOND_MOMENTS` (`exp_avg_sq`, RMSprop's `square_avg`,
    Adagrad's `sum`, ...) that `inner`'s state declares. Each step reads a stored buffer in its
    compute dtype (float32: exact), runs `inner`'s math as it is, and stores the new buffer
    rounded to nearest: optax's rule. A name `inner` does not declare is a ValueError naming the
    ones it does. Complex buffers keep their dtype. torch has no counterpart (its buffers are in
    the params' dtype): with float32 dtypes this is `inner` exactly.
    """
    wanted = dict(dtypes or {})
    for name, value in wanted.items():
        if not jnp.issubdtype(jnp.dtype(value), jnp.floating):
            raise TypeError(f"compact_state: the dtype for {name!r} must be a float dtype, got {value!r}")
    for dtype, group in ((mu_dtype, FIRST_MOMENTS), (nu_dtype, SECOND_MOMENTS)):
        if dtype is not None:
            if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
                raise TypeError(f"compact_state: mu_dtype/nu_dtype must be a float dtype, got {dtype!r}")
            wanted.update({name: dtype for name in group if name not in wanted})
    inner_update = with_extra_args_support(inner).update
    explicit = frozenset(dtypes or {})

    def init(params):
        state = inner.init(params)
        declared = _declared_buffers(state)
        unknown = sorted(explicit - declared)
        if unknown:
            raise ValueError(f"compact_state: the state declares no buffer {unknown}; its buffers are {sorted(declared)}")
        return _cast_buffers(state, wanted, to_compute=False)

    def update(updates, state, params=None, **extra_args):
        wide = _cast_buffers(state, wanted, to_compute=True)
        updates, new_state = inner_update(updates, wide, params, **extra_args)
        return updates, _cast_buffers(new_state, wanted, to_compute=False)

    return GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------------------- stochastic rounding


def stochastic_round(x: jax.Array, key: jax.Array, dtype: Any = jnp.bfloat16) -> jax.Array:
    """float32 `x` rounded to bfloat16 at random, up with probability (the dropped 16 bits) /
    2**16: the expectation is `x` (torchao's `_fp32_to_bf16_sr`, `bf16_stochastic_round=True`
    of its low-bit optimizers: the same bit operations, with random bits from `key` instead of
    torch's generator). Non-finite values round as torch's: inf stays inf, nan stays nan."""
    if jnp.dtype(dtype) != jnp.dtype(jnp.bfloat16):
        raise ValueError(f"stochastic_round rounds float32 to bfloat16, got dtype {dtype!r}")
    x = jnp.asarray(x, jnp.float32)
    random = jax.random.randint(key, x.shape, 0, 1 << 16, dtype=jnp.int32)
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    toward_zero = bits & jnp.int32(-65536)  # 0xFFFF0000: the upper 16 bits
    rounded = jnp.where(random < (bits & 0xFFFF), toward_zero + 0x10000, toward_zero)
    return jax.lax.bitcast_convert_type(rounded, jnp.float32).astype(jnp.bfloat16)


def apply_updates_stochastic(params: Any, updates: Any, key: jax.Array) -> Any:
    """`apply_updates` for bfloat16 params with stochastic rounding: `p + u` in float32, then
    `stochastic_round` (one key per leaf, split from `key`); other params as `apply_updates`
    (round to nearest). An update smaller than half a bfloat16 ulp of its param moves the param
    in expectation instead of never. Pass a new key at each step (`jax.random.fold_in(key, step)`)."""
    from optax_like.core.base import apply_updates

    leaves, treedef = jax.tree.flatten(params, is_leaf=lambda x: x is None)
    update_leaves = treedef.flatten_up_to(updates)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for p, u, k in zip(leaves, update_leaves, keys):
        if p is not None and u is not None and jnp.result_type(p) == jnp.dtype(jnp.bfloat16):
            out.append(stochastic_round(jnp.asarray(p).astype(jnp.float32) + jnp.asarray(u).astype(jnp.float32), k))
        else:
            out.append(apply_updates(cast(Any, p), cast(Any, u)))  # (either may be None)
    return treedef.unflatten(out)
