"""Scalar numerics shared by the transforms: hyperparameter handling and accurate corrections.

torch computes its scalar factors (`1 - beta`, `1 - beta**t`, `lr / bias_correction`) in float64
on the host and casts them into the tensor op. On a device in float32, `1 - beta**t` computed as
written loses about four digits at t=1 with beta=0.999. The helpers here give the same numbers
torch does, to float32 rounding:

- for a concrete hyperparameter (a Python or NumPy scalar) the factor is computed in float64 on
  the host and becomes one constant;
- for a traced hyperparameter (injected, scheduled, or fed by the stateful adapter) it is computed
  in the graph from `log(beta)` with `expm1`, which is accurate to a few ulps for every t.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import core as jax_core
from jax import lax
from jax.typing import ArrayLike

from optax_like.core import hyperparams
from optax_like.core.base import ScalarOrSchedule

# Kinds of values (core.hyperparams, the one classifier): host values, whose arithmetic we may
# do in float64 before casting, and what torch would hold as a Python number.
is_host_scalar = hyperparams.is_host_scalar
is_python_number = hyperparams.is_python_number


def float_dtype() -> jnp.dtype:
    """The default float dtype: float64 under `jax_enable_x64`, else float32."""
    return jnp.dtype(jnp.result_type(float))


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype torch's CPU kernels compute in for a tensor of `dtype` ("opmath").

    float16/bfloat16 are computed in float32 and rounded once on the way out; float32,
    float64 and complex types compute in themselves.
    """
    dtype = jnp.dtype(dtype)
    if dtype in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16)):
        return jnp.dtype(jnp.float32)
    return dtype


def check_representable(value: Any, dtype, name: str) -> None:
    """Raises torch's overflow RuntimeError, naming `name`, when a finite host `value` becomes
    inf in `dtype` (e.g. lr=1e308 as float32): never a silent inf in the step's math."""
    if isinstance(value, (tuple, list)):
        for v in value:
            check_representable(v, dtype, name)
        return
    if isinstance(value, jax_core.Tracer) or not jnp.issubdtype(jnp.dtype(dtype), jnp.inexact):
        return
    try:
        host = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return
    if host.size != 1 or not np.isfinite(host).all():
        return
    with np.errstate(over="ignore"):
        if not np.isfinite(host.astype(jnp.dtype(dtype))).all():
            raise RuntimeError(
                f"value cannot be converted to type {jnp.dtype(dtype).name} without overflow: "
                f"{name}={float(host.reshape(())):g} is beyond {jnp.dtype(dtype).name}'s range "
                "(optax_like traces hyperparameters in float32 unless jax_enable_x64 is on)."
            )


def resolve(value: ScalarOrSchedule, count: jax.Array) -> Any:
    """`value(count)` for a schedule, else `value` itself."""
    return value(count) if callable(value) else value


# ---------------------------------------------------------------------------------------------
# Precise traced scalars. The stateful adapter feeds hyperparameters into its jitted step as
# float32 arrays; `1 - float32(0.999)` is off by 1.3e-5 relative from torch's float64 `1 - 0.999`.
# So the adapter passes each numeric hyperparameter to the factory as a `PreciseScalar`: the
# traced value together with its host-computed (float64, then rounded) `1 - x` and `log(x)`.
# `one_minus`, `bias_correction`, `power` (and RAdam's rho, transforms/radam.py) use them instead
# of deriving them from the rounded `x`; every other use sees the value. An explicit value, not a context: the
# same factory call gives the same program wherever it is traced.
# ---------------------------------------------------------------------------------------------


