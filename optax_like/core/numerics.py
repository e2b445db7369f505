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

import contextvars
import functools
import numbers
import operator
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_like.core.base import ScalarOrSchedule

# Host scalar types: values whose arithmetic we may do in float64 before casting.
_HOST_SCALARS = (numbers.Number, np.number, np.ndarray, np.bool_)


def is_host_scalar(x: Any) -> bool:
    """True for Python/NumPy scalars (host values); False for jax arrays and tracers."""
    return isinstance(x, _HOST_SCALARS) and not isinstance(x, jax.Array)


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


def as_hyperparam(value: Any, dtype=None) -> jax.Array:
    """A hyperparameter as a non-weak scalar array (so edits never change a jit signature).

    Python scalars and bools get the default float dtype (`float_dtype()`) unless `dtype` is
    given; arrays keep their own float dtype unless `dtype` is given.
    """
    if isinstance(value, jax.Array) and dtype is None and not value.weak_type:
        if jnp.issubdtype(value.dtype, jnp.floating):
            return value
    if dtype is None:
        src = getattr(value, "dtype", None)
        dtype = src if src is not None and jnp.issubdtype(src, jnp.floating) else float_dtype()
    return jnp.asarray(value, dtype=jax.dtypes.canonicalize_dtype(dtype))


def check_representable(value: Any, dtype, name: str) -> None:
    """Raises torch's overflow RuntimeError, naming `name`, when a finite host `value` becomes
    inf in `dtype` (e.g. lr=1e308 as float32): never a silent inf in the step's math."""
    if isinstance(value, (tuple, list)):
        for v in value:
            check_representable(v, dtype, name)
        return
    if isinstance(value, jax.core.Tracer) or not jnp.issubdtype(jnp.dtype(dtype), jnp.inexact):
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
# `one_minus`, `bias_correction`, `power` and `radam_rho` use them instead of deriving them
# from the rounded `x`; every other use sees the value. An explicit value, not a context: the
# same factory call gives the same program wherever it is traced.
# ---------------------------------------------------------------------------------------------


@jax.tree_util.register_pytree_node_class
class PreciseScalar:
    """A traced hyperparameter `value` with its host-computed `one_minus_value` (1 - x) and
    `log_value` (log x, nan for x <= 0), all 0-d arrays of one dtype.

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


def _delegate(name):
    def op(self, *others):
        return getattr(jnp.asarray(self.value), name)(*(plain(o) for o in others))
    op.__name__ = name
    return op


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__pow__", "__rpow__", "__neg__", "__pos__", "__abs__", "__lt__",
              "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(PreciseScalar, _name, _delegate(_name))
PreciseScalar.__hash__ = None


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
    if is_host_scalar(x):
        if isinstance(x, (float, int)):  # the common case: once per (value, dtype) per process
            return _rounded_constant(float(x), jnp.dtype(dtype).name, "hyperparameter")
        check_representable(x, dtype, "hyperparameter")
        return np.asarray(np.float64(x), dtype=dtype)
    return jnp.asarray(plain(x)).astype(dtype)


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
    shared (`core.tree.LeafScalars`) every leaf passes the same `t`, so scalar work such as bias
    corrections is traced once, not once per leaf (XLA would merge the copies, but tracing and
    compiling them costs time on trees of many leaves)."""
    memo: dict = {}

    def cached(t, *keys):
        key = (id(t), *keys)
        hit = memo.get(key)
        if hit is None or hit[0] is not t:
            hit = memo[key] = (t, fn(t, *keys))  # `t` kept alive: its id is not reused meanwhile
        return hit[1]

    return cached


def bias_correction_per_step(beta: Any) -> Callable:
    """`(t, dtype) -> bias_correction(beta, t, dtype)`, traced once per step value (`once_per_step`)."""
    return once_per_step(lambda t, dtype: bias_correction(beta, t, dtype))


def bias_correction(beta: Any, count: jax.Array, dtype) -> jax.Array:
    """`1 - beta**count`, accurate to a few ulps for every count (torch's `bias_correction`).

    Computed as `-expm1(count * log(beta))`; `log(beta)` is taken in float64 on the host when
    `beta` is a host scalar, else as `log1p(-(1 - beta))` in the graph. `beta == 0` gives 1.
    """
    count = jnp.asarray(count)
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
    if isinstance(x, (jax.Array, jax.core.Tracer)) and x.dtype == dtype and not getattr(x, "weak_type", False):
        return x
    return jax.lax.convert_element_type(x, dtype)


# The step scalars each leaf's math declared (`step_scalars`), while `per_param_update` traces it.
_DECLARED: contextvars.ContextVar = contextvars.ContextVar("optax_like_step_scalars", default=None)


