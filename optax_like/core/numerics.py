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

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
    return jnp.asarray(value, dtype=dtype)


def resolve(value: ScalarOrSchedule, count: jax.Array) -> Any:
    """`value(count)` for a schedule, else `value` itself."""
    return value(count) if callable(value) else value


def one_minus(x: Any, dtype) -> jax.Array:
    """`1 - x` as torch computes it: in float64 for host scalars, then cast to `dtype`."""
    if is_host_scalar(x):
        return jnp.asarray(1.0 - np.float64(x), dtype=dtype)
    return (1 - jnp.asarray(x)).astype(dtype)


def scalar(x: Any, dtype) -> jax.Array:
    """`x` cast to `dtype` (host scalars are rounded once, from float64)."""
    if is_host_scalar(x):
        return jnp.asarray(np.float64(x), dtype=dtype)
    return jnp.asarray(x).astype(dtype)


def bias_correction(beta: Any, count: jax.Array, dtype) -> jax.Array:
    """`1 - beta**count`, accurate to a few ulps for every count (torch's `bias_correction`).

    Computed as `-expm1(count * log(beta))`; `log(beta)` is taken in float64 on the host when
    `beta` is a host scalar, else as `log1p(-(1 - beta))` in the graph. `beta == 0` gives 1.
    """
    count = jnp.asarray(count)
    if is_host_scalar(beta):
        b = np.float64(beta)
        if b == 0.0:
            return jnp.ones((), dtype)
        log_beta = jnp.asarray(np.log(b), dtype=jnp.promote_types(dtype, jnp.float32))
        result = -jnp.expm1(count.astype(log_beta.dtype) * log_beta)
        return result.astype(dtype)
    beta = jnp.asarray(beta)
    wide = jnp.promote_types(jnp.promote_types(dtype, beta.dtype), jnp.float32)
    beta = beta.astype(wide)
    log_beta = jnp.log1p(-(1 - beta))
    result = -jnp.expm1(count.astype(wide) * log_beta)
    return jnp.where(beta == 0, jnp.ones((), wide), result).astype(dtype)


def power(beta: Any, count: jax.Array, dtype) -> jax.Array:
    """`beta**count` with the same accuracy rules as `bias_correction`."""
    count = jnp.asarray(count)
    if is_host_scalar(beta):
        b = np.float64(beta)
        if b == 0.0:
            return jnp.where(count == 0, 1.0, 0.0).astype(dtype)
        log_beta = jnp.asarray(np.log(b), dtype=jnp.promote_types(dtype, jnp.float32))
        return jnp.exp(count.astype(log_beta.dtype) * log_beta).astype(dtype)
    beta = jnp.asarray(beta)
    wide = jnp.promote_types(jnp.promote_types(dtype, beta.dtype), jnp.float32)
    return jnp.power(beta.astype(wide), count.astype(wide)).astype(dtype)


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
    diff = end - start
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff, end - diff * (1 - weight))
