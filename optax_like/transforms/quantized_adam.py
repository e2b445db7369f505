"""Adam's direction with block-wise quantized moments (torchao 0.18's `torchao.optim`
Adam8bit / Adam4bit / AdamFp8 and their AdamW variants).

torchao keeps `exp_avg` / `exp_avg_sq` (and `max_exp_avg_sq`) of a param with at least
`MIN_QUANT_SIZE` (4096) elements whose count is divisible by `block_size` as a tensor subclass:

  * 8-bit (`OptimState8bit`): `codes` uint8 of the param's shape, `scale` float32 of
    `numel // block_size` (the absmax of each block of the flattened tensor), `qmap` the
    256-entry dynamic map of bitsandbytes (signed for exp_avg, unsigned for exp_avg_sq).
  * 4-bit (`OptimState4bit`): `codes` uint8 of `numel // 2` (two codes packed, high nibble
    first), `scale` as above, `qmap` 16 entries: the signed dynamic map (3 exponent bits) for
    exp_avg, `linspace(0, 1, 17)[1:]` (no zero) for exp_avg_sq.
  * fp8 (`OptimStateFp8`): `codes` float8_e4m3fn of the param's shape, `scale` = absmax / 448.

Every other param keeps plain moments of its own dtype (`torch.zeros_like(p)`). A step
dequantizes, updates in float32 and requantizes (round to nearest code, ties up), exactly as
torchao's `single_param_adam`; the direction emitted is `(m / bc1) / (sqrt(v^) / sqrt(bc2) + eps)`
with `bc_i = 1 - beta_i ** step` in float32 (torchao's float32 `step` tensor).

Here a quantized moment is a `QuantizedMoment(codes, scale)` node (the qmap is a constant of
the format, `qmap(bits, signed)`); a plain one is an array. Quantization is bit for bit
torchao's (`quantize`, `dequantize`; tests/transforms/test_quantized_adam.py), and so are the
float32 moments a step computes from the codes (XLA:CPU's rewrites that torch's eager kernels
do not make, a fused multiply-add or a division turned into a product with a reciprocal, are
kept out: `_rounded`, `_block_scale`), so that the codes after a step are those of torchao's
eager step. The state declares its torch layout (`declare_torch_state(..., quantized=...)`):
`optimizer.state_dict()` holds a `core.torch_layout.QuantizedTensor` per quantized moment,
which optax_like.interop.torchao turns into torchao's tensor subclass and back.
"""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core import numerics, tree
from optax_like.core.base import GradientTransformation, ScalarOrSchedule
from optax_like.core.leaf_scalars import LeafScalars, leaf_scalars, select_present
from optax_like.core.torch_layout import (
    STEP,
    STEPS_TAKEN,
    QuantizedCodec,
    QuantizedTensor,
    declare_torch_state,
)
from optax_like.transforms._per_param import _second_use_of_lone_scalars, hyperparams

__all__ = [
    "MIN_QUANT_SIZE",
    "QuantizedMoment",
    "ScaleByQuantizedAdamState",
    "dequantize",
    "is_quantized",
    "qmap",
    "quantize",
    "scale_by_quantized_adam",
]

MIN_QUANT_SIZE = 4096  # torchao (after bitsandbytes): only params with >= 4096 values are quantized
FORMATS = (8, 4, "fp8")
_FP8 = jnp.float8_e4m3fn
_FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max


