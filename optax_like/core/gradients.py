"""Gradients in torch's (and optax's) convention for complex params.

Every optimizer of optax_like, functional or stateful, takes gradients in ONE convention: torch's,
which is also optax's. For a real loss L of a complex param z = x + iy, torch's `z.grad` is
dL/dx + i dL/dy, the direction of steepest ascent. `jax.grad(L)(z)` returns its conjugate,
dL/dx - i dL/dy (JAX differentiates holomorphically; optax's tests conjugate it before `update`).
For real params the two are the same array.

    grads = optax_like.grad(loss_fn)(params)          # jax.grad, complex leaves conjugated
    updates, state = tx.update(grads, state, params)  # torch's numbers, complex params included
    optimizer.backward(optax_like.grad(loss_fn)(optimizer.params))

`optimizer.step(loss_fn)` differentiates through `value_and_grad` below, so it needs nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = ["conjugate_complex", "grad", "value_and_grad"]


def conjugate_complex(grads: Any) -> Any:
    """`grads` with every complex leaf conjugated (JAX's gradient convention <-> torch's); real
    leaves, None leaves and non-array leaves are returned as they are (no operation is added)."""

    def conj(g):
        if g is not None and hasattr(g, "dtype") and jnp.issubdtype(g.dtype, jnp.complexfloating):
            return jax.lax.conj(g)
        return g

    return jax.tree.map(conj, grads, is_leaf=lambda x: x is None)


def value_and_grad(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False,
                   **kwargs: Any) -> Callable:
    """`jax.value_and_grad(fun, ...)` whose gradient of a complex input is torch's `.grad`
    (the conjugate of JAX's): what every optax_like optimizer takes."""
    value_and_grad_fn = jax.value_and_grad(fun, argnums, has_aux=has_aux, **kwargs)

    def wrapped(*args, **fn_kwargs):
        value, grads = value_and_grad_fn(*args, **fn_kwargs)
        return value, conjugate_complex(grads)

    return wrapped


def grad(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False, **kwargs: Any) -> Callable:
    """`jax.grad(fun, ...)` whose gradient of a complex input is torch's `.grad` (the conjugate
    of JAX's): what every optax_like optimizer takes. With `has_aux`, returns `(grads, aux)`."""
    value_and_grad_fn = value_and_grad(fun, argnums, has_aux=has_aux, **kwargs)

    def wrapped(*args, **fn_kwargs):
        value, grads = value_and_grad_fn(*args, **fn_kwargs)
        return (grads, value[1]) if has_aux else grads

    return wrapped