@jax.tree_util.register_pytree_node_class
class PreciseScalar:
    """A traced hyperparameter `value` with its host-computed `one_minus_value` (1 - x) and
    `log_value` (log x, 0 for x <= 0: consumers select on the value there), all 0-d arrays of
    one dtype.

    Reads like its value: Python arithmetic and comparisons, `astype`, `dtype`, `shape`; jax
    functions take `numerics.plain(x)` (or `numerics.scalar(x, dtype)`)."""

    __slots__ = ("value", "one_minus_value", "log_value")

    def __init__(self, value, one_minus_value, log_value):
        self.value = value
        self.one_minus_value = one_minus_value
        self.log_value = log_value

    def tree_flatten(self):
        return (self.value, self.one_minus_value, self.log_value), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    dtype = property(lambda self: self.value.dtype)
    shape = property(lambda self: jnp.shape(self.value))
    ndim = property(lambda self: jnp.ndim(self.value))

    def astype(self, dtype):
        return jnp.asarray(self.value).astype(dtype)

    def __repr__(self):
        return f"PreciseScalar({self.value!r})"


def precise_triple(x: float) -> tuple[float, float, float]:
    """`x`, `1 - x` and `log x` in float64, as torch's host math computes them from a Python
    float (`log` is 0 for x <= 0, never NaN (states carry it: `jax_debug_nans`, bitwise
    comparisons); its consumers select on the value there): what a `PreciseScalar` carries."""
    x = float(x)
    return x, 1.0 - x, (math.log(x) if x > 0 else 0.0)


def precise_scalar(x: Any, dtype) -> PreciseScalar:
    """A hyperparameter as a `PreciseScalar` of 0-d `dtype` arrays: for a host number (or a
    concrete array) `1 - x` and `log x` from its float64 value, each rounded once
    (`precise_triple`); for a traced value the same computed in the graph."""
    if isinstance(x, PreciseScalar):
        return PreciseScalar(*(jnp.asarray(v).astype(dtype) for v in (x.value, x.one_minus_value, x.log_value)))
    if hyperparams.is_array(x) and not hyperparams.is_array(x, concrete=True):
        value = jnp.asarray(x).astype(dtype)
        log = jnp.where(value > 0, jnp.log(jnp.where(value > 0, value, 1)), 0)
        return PreciseScalar(value, (1 - value).astype(dtype), log.astype(dtype))
    triple = precise_triple(float(np.asarray(plain(x), np.float64)))
    return PreciseScalar(*(jnp.asarray(np.float64(t), dtype) for t in triple))


def _delegate(name):
    def op(self, *others):
        return getattr(jnp.asarray(self.value), name)(*(plain(o) for o in others))
    op.__name__ = name
    return op


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__pow__", "__rpow__", "__neg__", "__pos__", "__abs__", "__lt__",
              "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(PreciseScalar, _name, _delegate(_name))
setattr(PreciseScalar, "__hash__", None)  # unhashable, as a class with __eq__ (set by setattr above)


class PerLayer(PreciseScalar):
    """A hyperparameter whose value differs between the layers of stacked params (a scan over
    layers; `param_groups`' `stacked`): one host float64 value per layer, read at `index`, the
    traced layer index inside `jax.vmap` over the leading axis.

    It reads as a `PreciseScalar` (the layer's value, `1 - x` and `log x`, rounded from its float64
    value), and the host math of `scalar`, `one_minus`, `host_or_traced`, `bias_correction` and
    `power` is done for each layer's value exactly as for a host scalar (Python float64, rounded
    once to the dtype) and the layer's result picked: the vectorised step gives each layer the
    numbers of the unstacked model, where that layer's value is a host scalar, bit for bit
    (tests/param_groups/test_stacked.py, every registry optimizer)."""

    __slots__ = ("host", "index")

    def __init__(self, host: Any, index: Any):
        self.host = tuple(float(h) for h in np.asarray(host, dtype=np.float64).reshape(-1))
        self.index = index
        wide = float_dtype()
        super().__init__(self.pick(self.host, wide), self.per_layer(lambda h: 1.0 - h, wide),
                         self.per_layer(lambda h: float(np.log(np.float64(h))) if h > 0 else 0.0, wide))

    def pick(self, values: Any, dtype) -> jax.Array:
        """`values[index]`: one host value per layer, rounded to `dtype` on the host."""
        return pick_layer(values, self.index, dtype)

    def checked_pick(self, values: Sequence[float], dtype, name: str = "hyperparameter") -> jax.Array:
        """`pick` of per-layer float64 results, each checked (`check_representable`) first."""
        for value in values:
            check_representable(value, dtype, name)
        return self.pick(values, dtype)

    def per_layer(self, fn: Callable[[float], float], dtype, name: str = "hyperparameter") -> jax.Array:
        """`fn(x)` of the layer's value: Python float64 math per layer (as for a host scalar),
        checked and rounded once to `dtype`, then picked."""
        return self.checked_pick([fn(h) for h in self.host], dtype, name)

    def log_and_zero(self, dtype) -> tuple[jax.Array, jax.Array]:
        """The host path of `bias_correction`/`power` per layer: `log(beta)` (float64, rounded to
        `dtype`; 0 where beta is 0) and whether beta is 0."""
        log_beta = self.per_layer(lambda b: float(np.log(np.float64(b))) if b != 0.0 else 0.0, dtype)
        return log_beta, self.pick([b == 0.0 for b in self.host], jnp.bool_)

    def __repr__(self):
        return f"PerLayer({list(self.host)!r})"