# torchao's 8-bit tables, float32 little-endian, as `torch.tensor(create_dynamic_map(signed))`
# gives them (its `torch.linspace` rounds some entries one float32 ulp away from a scalar
# re-computation, so the tables are stored, not re-derived; tests compare them with torchao's).
_QMAP8_SIGNED = (
    "MzN+v5qZer8AAHe/ZmZzv83Mb78zM2y/mplovwAAZb9mZmG/zcxdvzMzWr+amVa/AABTv2ZmT7/NzEu/MzNIv5qZRL8AAEG/"
    "ZmY9v83MOb80Mza/mpkyvwAAL79mZiu/zcwnvzQzJL+amSC/AAAdv2ZmGb/NzBW/NDMSv5qZDr8AAAu/ZmYHv8zMA78zMwC/"
    "MjP5vgAA8r7MzOq+mpnjvmZm3L4zM9W+AADOvszMxr6amb++Zma4vjMzsb4AAKq+zMyivpqZm75mZpS+NDONvgAAhr6ZmX2+"
    "MzNvvs3MYL5mZlK+AABEvpqZNb4zMye+zcwYvmZmCr4AAPi9NDPbvYXryb33KMS9Z2a+vdejuL1I4bK9uB6tvSpcp72amaG9"
    "CtebvXsUlr3rUZC9XY+Kvc3MhL17FH69XY9yvT0KZ70fhVu9AABQveF6RL3D9Ti9o3AtvYXrIb1nZha9SOEKvVK4/rwVrue8"
    "16PQvJqZubxdj6K8H4WLvMP1aLxI4Tq8ZDsfvBgEFrzNzAy8gZUDvGq89LvTTeK7O9/Pu6RwvbsNAqu7dJOYu90khruKbGe7"
    "XI9Cuy2yHbv8qfG6ne+nuv9ld7o+6Fm6gGo8usHsHroBbwG6g+LHuQXnjLkL1yO5Sx+6uLPvirg0gDe4BkKyt/8FAreUGlq2"
    "t6MTtQAAAAC3oxM1lBpaNv8FAjcGQrI3NIA3OLPvijhLH7o4C9cjOQXnjDmD4sc5AW8BOsHsHjqAajw6PuhZOv9ldzqd76c6"
    "/KnxOi2yHTtcj0I7imxnO90khjt0k5g7DQKrO6RwvTs73887003iO2q89DuBlQM8zcwMPBgEFjxkOx88SOE6PMP1aDwfhYs8"
    "XY+iPJqZuTzXo9A8Fa7nPFK4/jxI4Qo9Z2YWPYXrIT2jcC09w/U4PeF6RD0AAFA9H4VbPT0KZz1dj3I9exR+Pc3MhD1dj4o9"
    "61GQPXsUlj0K15s9mpmhPSpcpz24Hq09SOGyPdejuD1nZr499yjEPYXryT00M9s9AAD4PWZmCj7NzBg+MzMnPpqZNT4AAEQ+"
    "ZmZSPs3MYD4zM28+mZl9PgAAhj40M40+ZmaUPpqZmz7MzKI+AACqPjMzsT5mZrg+mpm/PszMxj4AAM4+MzPVPmZm3D6ameM+"
    "zMzqPgAA8j4yM/k+MzMAP8zMAz9mZgc/AAALP5qZDj80MxI/zcwVP2ZmGT8AAB0/mpkgPzQzJD/NzCc/ZmYrPwAALz+amTI/"
    "NDM2P83MOT9mZj0/AABBP5qZRD8zM0g/zcxLP2ZmTz8AAFM/mplWPzMzWj/NzF0/ZmZhPwAAZT+amWg/MzNsP83Mbz9mZnM/"
    "AAB3P5qZej8zM34/AACAPw=="
)
_QMAP8_UNSIGNED = (
    "AAAAAKp7rjSYCVA1OJsONvbMkjZRTN421eUUN24SgzegceE3aOgfOAAYTziaR344mbuWOGRTrjgx68U4S1kGOcpUQTlJUHw5"
    "5KWbOaIjuTljodY5Ih/0OXHOCDpQjRc6MEwmOhALNTrvyUM60IhSOq9HYTqOBnA6bsV+OgaBlTo1Xro6ZDvfOkoMAjvhehQ7"
    "eOkmOxBYOTunxks7QDVeO9ejcDs3iYE7gsCKO8/3kzsaL507ZmamO7Kdrzv91Lg7SgzCO5VDyzvhetQ7LrLdO3jp5jvFIPA7"
    "D1j5O65HATxU4wU8+X4KPKAaDzxFthM861EYPJLtHDw3iSE8KlwvPGdmRjyjcF084np0PI/ChTyvR5E8zcycPOtRqDwL17M8"
    "KVy/PEfhyjxnZtY8h+vhPKNw7TzD9fg8cD0CPQAACD2Pwg09H4UTPa9HGT09Ch89zcwkPVyPKj3rUTA9exQ2PQrXOz2amUE9"
    "KFxHPbgeTT1H4VI916NYPWdmXj33KGQ9h+tpPRWubz2jcHU9MzN7PeJ6gD0qXIM9cT2GPbgeiT0AAIw9SOGOPZDCkT3Xo5Q9"
    "H4WXPWdmmj2vR5099iigPT4Koz2F66U9zcyoPRWuqz1cj649pHCxPetRtD0zM7c9exS6PcP1vD0L1789UrjCPZqZxT3iesg9"
    "KVzLPQAA1D1mZuI9zczwPTMz/z3MzAY+AAAOPjQzFT5mZhw+mpkjPszMKj4AADI+NDM5PmZmQD6amUc+zMxOPgAAVj40M10+"
    "ZmZkPpqZaz7MzHI+AAB6PpmZgD4zM4Q+zcyHPmZmiz4AAI8+mpmSPjMzlj7MzJk+ZmadPgAAoT6amaQ+MzOoPszMqz5mZq8+"
    "AACzPpqZtj4zM7o+zMy9PmZmwT4AAMU+mpnIPjMzzD7MzM8+ZmbTPgAA1z6amdo+MzPePszM4T5mZuU+AADpPpqZ7D4zM/A+"
    "zMzzPmZm9z4AAPs+mZn+PpoZAT9m5gI/M7MEPwCABj/MTAg/mhkKP2bmCz80sw0/AIAPP81MET+aGRM/ZuYUPzSzFj8AgBg/"
    "zUwaP5oZHD9m5h0/NLMfPwCAIT/NTCM/mhklP2bmJj80syg/AIAqP81MLD+aGS4/ZuYvPzSzMT8AgDM/zUw1P5oZNz9m5jg/"
    "NLM6PwCAPD/NTD4/mhlAP2bmQT80s0M/AIBFP8xMRz+aGUk/ZuZKPzSzTD8AgE4/zExQP5oZUj9m5lM/NLNVPwCAVz/MTFk/"
    "mhlbP2bmXD80s14/AIBgP8xMYj+aGWQ/ZuZlPzSzZz8AgGk/zExrP5oZbT9m5m4/NLNwPwCAcj/MTHQ/mhl2P2bmdz80s3k/"
    "AIB7P8xMfT+aGX8/AACAPw=="
)
# 4-bit: `create_dynamic_map(True, 3, 4)` (15 values and 0, sorted) and `linspace(0, 1, 17)[1:]`.
_QMAP4_SIGNED = (-0.887499988079071, -0.6625000238418579, -0.4375, -0.21249999105930328,
                 -0.07750000059604645, -0.0325000025331974, -0.005499999970197678, 0.0,
                 0.005499999970197678, 0.0325000025331974, 0.07750000059604645, 0.21249999105930328,
                 0.4375, 0.6625000238418579, 0.887499988079071, 1.0)
