"""The Cautious Optimizers mask (Liang et al., 2024, arXiv:2411.16085), as timm applies it.

timm's `caution=True` options (Lion, ADOPT, LaProp, MARS, NAdamW, the "c" names of its factory)
all write the same three lines on one param's update `u` and gradient `g`:

    mask = (u * g > 0).to(g.dtype)
    mask.div_(mask.mean().clamp_(min=1e-3))
    u = u * mask

Where timm applies them to complex tensors as they are (SGDW: no `view_as_real`), torch's `>`
refuses them: `refuse_complex` raises its error at `init`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from optax_like.transforms import _per_param

# torch's names of the complex dtypes, in the error of its comparison kernel
_TORCH_COMPLEX = {jnp.dtype(jnp.complex64): "ComplexFloat", jnp.dtype(jnp.complex128): "ComplexDouble"}


def cautious(u: jax.Array, g: jax.Array) -> jax.Array:
    """`u` with the components whose sign disagrees with `g` zeroed and the rest divided by the
    kept fraction of the leaf (at least 1e-3): timm's caution, on one real leaf of u's dtype."""
    dtype = u.dtype
    mask = lax.convert_element_type(lax.gt(lax.mul(u, g), jnp.zeros((), dtype)), dtype)
    kept = jnp.maximum(jnp.mean(mask), jnp.asarray(1e-3, dtype))
    return lax.mul(u, lax.div(mask, kept))


def refuse_complex(params: Any) -> None:
    """Raises torch's NotImplementedError for `u * g > 0` on complex tensors when `params` has a
    complex leaf (the caution mask of a timm optimizer that does not view complex params as
    real pairs: SGDW)."""
    _per_param.refuse_complex(
        params, lambda dtype: NotImplementedError(f'"gt_cpu" not implemented for \'{_TORCH_COMPLEX[jnp.dtype(dtype)]}\''))