def pick_layer(values: Any, index: Any, dtype) -> jax.Array:
    """`values[index]` of one host value per layer (rounded to `dtype` on the host), at a traced
    layer `index` (inside `jax.vmap` over stacked layers)."""
    return jnp.asarray(np.asarray(values, dtype=np.float64).astype(dtype))[index]


def _per_layer_host(fn: Callable, values: tuple, dtype) -> jax.Array | None:
    """`host_or_traced`'s host math with `PerLayer` values among host numbers: per layer."""
    layers = [v for v in values if isinstance(v, PerLayer)]
    if not layers or not all(isinstance(v, PerLayer) or is_host_scalar(v) for v in values):
        return None
    first = layers[0]
    if any(v.index is not first.index or len(v.host) != len(first.host) for v in layers):
        raise ValueError("PerLayer hyperparameters of one step must share the layer index.")
    return first.checked_pick([fn(*(v.host[i] if isinstance(v, PerLayer) else float(v) for v in values))
                               for i in range(len(first.host))], dtype)


def plain(x: Any) -> Any:
    """The plain value of a hyperparameter (a `PreciseScalar`'s traced value; others unchanged)."""
    return x.value if isinstance(x, PreciseScalar) else x


def _precise(x: Any):
    """`(one_minus_x, log_x)` carried by a `PreciseScalar`, else None."""
    if isinstance(x, PreciseScalar):
        return x.one_minus_value, x.log_value
    return None


def one_minus(x: Any, dtype) -> jax.Array | np.ndarray:
    """`1 - x` as torch computes it: in float64 for host scalars, then cast to `dtype`.

    For a host scalar the result is a 0-d NumPy array (a constant, not a traced value: code
    that branches on it, like `lerp`, decides while tracing)."""
    if isinstance(x, PerLayer):
        return x.per_layer(lambda h: 1.0 - h, dtype, "1 - hyperparameter")
    precise = _precise(x)
    if precise is not None:
        return precise[0].astype(dtype)
    if is_host_scalar(x):
        if isinstance(x, (float, int)):  # the common case: once per (value, dtype) per process
            return _rounded_constant(1.0 - float(x), jnp.dtype(dtype).name, "1 - hyperparameter")
        check_representable(1.0 - np.float64(x), dtype, "1 - hyperparameter")
        return np.asarray(1.0 - np.float64(x), dtype=dtype)
    return (1 - jnp.asarray(plain(x))).astype(dtype)