_QMAPS: dict = {}


def qmap(bits: int, signed: bool) -> np.ndarray:
    """torchao's lookup table of a format (read-only float32): 8-bit `create_dynamic_map(signed)`
    (256 values); 4-bit `create_dynamic_map(True, 3, 4)` signed, `linspace(0, 1, 17)[1:]`
    (no zero) unsigned (16 values)."""
    key = (bits, bool(signed))
    if key not in _QMAPS:
        if bits == 8:
            table = np.frombuffer(base64.b64decode("".join(_QMAP8_SIGNED if signed else _QMAP8_UNSIGNED)), "<f4")
        elif bits == 4:
            table = (np.array(_QMAP4_SIGNED, np.float32) if signed
                     else np.arange(1, 17, dtype=np.float32) / np.float32(16))
        else:
            raise ValueError(f"no code table for bits={bits!r}")
        table = np.array(table, np.float32)
        table.setflags(write=False)
        _QMAPS[key] = table
    return _QMAPS[key]


class QuantizedMoment(NamedTuple):
    codes: jax.Array  # uint8 (8-bit: param shape; 4-bit: numel // 2, packed) or float8_e4m3fn
    scale: jax.Array  # float32, one per block of the flattened tensor


def is_quantized(x: Any) -> bool:
    return isinstance(x, QuantizedMoment)


