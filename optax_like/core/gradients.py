"""Gradients in torch's (and optax's) convention for complex params.

Every optimizer of optax_like, functional or stateful, takes gradients in ONE convention: torch's,
which is also optax's. For a real loss L of a complex param z = x + iy, torch's `z.grad` is
dL/dx + i dL/dy, the direction of steepest ascent. `jax.grad(L)(z)` returns its conjugate,
dL/dx - i dL/dy (JAX differentiates holomorphically; optax's tests conjugate it before `update`).
For real params the two are the same array.

    grads = optax_like.grad(loss_fn)(params)          # jax.grad, complex leaves conjugated
    updates, state = tx.update(grads, state, params)  # torch's numbers, complex params included
    optimizer.backward(optax_like.grad(loss_fn, none_if_unreached=True)(optimizer.params))

`optimizer.step(loss_fn)` differentiates through `value_and_grad` below, so it needs nothing.

`none_if_unreached=True` gives torch's `.grad` for params outside the loss's graph: None (torch's
`backward()` leaves `p.grad is None` for a param the loss does not use, or uses only through
`detach()`, and every torch.optim optimizer skips it), where JAX gives zeros (and an optimizer
would step the param: momentum, weight decay). It adds no computation: an identity with a custom
VJP around the differentiated leaves sees, while the backward pass is traced, which cotangents
are symbolic zeros (no differentiable path from the value), and those leaves' zeros are replaced
by None. The stateful adapter's `step(closure)` uses it. "Reach" follows JAX's derivatives:
an op whose derivative JAX knows to be zero (`floor`, `round`, `sign`, ...) does not reach its
input, where torch's graph does (a zero `.grad`); a param read only through one gets None here.
A functional state needs per-leaf step counters for None leaves (`optax_like.per_leaf_scalars`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

__all__ = ["conjugate_complex", "grad", "value_and_grad"]


def conjugate_complex(grads: Any) -> Any:
    """`grads` with every complex leaf conjugated (JAX's gradient convention <-> torch's); real
    leaves, None leaves and non-array leaves are returned as they are (no operation is added)."""

    def conj(g):
        if g is not None and hasattr(g, "dtype") and jnp.issubdtype(g.dtype, jnp.complexfloating):
            return jax.lax.conj(g)
        return g

    return jax.tree.map(conj, grads, is_leaf=lambda x: x is None)


def _reach_tap(reached: list) -> Callable:
    """An identity over a tuple of arrays whose backward pass sets `reached[i]` for each leaf whose
    cotangent is not a symbolic zero (JAX skips it, or hands it a `SymbolicZero`, when no
    differentiable path leads from the value to the leaf)."""

    @jax.custom_vjp
    def tap(leaves):
        return leaves

    def forward(leaves):  # symbolic_zeros: each leaf comes as a CustomVJPPrimal
        return tuple(leaf.value for leaf in leaves), None

    def backward(_, cotangents):
        out = []
        for i, ct in enumerate(cotangents):
            zero = isinstance(ct, SymbolicZero)
            reached[i] = reached[i] or not zero
            out.append(None if zero else ct)
        return (tuple(out),)

    tap.defvjp(forward, backward, symbolic_zeros=True)
    return tap


def value_and_grad(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False, *,
                   none_if_unreached: bool = False, **kwargs: Any) -> Callable:
    """`jax.value_and_grad(fun, ...)` whose gradient of a complex input is torch's `.grad`
    (the conjugate of JAX's): what every optax_like optimizer takes. With `none_if_unreached`,
    a leaf of the differentiated arguments that the value does not reach differentiably gets
    None, as torch's `.grad` (see the module's docstring)."""
    if not none_if_unreached:
        value_and_grad_fn = jax.value_and_grad(fun, argnums, has_aux=has_aux, **kwargs)

        def wrapped(*args, **fn_kwargs):
            value, grads = value_and_grad_fn(*args, **fn_kwargs)
            return value, conjugate_complex(grads)

        return wrapped
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)

    def wrapped_reach(*args, **fn_kwargs):
        flat, treedef = jax.tree.flatten([args[i] for i in nums if i < len(args)])
        reached = [False] * len(flat)
        tap = _reach_tap(reached)

        def tapped(*call_args, **call_kwargs):
            call_args = list(call_args)
            diff = treedef.unflatten(list(tap(tuple(jax.tree.leaves([call_args[i] for i in nums])))))
            for i, arg in zip(nums, diff):
                call_args[i] = arg
            return fun(*call_args, **call_kwargs)

        value, grads = jax.value_and_grad(tapped, argnums, has_aux=has_aux, **kwargs)(*args, **fn_kwargs)
        leaves, grads_def = jax.tree.flatten(grads)
        grads = grads_def.unflatten([g if r else None for g, r in zip(leaves, reached, strict=True)])
        return value, conjugate_complex(grads)

    return wrapped_reach


def grad(fun: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False, *, none_if_unreached: bool = False,
         **kwargs: Any) -> Callable:
    """`jax.grad(fun, ...)` whose gradient of a complex input is torch's `.grad` (the conjugate
    of JAX's): what every optax_like optimizer takes. With `has_aux`, returns `(grads, aux)`;
    with `none_if_unreached`, None for the leaves the value does not reach (torch's `.grad`)."""
    value_and_grad_fn = value_and_grad(fun, argnums, has_aux=has_aux, none_if_unreached=none_if_unreached, **kwargs)

    def wrapped(*args, **fn_kwargs):
        value, grads = value_and_grad_fn(*args, **fn_kwargs)
        return (grads, value[1]) if has_aux else grads

    return wrapped
