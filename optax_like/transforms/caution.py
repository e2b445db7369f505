"""The Cautious Optimizers mask (Liang et al., 2024, arXiv:2411.16085), as timm applies it.

timm's `caution=True` options (Lion, ADOPT, LaProp, MARS, NAdamW, the "c" names of its factory)
all write the same three lines on one param's update `u` and gradient `g`:

    mask = (u * g > 0).to(g.dtype)
    mask.div_(mask.mean().clamp_(min=1e-3))
    u = u * mask
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def cautious(u: jax.Array, g: jax.Array) -> jax.Array:
    """`u` with the components whose sign disagrees with `g` zeroed and the rest divided by the
    kept fraction of the leaf (at least 1e-3): timm's caution, on one real leaf of u's dtype."""
    dtype = u.dtype
    mask = lax.convert_element_type(lax.gt(lax.mul(u, g), jnp.zeros((), dtype)), dtype)
    kept = jnp.maximum(jnp.mean(mask), jnp.asarray(1e-3, dtype))
    return lax.mul(u, lax.div(mask, kept))