def scalar(x: Any, dtype) -> jax.Array | np.ndarray:
    """`x` cast to `dtype` (host scalars are rounded once, from float64, to a 0-d NumPy array)."""
    if isinstance(x, PerLayer):
        return x.per_layer(lambda h: h, dtype)
    if is_host_scalar(x):
        if isinstance(x, (float, int)):  # the common case: once per (value, dtype) per process
            return _rounded_constant(float(x), jnp.dtype(dtype).name, "hyperparameter")
        check_representable(x, dtype, "hyperparameter")
        return np.asarray(np.float64(x), dtype=dtype)
    return jnp.asarray(plain(x)).astype(dtype)


def host_or_traced(fn: Callable, *values: Any, dtype) -> Any:
    """`fn(*values)` as the reference's Python float math (float64, rounded once to `dtype`) when
    every value is a host number, else `fn` on the values cast to `dtype` (traced math): e.g.
    torch's `1 - lr * weight_decay`, `host_or_traced(lambda a, b: 1 - a * b, lr, wd, dtype=...)`."""
    if all(is_host_scalar(x) for x in values):
        return scalar(fn(*(float(x) for x in values)), dtype)
    per_layer = _per_layer_host(fn, values, dtype)
    if per_layer is not None:
        return per_layer
    return fn(*(scalar(x, dtype) for x in values))


@functools.lru_cache(maxsize=1024)
def _rounded_constant(value: float, dtype_name: str, name: str) -> np.ndarray:
    """A float64 host value checked (`check_representable`, naming `name`) and rounded to a
    0-d array, read-only: one array serves every leaf (`scalar`, `one_minus`)."""
    check_representable(value, dtype_name, name)
    out = np.asarray(np.float64(value), dtype=jnp.dtype(dtype_name))
    out.flags.writeable = False
    return out


def once_per_step(fn: Callable) -> Callable:
    """`fn(t, *keys)` traced once per distinct step array `t` (by identity) and hashable `keys`
    (a dtype, ...). Make one inside each `update`: while the per-parameter steps are stored
    shared (`core.leaf_scalars.LeafScalars`) every leaf passes the same `t`, so scalar work such
    as bias corrections is traced once, not once per leaf (XLA would merge the copies, but
    tracing and compiling them costs time on trees of many leaves). `per_param_update` calls
    its `step_scalars` through one."""
    memo: dict = {}

    def cached(t, *keys):
        key = (id(t), *keys)
        hit = memo.get(key)
        if hit is None or hit[0] is not t:
            hit = memo[key] = (t, fn(t, *keys))  # `t` kept alive: its id is not reused meanwhile
        return hit[1]

    return cached


def bias_correction(beta: Any, count: jax.Array, dtype) -> jax.Array:
    """`1 - beta**count`, accurate to a few ulps for every count (torch's `bias_correction`).

    Computed as `-expm1(count * log(beta))`; `log(beta)` is taken in float64 on the host when
    `beta` is a host scalar, else as `log1p(-(1 - beta))` in the graph. `beta == 0` gives 1.
    """
    count = jnp.asarray(count)
    if isinstance(beta, PerLayer):  # the host path below, per layer
        wide = jnp.promote_types(dtype, jnp.float32)
        log_beta, zero = beta.log_and_zero(wide)
        result = -jnp.expm1(count.astype(wide) * log_beta).astype(dtype)
        return jnp.where(zero, jnp.ones((), dtype), result)
    precise = _precise(beta)
    if precise is not None:
        wide = jnp.promote_types(dtype, jnp.float32)
        result = -jnp.expm1(count.astype(wide) * precise[1].astype(wide))
        return jnp.where(jnp.asarray(plain(beta)) == 0, jnp.ones((), wide), result).astype(dtype)
    if is_host_scalar(beta):
        b = np.float64(beta)
        if b == 0.0:
            return jnp.ones((), dtype)
        log_beta = jnp.asarray(np.log(b), dtype=jnp.promote_types(dtype, jnp.float32))
        result = -jnp.expm1(count.astype(log_beta.dtype) * log_beta)
        return result.astype(dtype)
    beta = jnp.asarray(plain(beta))
    wide = jnp.promote_types(jnp.promote_types(dtype, beta.dtype), jnp.float32)
    beta = beta.astype(wide)
    log_beta = jnp.log1p(-(1 - beta))
    result = -jnp.expm1(count.astype(wide) * log_beta)
    return jnp.where(beta == 0, jnp.ones((), wide), result).astype(dtype)