def step_scalars(scalars: tuple) -> tuple:
    """Declare the traced step scalars (bias corrections, step sizes) one leaf's math uses;
    returns `scalars` unchanged.

    Why: XLA's algebraic simplifier (on CPU) rewrites `x / broadcast(s)` into `x * broadcast(1 /
    s)`, and `sqrt(v) / sqrt(s)` into `sqrt(v) * rsqrt(s)`, when `s` has a single use. A step
    scalar shared by many leaves has many uses and keeps torch's division; in a tree of one leaf,
    for a leaf whose step counter is stored apart (`per_leaf_scalars`) or whose dtype no other
    leaf has, it has one, and that leaf would round differently from the same leaf in a model.
    `per_param_update` counts the declarations and gives each scalar that only one leaf
    declared a second use (one `optimization_barrier` with the step's new `schedule_count`, a
    scalar output: scalars only, so no update is held in memory for it on any backend). Trees whose leaves share their
    scalars get no barrier at all. tests/test_tree_independence.py checks the result: a leaf
    alone, beside others and with its own counters, bit for bit.
    Host scalars (constants in the program) need nothing and are not recorded.
    """
    declared = _DECLARED.get()
    if declared is not None:
        declared.extend(s for s in scalars if isinstance(s, (jax.Array, jax.core.Tracer)))
    return scalars


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


def lerp(start: jax.Array, end: jax.Array, weight: jax.Array) -> jax.Array:
    """torch's `start.lerp_(end, weight)` with its CPU formula (exact at both ends):

        weight < 0.5:  start + weight * (end - start)
        else:          end - (end - start) * (1 - weight)
    """
    weight = plain(weight)
    if isinstance(weight, (np.ndarray, np.generic, float, int)):  # a host constant: pick the branch now
        # on lax directly when the weight has the operands' dtype (the hot path of Adam-style
        # moments, `one_minus`; see `cast`), else through jnp's promotion
        exact = isinstance(weight, (np.ndarray, np.generic)) and weight.dtype == start.dtype == end.dtype
        add, sub, mul = (lax.add, lax.sub, lax.mul) if exact else (operator.add, operator.sub, operator.mul)
        diff = sub(end, start)
        if abs(float(weight)) < 0.5:
            return add(start, mul(weight, diff))
        return sub(end, mul(diff, 1 - weight))
    diff = end - start
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff, end - diff * (1 - weight))


# ---------------------------------------------------------------------------------------------
# RAdam's length of the approximated simple moving average (rho), without cancellation.
#
# torch computes, in float64 on the host,
#     rho_inf = 2 / (1 - beta2) - 1
#     rho_t   = rho_inf - 2 t beta2^t / (1 - beta2^t)
# which for beta2 near 1 and small t subtracts two numbers near rho_inf ~ 2000 to get ~t: fine
# in float64 (it loses three of sixteen digits), but in float32 rho_t would keep about four
# digits. With L = -log(beta2), x = t L and D(y) = (y/2) coth(y/2) - 1 (smooth, D(y) ~ y^2/12),
# the identities rho_inf = (2/L)(1 + D(L)) and 2 t beta2^t / (1 - beta2^t) = (2/L)(1 + D(x) - x/2)
# give the cancellation-free form
#     rho_t = t - (2/L) (D(x) - D(L))              (used for x < 1/2; D by its Bernoulli series)
#     rho_t = rho_inf - 2 t / expm1(x)             (used for x >= 1/2, where rho_t >= rho_inf/5)
# ---------------------------------------------------------------------------------------------

# (y/2) coth(y/2) - 1 = sum_n B_2n y^2n / (2n)!  (|y| < 2 pi); 8 terms: < 1e-18 relative at y = 1/2.
_HALF_COTH_SERIES = (
    1.0 / 12.0,
    -1.0 / 720.0,
    1.0 / 30240.0,
    -1.0 / 1209600.0,
    1.0 / 47900160.0,
    -691.0 / 1307674368000.0,
    1.0 / 74724249600.0,
    -3617.0 / 10670622842880000.0,
)
_HALF_COTH_SWITCH = 0.5


def _half_coth_minus_one_host(y: float) -> float:
    """`(y/2) coth(y/2) - 1` in float64 on the host, accurate for every y >= 0."""
    if y < _HALF_COTH_SWITCH:
        y2 = y * y
        acc = 0.0
        for c in reversed(_HALF_COTH_SERIES):
            acc = acc * y2 + c
        return acc * y2
    return float((y / 2.0) / np.tanh(y / 2.0) - 1.0)


def _half_coth_minus_one(y: jax.Array) -> jax.Array:
    """`(y/2) coth(y/2) - 1` in the graph (y >= 0, may be +inf), accurate to a few ulps."""
    small = y < _HALF_COTH_SWITCH
    ys = jnp.where(small, y, 0)
    y2 = ys * ys
    acc = jnp.zeros_like(y2)
    for c in reversed(_HALF_COTH_SERIES):
        acc = acc * y2 + c
    yl = jnp.where(small, 1, y)
    return jnp.where(small, acc * y2, (yl / 2) / jnp.tanh(yl / 2) - 1)