def _block_scale(x: jax.Array, block_size: int, divisor: float | None = None):
    """torchao's `scale_tensor`: blocks of the flattened tensor, scaled by their absmax."""
    blocks = x.reshape(-1, block_size)
    scale = jnp.clip(jnp.max(jnp.abs(blocks), axis=-1), 1e-12)
    if divisor is not None:
        # a traced divisor: XLA would turn a division by the constant into a product with its
        # (inexact) reciprocal, one ulp off torch's `amax / 448`
        scale = jax.lax.div(scale, jax.lax.optimization_barrier(jnp.full_like(scale, divisor)))
    # `blocks / broadcast(scale)`: XLA:CPU would turn it into a product with the broadcast of
    # `1 / scale` (an ulp off torch's division, which moves a code at a rounding boundary); a
    # divisor that is not a broadcast (a select XLA cannot fold) keeps the division.
    per_value = jnp.broadcast_to(scale[:, None], blocks.shape)
    return blocks / jnp.where(per_value == per_value, per_value, jnp.full((), jnp.nan, per_value.dtype)), scale


def _search(x: jax.Array, table: np.ndarray) -> jax.Array:
    """torchao's branchless binary search, then round to the nearest code (ties up)."""
    n = table.shape[0]
    t = jnp.asarray(table)
    codes = jnp.where(x >= t[n // 2], n // 2, 0).astype(jnp.int32)
    half = n // 4
    while half >= 1:
        codes = codes + jnp.where(x >= t[codes + half], half, 0).astype(jnp.int32)
        half //= 2
    up = jnp.minimum(codes + 1, n - 1)
    low, high = t[codes], t[up]
    codes = jnp.where(x - low >= (high - low) * jnp.float32(0.5), up, codes)
    return codes.astype(jnp.uint8)


def quantize(x: jax.Array, fmt, signed: bool, block_size: int) -> QuantizedMoment:
    """A float32 tensor as torchao's `copy_` into a quantized state stores it."""
    x = x.astype(jnp.float32)
    if fmt == "fp8":
        scaled, scale = _block_scale(x, block_size, _FP8_MAX)
        return QuantizedMoment(scaled.astype(_FP8).reshape(x.shape), scale)
    scaled, scale = _block_scale(x, block_size)
    codes = _search(scaled.reshape(-1), qmap(fmt, signed))
    if fmt == 8:
        return QuantizedMoment(codes.reshape(x.shape), scale)
    return QuantizedMoment((codes[::2] << 4) | codes[1::2], scale)


def dequantize(q: QuantizedMoment, fmt, signed: bool, shape) -> jax.Array:
    """torchao's `dequantize()`: float32 of `shape`."""
    n_blocks = q.scale.shape[0]
    if fmt == "fp8":
        values = q.codes.astype(jnp.float32)
    else:
        codes = q.codes
        if fmt == 4:
            codes = jnp.stack([codes >> 4, codes & 0b1111], axis=-1)
        values = jnp.asarray(qmap(fmt, signed))[codes.astype(jnp.int32)]
    # rounded as torchao's materialized `qmap[codes] * scale` (not contracted into the lerp)
    return _rounded(values.reshape(n_blocks, -1) * q.scale[:, None]).reshape(shape)


def _rounded(product: jax.Array) -> jax.Array:
    """`product` rounded to its dtype as torchao's materialized tensor: XLA:CPU would contract
    it into the sum that reads it (a fused multiply-add, one rounding fewer), an ulp that can
    move a code at a rounding boundary. A select the contraction cannot see through."""
    return jnp.where(product == product, product, jnp.full((), jnp.nan, product.dtype))


def _quantizes(p: Any, block_size: int) -> bool:
    """torchao's `_new_buffer` rule."""
    n = int(np.prod(np.shape(p)))
    return n >= MIN_QUANT_SIZE and n % block_size == 0


def _zeros(p: jax.Array, fmt, block_size: int) -> Any:
    # params-shaped buffers through `tree.full_like`: the param's sharding (also under jit)
    if not _quantizes(p, block_size):
        return tree.full_like(p, 0)  # torch.zeros_like(p)
    n = int(np.prod(p.shape))
    if fmt == 4 and n % 2:
        # torchao fails at the first step (packing an odd number of codes); refused before any state
        raise ValueError(f"block_size={block_size} quantizes a param of shape {tuple(p.shape)} (an odd "
                         "number of values) to 4 bits, two codes per byte: choose a block_size that does not divide it "
                         "or an even one")
    scale = jnp.zeros((n // block_size,), jnp.float32)
    if fmt == "fp8":
        return QuantizedMoment(tree.full_like(p, 0, _FP8), scale)
    if fmt == 8:
        return QuantizedMoment(tree.full_like(p, 0, jnp.uint8), scale)
    return QuantizedMoment(jnp.zeros((n // 2,), jnp.uint8), scale)


class ScaleByQuantizedAdamState(NamedTuple):
    exp_avg: Any  # per param: QuantizedMoment (signed map) or an array of the param's dtype
    exp_avg_sq: Any  # per param: QuantizedMoment (unsigned map) or an array
    max_exp_avg_sq: Any  # as exp_avg_sq with amsgrad, else None per param
    step: LeafScalars  # float32 per param (torchao's `state['step']`, a float32 tensor)
    schedule_count: jax.Array  # updates applied so far, for scheduled betas


def _format_of(node: QuantizedMoment, param: Any) -> str:
    """The state-dict format of a quantized moment of `param`: "fp8" by its codes' dtype,
    "4bit" when two codes share a byte, else "8bit"."""
    if jnp.dtype(node.codes.dtype) == jnp.dtype(_FP8):
        return "fp8"
    return "4bit" if int(np.size(node.codes)) * 2 == int(np.prod(np.shape(param))) else "8bit"


def _codec(signed: bool) -> QuantizedCodec:
    """The state-dict form of a quantized moment (`core.torch_layout.QuantizedTensor`, torchao's
    OptimState8bit / OptimState4bit / OptimStateFp8): codes and scale as they are, the format's
    table, the param's shape and dtype."""

    def export(node: QuantizedMoment, param: Any) -> QuantizedTensor:
        fmt = _format_of(node, param)
        table = None if fmt == "fp8" else qmap(8 if fmt == "8bit" else 4, signed)
        return QuantizedTensor(node.codes, node.scale, table, format=fmt, signed=signed,
                               shape=np.shape(param), dtype=param.dtype)

    def load(value: QuantizedTensor, fresh: QuantizedMoment) -> QuantizedMoment:
        codes = np.asarray(value.codes)
        codes = codes.astype(fresh.codes.dtype) if codes.dtype != fresh.codes.dtype else codes.copy()
        # host arrays: the converter moves the loaded state to the device in one call
        return QuantizedMoment(codes.reshape(fresh.codes.shape),  # pyright: ignore[reportArgumentType]
                               np.asarray(value.scale, np.float32).copy())  # pyright: ignore[reportArgumentType]

    return QuantizedCodec(QuantizedMoment, export, load)


declare_torch_state(
    ScaleByQuantizedAdamState,
    buffers=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    scalars={"step": STEP},
    internal={"schedule_count": STEPS_TAKEN},
    started="step",
    quantized={"exp_avg": _codec(True), "exp_avg_sq": _codec(False), "max_exp_avg_sq": _codec(False)},
    tensor_group_entries=("lr",),  # torchao's _AdamBase.add_param_group: a float32 tensor lr
    # the factories' arguments that torchao keeps as optimizer attributes
    attribute_group_entries=("block_size", "bf16_stochastic_round"),
)


def check_block_size(block_size: Any, fmt) -> int:
    """A positive int. torchao does not check it: 0 fails at the first step
    (`ZeroDivisionError`), a negative one or a float when the state is made; a size that does
    not divide a param's size keeps that param's moments plain."""
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size <= 0:
        raise ValueError(f"Invalid block_size: {block_size!r} (a positive int is required)")
    if fmt not in FORMATS:
        raise ValueError(f"Invalid format: {fmt!r} (one of {FORMATS})")
    return int(block_size)


def _is_moment_leaf(x: Any) -> bool:
    return x is None or is_quantized(x)


def scale_by_quantized_adam(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    amsgrad: bool = False,
    *,
    bits=8,
    block_size: int = 256,
    learning_rate: ScalarOrSchedule | None = None,
    weight_decay: ScalarOrSchedule | None = None,
    decoupled: bool = False,
) -> GradientTransformation:
    """Adam with torchao's quantized moments (`bits` 8, 4 or "fp8"), in torchao's
    `single_param_adam` order (float32 throughout):

        t   <- t + 1                                   (float32, per param)
        g   <- g + wd * p                              (weight_decay, not decoupled)
        p   <- p - (lr * wd) * p                       (weight_decay, decoupled)
        m    = lerp(deq(m_q), g, 1 - b1);   m_q <- quant(m)
        v    = lerp(deq(v_q), g * g, 1 - b2); v_q <- quant(v)
        v^   = max(deq(v^_q), v); v^_q <- quant(v^)   if amsgrad
        p   <- p - (lr * (m / (1 - b1^t))) / (sqrt(v^ or v) / sqrt(1 - b2^t) + eps)

    The moments of the step itself are the float32 ones (torchao keeps "a high precision copy
    for the param update"); only the stored state is quantized. Params with fewer than 4096
    values, or whose size `block_size` does not divide, keep plain moments in their dtype.

    With `learning_rate` (what the `adam8bit`, ... factories use) this is torchao's whole step:
    `update` needs the params, computes the new param in float32 from `float32(p)` as above
    and emits the change `p_new - p` in the param's dtype (float32 for bfloat16/float16 params),
    so that `apply_updates` lands on torchao's `p.copy_(p_f32)`: float64 params get the float32
    value, 16-bit ones its rounding. Without it, the update is the direction
    `(m / bc1) / (sqrt(v^) / sqrt(bc2) + eps)` (float32), for a chain of your own.

    A leaf whose update is None is skipped, its state and step untouched (the per-param `step`
    is a `LeafScalars`, shared until some leaf misses a gradient: `per_leaf_scalars`). Real
    params only.
    """
    block_size = check_block_size(block_size, bits)
    amsgrad = bool(amsgrad)
    full_step = learning_rate is not None
    if not full_step and weight_decay is not None:
        raise ValueError("scale_by_quantized_adam: weight_decay needs learning_rate (torchao's whole step)")

    def init(params):
        leaves, treedef = jax.tree.flatten(params)
        for p in leaves:
            if jnp.iscomplexobj(p):
                raise TypeError("quantized Adam states: complex params are not supported (torchao casts them to real, "
                                "dropping the imaginary part)")
        moments = lambda: treedef.unflatten([_zeros(p, bits, block_size) for p in leaves])
        return ScaleByQuantizedAdamState(
            exp_avg=moments(),
            exp_avg_sq=moments(),
            max_exp_avg_sq=moments() if amsgrad else treedef.unflatten([None] * len(leaves)),
            step=leaf_scalars(params, 0, jnp.float32),
            schedule_count=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None):
        h = hyperparams(state.schedule_count, b1=b1, b2=b2, eps=eps, lr=learning_rate, wd=weight_decay)
        f32 = jnp.dtype(jnp.float32)
        treedef = jax.tree.structure(state.exp_avg, is_leaf=_is_moment_leaf)
        grads = treedef.flatten_up_to(updates)
        ms, vs, vmaxs = (treedef.flatten_up_to(getattr(state, name))
                         for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
        lr: Any = None
        wd: Any = None
        ps: list[Any] = [None] * len(ms)
        if full_step:
            if params is None:
                raise ValueError("scale_by_quantized_adam(learning_rate=...) steps the params: update needs them")
            ps = treedef.flatten_up_to(params)
            lr = numerics.scalar(h.lr, f32)  # torchao's group lr: a float32 tensor
            wd = None if weight_decay is None else numerics.scalar(h.wd, f32)
        reference = treedef.unflatten([None if m is None else 0 for m in ms])
        counts = state.step.map(lambda t: t + jnp.float32(1))

        def corrections(t):  # torchao: `1 - beta1**step`, `(1 - beta2**step).sqrt()` (float32)
            bc1 = jnp.float32(1) - jnp.power(numerics.scalar(h.b1, f32), t)
            bc2 = jnp.float32(1) - jnp.power(numerics.scalar(h.b2, f32), t)
            return bc1, jnp.sqrt(bc2)

        scalars_of = numerics.once_per_step(corrections)
        used = []  # per leaf: the step scalars its math divides by (a lone one gets a second use)
        out_u, out_m, out_v, out_vmax = [], [], [], []
        index = 0
        for g, m_s, v_s, vmax_s, p in zip(grads, ms, vs, vmaxs, ps):
            if m_s is None or g is None:  # not optimized, or no gradient (torch's `grad is None`)
                index += m_s is not None
                for out, x in zip((out_u, out_m, out_v, out_vmax), (None if m_s is not None else g, m_s, v_s, vmax_s)):
                    out.append(x)
                continue
            bc1, sqrt_bc2 = scalars_of(counts[index])
            used.append((bc1, sqrt_bc2))
            index += 1

            def load(x, signed):
                return dequantize(x, bits, signed, g.shape) if is_quantized(x) else x.astype(f32)

            def store(x, old, signed):
                return quantize(x, bits, signed, block_size) if is_quantized(old) else x.astype(old.dtype)

            g32 = g.astype(f32)
            p32 = p0 = g32  # (the param's float32 value in the full step)
            if full_step:
                p32 = p0 = p.astype(f32)
                if wd is not None and decoupled:  # p_f32 - lr * weight_decay * p_f32
                    p32 = p32 - _rounded(_rounded(lr * wd) * p32)
                elif wd is not None:  # grad_f32 + weight_decay * p_f32
                    g32 = g32 + _rounded(wd * p32)
            m = numerics.lerp(load(m_s, True), g32, numerics.one_minus(h.b1, f32))
            v = numerics.lerp(load(v_s, False), _rounded(g32 * g32), numerics.one_minus(h.b2, f32))
            if amsgrad:
                vhat = jnp.maximum(load(vmax_s, False), v)
                out_vmax.append(store(vhat, vmax_s, False))
            else:
                vhat = v
                out_vmax.append(vmax_s)
            denom = jnp.sqrt(vhat) / sqrt_bc2 + numerics.scalar(h.eps, f32)
            if full_step:
                new_p = p32 - _rounded(lr * (m / bc1)) / denom
                # the change that `apply_updates` adds back: torchao's `p.copy_(p_f32)` (exact
                # where p_new and p are within a factor 2 of each other, Sterbenz)
                out_u.append(new_p - p0 if numerics.compute_dtype(p.dtype) == f32 and p.dtype != f32
                             else new_p.astype(p.dtype) - p)
            else:
                out_u.append((m / bc1) / denom)
            out_m.append(store(m, m_s, True))
            out_v.append(store(v, v_s, False))
        unflatten = treedef.unflatten
        new_state = ScaleByQuantizedAdamState(
            exp_avg=unflatten(out_m),
            exp_avg_sq=unflatten(out_v),
            max_exp_avg_sq=unflatten(out_vmax),
            step=select_present(counts, state.step, updates, reference),
            schedule_count=_second_use_of_lone_scalars(numerics.safe_increment(state.schedule_count), used),
        )
        return unflatten(out_u), new_state

    return GradientTransformation(init, update)