def power(beta: Any, count: jax.Array, dtype) -> jax.Array:
    """`beta**count` with the same accuracy rules as `bias_correction`."""
    count = jnp.asarray(count)
    if isinstance(beta, PerLayer):  # the host path below, per layer
        wide = jnp.promote_types(dtype, jnp.float32)
        log_beta, zero = beta.log_and_zero(wide)
        exact = jnp.exp(count.astype(wide) * log_beta).astype(dtype)
        return jnp.where(zero, jnp.where(count == 0, 1.0, 0.0).astype(dtype), exact)
    precise = _precise(beta)
    if precise is not None and not is_host_scalar(beta):
        wide = jnp.promote_types(dtype, jnp.float32)
        b = jnp.asarray(plain(beta)).astype(wide)
        exact = jnp.exp(count.astype(wide) * precise[1].astype(wide))
        return jnp.where(b > 0, exact, jnp.power(b, count.astype(wide))).astype(dtype)
    if is_host_scalar(beta):
        b = np.float64(beta)
        if b == 0.0:
            return jnp.where(count == 0, 1.0, 0.0).astype(dtype)
        log_beta = jnp.asarray(np.log(b), dtype=jnp.promote_types(dtype, jnp.float32))
        return jnp.exp(count.astype(log_beta.dtype) * log_beta).astype(dtype)
    beta = jnp.asarray(plain(beta))
    wide = jnp.promote_types(jnp.promote_types(dtype, beta.dtype), jnp.float32)
    return jnp.power(beta.astype(wide), count.astype(wide)).astype(dtype)


def cast(x: Any, dtype) -> Any:
    """`x.astype(dtype)`, returning `x` itself when it already is a non-weak array of `dtype`.

    The per-leaf hot paths call this instead of `.astype`: jnp's astype dispatches a jitted
    conversion even when there is nothing to convert (about 10 us per leaf while tracing,
    which a step pays once per leaf and buffer). The jaxpr is the same either way.
    """
    dtype = jnp.dtype(dtype)
    if isinstance(x, (jax.Array, jax_core.Tracer)) and x.dtype == dtype and not getattr(x, "weak_type", False):
        return x
    return jax.lax.convert_element_type(x, dtype)


def real_view(x: jax.Array) -> jax.Array:
    """A complex array as pairs of reals (torch's `view_as_real`); real arrays unchanged."""
    if jnp.iscomplexobj(x):
        return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
    return x


def complex_view(x: jax.Array, like: jax.Array) -> jax.Array:
    """Inverse of `real_view` for arrays shaped like `like` (torch's `view_as_complex`)."""
    if jnp.iscomplexobj(like):
        return jax.lax.complex(x[..., 0], x[..., 1]).astype(like.dtype)
    return x


def safe_increment(count: jax.Array) -> jax.Array:
    """`count + 1`, saturating at the dtype's max instead of wrapping around."""
    max_value = jnp.iinfo(count.dtype).max if jnp.issubdtype(count.dtype, jnp.integer) else jnp.inf
    return jnp.where(count < max_value, count + 1, max_value).astype(count.dtype)