def radam_rho(beta2: Any, count: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """RAdam's `(rho_inf, rho_t)` for step `count`, accurate to a few ulps of `dtype`.

        rho_inf = 2 / (1 - beta2) - 1,   rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)

    computed without the cancellation of the formula as written (see the note above); for a
    host `beta2` the constants (`rho_inf`, `log(beta2)`, ...) are float64 on the host. `beta2 = 0`
    gives (1, 1), as torch's formula does.
    """
    count = jnp.asarray(count)
    if is_host_scalar(beta2):
        b = float(np.float64(beta2))
        wide = jnp.promote_types(dtype, jnp.float32)
        if b == 0.0:
            one = jnp.ones(jnp.shape(count), wide).astype(dtype)
            return jnp.ones((), wide).astype(dtype), one
        big_l = -float(np.log(b))
        rho_inf_host = 2.0 / (1.0 - b) - 1.0
        rho_inf = jnp.asarray(rho_inf_host, wide)
        big_l_w = jnp.asarray(big_l, wide)
        two_over_l = jnp.asarray(2.0 / big_l, wide)
        d_l = jnp.asarray(_half_coth_minus_one_host(big_l), wide)
    else:
        precise = _precise(beta2)  # the adapter's host-computed 1 - beta2 and log(beta2)
        beta2 = jnp.asarray(plain(beta2))
        wide = jnp.promote_types(jnp.promote_types(dtype, beta2.dtype), jnp.float32)
        if precise is not None:
            c = precise[0].astype(wide)
            big_l_w = -precise[1].astype(wide)
        else:
            c = 1 - beta2.astype(wide)
            big_l_w = -jnp.log1p(-c)
        rho_inf = 2 / c - 1
        two_over_l = 2 / big_l_w
        d_l = _half_coth_minus_one(big_l_w)
    t = count.astype(wide)
    x = t * big_l_w
    small = x < _HALF_COTH_SWITCH
    series = t - two_over_l * (_half_coth_minus_one(jnp.where(small, x, 0)) - d_l)
    direct = rho_inf - 2 * t / jnp.expm1(jnp.where(small, 1, x))
    rho_t = jnp.where(small, series, direct)
    return rho_inf.astype(dtype), rho_t.astype(dtype)


def radam_first_rectified_step(beta2: Any) -> int | None:
    """The first step t at which torch's RAdam rectifies (`rho_t > 5`), for a host `beta2`.

    Evaluates torch's own float64 expression (`rho_inf - 2 * step * (beta2**step) / (1 -
    beta2**step)` with Python floats), so the switch happens at exactly torch's step; rho_t
    increases with t, so a doubling then bisection search finds it. None when rho_t never
    exceeds 5 (rho_inf <= 5, i.e. beta2 <= 2/3) within the int32 step range.
    """
    b = float(np.float64(beta2))
    rho_inf = 2 / (1 - b) - 1
    if not rho_inf > 5:
        return None

    def rectified(step: int) -> bool:
        step = float(step)
        bias_correction2 = 1 - b**step
        return rho_inf - 2 * step * (b**step) / bias_correction2 > 5.0

    limit = int(np.iinfo(np.int32).max)
    hi = 1
    while not rectified(hi):
        if hi >= limit:
            return None
        hi = min(2 * hi, limit)
    lo = hi // 2  # not rectified (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rectified(mid):
            hi = mid
        else:
            lo = mid
    return hi


# ---------------------------------------------------------------------------------------------
# torch's `differentiable=True` scalar math (Adam/AdamW; added for issue 15.3). On that path
# torch forms the bias corrections from its float32 `step` tensor, `1 - beta ** step`, so they
# are float32 tensors (rounded at each op), not the Python floats of the default path.
# ---------------------------------------------------------------------------------------------


def is_python_number(x: Any) -> bool:
    """True for a hyperparameter that torch would hold as a Python number: a host scalar, or a
    traced value the adapter passes for one (`PreciseScalar`); False for an array (a Tensor)."""
    return is_host_scalar(x) or isinstance(x, PreciseScalar)


def float32_step_bias_correction(beta: Any, count: jax.Array) -> jax.Array:
    """torch's `1 - beta ** step` with `step` its float32 state tensor: `float32(beta) **
    float32(step)` rounded to float32 (computed in float64 where available, so correctly
    rounded but for ties), then `1 - that` in float32. Returns a float32 0-d array."""
    f32 = jnp.dtype(jnp.float32)
    wide = jnp.promote_types(float_dtype(), f32)
    b = jnp.asarray(scalar(beta, f32)).astype(wide)
    t = jnp.asarray(count).astype(f32).astype(wide)
    return 1 - jnp.power(b, t).astype(f32)


def float32_product(a: jax.Array, b: Any) -> jax.Array:
    """`float32(a) * float32(b)` rounded to float32, as torch's float32 tensor product, also
    when a sum consumes it: XLA:CPU contracts `1 - a * b` into a fused multiply-add, which
    skips the product's rounding (one float32 ulp off torch's `1 - (a * b)`). The product goes
    through a select (`x == x`, NaN kept) that the contraction cannot see through."""
    f32 = jnp.dtype(jnp.float32)
    product = jnp.asarray(a).astype(f32) * jnp.asarray(scalar(b, f32)).astype(f32)
    return jnp.where(product == product, product, jnp.full((), jnp.nan, f32))