def lerp(start: jax.Array, end: jax.Array, weight: ArrayLike | PreciseScalar) -> jax.Array:
    """torch's `start.lerp_(end, weight)` with its CPU formula (exact at both ends):

        weight < 0.5:  start + weight * (end - start)
        else:          end - (end - start) * (1 - weight)
    """
    w: ArrayLike = plain(weight)  # (not a PreciseScalar)
    if isinstance(w, (np.ndarray, np.generic, float, int)):  # a host constant: pick the branch now
        # on lax directly when the weight has the operands' dtype (the hot path of Adam-style
        # moments, `one_minus`; see `cast`), else through jnp's promotion
        exact = isinstance(w, (np.ndarray, np.generic)) and w.dtype == start.dtype == end.dtype
        add, sub, mul = (lax.add, lax.sub, lax.mul) if exact else (operator.add, operator.sub, operator.mul)
        diff = sub(end, start)
        if abs(float(w)) < 0.5:
            return add(start, mul(w, diff))
        return sub(end, mul(diff, 1 - w))
    diff = end - start
    return jnp.where(jnp.abs(w) < 0.5, start + w * diff, end - diff * (1 - w))


def exact_difference(new: jax.Array, old: jax.Array) -> jax.Array:
    """`new - old`, nudged by one ulp where that makes `old + u == new` (what `apply_updates`
    computes), so an update that sets a param to `new` lands on it: exact unless `new` is far
    smaller than `old` in magnitude (then within ulp(old)/2). For transforms whose reference
    writes the param (`p.copy_(slow)`, schedulefree's `p.lerp_`) instead of adding to it.
    Complex arrays: part by part."""
    if jnp.issubdtype(new.dtype, jnp.complexfloating):
        return lax.complex(exact_difference(jnp.real(new), jnp.real(old)), exact_difference(jnp.imag(new), jnp.imag(old)))
    u = lax.sub(new, old)
    landed = lax.add(old, u)
    if jnp.dtype(u.dtype).itemsize not in _SAME_WIDTH_INT:  # float8: jnp's general nextafter
        up = jnp.nextafter(u, jnp.where(landed < new, jnp.inf, -jnp.inf).astype(u.dtype))
    else:
        up = _next_toward(u, lax.lt(landed, new))
    u = lax.select(lax.bitwise_and(lax.ne(landed, new), lax.eq(lax.add(old, up), new)), up, u)
    return lax.select(lax.eq(new, old), lax.full_like(u, 0), u)


def _next_toward(u: jax.Array, upward: jax.Array) -> jax.Array:
    """`nextafter(u, +inf if upward else -inf)` for zero and finite `u`, on the bits (a few
    integer ops where `jnp.nextafter`'s general expansion takes ~25 per element). NaN and
    infinite `u` give some NaN or infinity: `exact_difference` never picks those (`old + up`
    cannot equal `new` there unless `old + u` did)."""
    bits = lax.bitcast_convert_type(u, _SAME_WIDTH_INT[jnp.dtype(u.dtype).itemsize])
    # a zero starts from the zero of the direction's sign (+-0 -> +-smallest subnormal below)
    signed_zero = lax.select(upward, lax.full_like(bits, 0), lax.full_like(bits, jnp.iinfo(bits.dtype).min))
    bits = lax.select(lax.eq(u, lax.full_like(u, 0)), signed_zero, bits)
    # one step on the magnitude's bits: toward zero when the sign opposes the direction
    toward_zero = lax.eq(lax.lt(bits, lax.full_like(bits, 0)), upward)
    return lax.bitcast_convert_type(lax.add(bits, lax.select(toward_zero, lax.full_like(bits, -1), lax.full_like(bits, 1))),
                                    u.dtype)


_SAME_WIDTH_INT = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}


def float32_product(a: jax.Array, b: Any) -> jax.Array:
    """`float32(a) * float32(b)` rounded to float32, as torch's float32 tensor product, also
    when a sum consumes it: XLA:CPU contracts `1 - a * b` into a fused multiply-add, which
    skips the product's rounding (one float32 ulp off torch's `1 - (a * b)`). The product goes
    through a select (`x == x`, NaN kept) that the contraction cannot see through."""
    f32 = jnp.dtype(jnp.float32)
    product = jnp.asarray(a).astype(f32) * jnp.asarray(scalar(b, f32)).astype(f32)
    return jnp.where(product == product, product, jnp.full((), jnp.nan, f32))
