"""torch.nn.utils's `clip_grad_norm_` and `clip_grad_value_` for the `optim` adapter.

torch clips the `.grad` of the params between `loss.backward()` and `optimizer.step()`; here
the pending gradients live in the optimizer (`optimizer.backward(grads)`), so the functions
take the optimizer, or torch's spelling, the params (arrays the optimizer holds now):

    optimizer.zero_grad()
    optimizer.backward(grads)
    total_norm = optim.clip_grad_norm_(optimizer, max_norm=1.0)   # torch's number, on device
    optim.clip_grad_norm_(optimizer.params, 0.25)                  # the same, torch's habit
    optimizer.step()

With `step(loss_fn, *batch)` the gradients exist only inside the jitted step; clip them there
with the step's keywords (same numbers, no extra call):

    loss = optimizer.step(loss_fn, *batch, clip_grad_norm=1.0)    # norm_type=2.0 by default
    optimizer.last_grad_norm                                       # the total norm (device scalar)
    optimizer.step(loss_fn, *batch, clip_grad_value=0.5)

torch's rule (`torch.nn.utils.clip_grad_norm_`): the total norm is the `norm_type`-norm of the
per-gradient norms; every gradient is multiplied by `min(max_norm / (total + 1e-6), 1)`.
`clip_grad_value_` clamps every gradient to `[-clip_value, clip_value]`. Params without a
gradient (None) are skipped, as torch skips `p.grad is None`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from optax_like.transforms.sparse_adam import RowSparseGrad

__all__ = ["clip_grad_norm_", "clip_grad_value_", "total_norm", "clip_by_total_norm", "clip_by_value"]

_NONFINITE = (
    "The total norm of order {} for gradients from `parameters` is non-finite, so it cannot be "
    "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
    "`error_if_nonfinite=False`"
)


def _dense(grads: Sequence[Any]) -> list:
    out = []
    for g in grads:
        if g is None:
            continue
        if isinstance(g, (RowSparseGrad, jsparse.JAXSparse)):
            raise TypeError(f"gradient clipping needs dense gradients, got a {type(g).__name__}")
        out.append(g)
    return out


def total_norm(grads: Sequence[Any], norm_type: float = 2.0) -> jax.Array:
    """torch's `get_total_norm`: the `norm_type`-norm of the per-gradient norms (None skipped);
    float32 0.0 when there is no gradient (torch's `torch.tensor(0.0)`). Traceable."""
    norm_type = float(norm_type)
    grads = _dense(grads)
    if not grads:
        return jnp.zeros((), jnp.float32)
    # (jax's stub types `ord` as int | str; it takes any float order, e.g. inf, as torch)
    norms = [jnp.linalg.vector_norm(g.ravel(), ord=norm_type) for g in grads]  # pyright: ignore[reportArgumentType]
    return jnp.linalg.vector_norm(jnp.stack(norms), ord=norm_type)  # pyright: ignore[reportArgumentType]


def clip_by_total_norm(grads: Sequence[Any], max_norm: float, norm_type: float = 2.0):
    """(clipped grads, total norm): torch's `clip_grad_norm_` on a sequence of gradients (None
    kept). Traceable; the step's `clip_grad_norm=` runs it inside the jitted step."""
    total = total_norm(grads, norm_type)
    coef = jnp.minimum(float(max_norm) / (total + 1e-6), 1.0)
    return [None if g is None else g * coef.astype(g.dtype) for g in grads], total


def clip_by_value(grads: Sequence[Any], clip_value: float) -> list:
    """torch's `clip_grad_value_` on a sequence of gradients (None kept). Traceable."""
    clip_value = float(clip_value)
    _dense(grads)
    return [None if g is None else jnp.clip(g, -clip_value, clip_value) for g in grads]


def _regroup(grads, flat):
    it = iter(flat)
    return tuple(tuple(next(it) for _ in group) for group in grads)


def _pending(parameters) -> tuple[Any, tuple, list[list[bool]]]:
    """(optimizer, its pending gradients per group, which of them `parameters` selects).

    `parameters` is the optimizer itself (every gradient), or torch's spelling: the params
    whose gradients to clip, i.e. arrays the optimizer holds now (`optimizer.params`, a
    sub-tree of it, a live `param_groups[i]['params']`, a list of its arrays)."""
    from optax_like.optim.optimizer import Optimizer, live_optimizers

    if isinstance(parameters, Optimizer):
        grads = tuple(group.grads for group in parameters._groups)
        return parameters, grads, [[True] * len(group) for group in grads]
    if isinstance(parameters, jax.Array):
        parameters = [parameters]
    arrays = [leaf for leaf in jax.tree.leaves(list(parameters) if not isinstance(parameters, (dict, list, tuple))
                                               else parameters) if isinstance(leaf, jax.Array)]
    wanted = {id(a) for a in arrays}
    for optimizer in live_optimizers():
        selected = [[leaf is not None and id(leaf) in wanted for leaf in group.leaves] for group in optimizer._groups]
        frozen = {id(leaf) for leaf in optimizer._frozen if leaf is not None}  # model= leaves: no gradient
        found = sum(map(sum, selected))
        if found and found + len(wanted & frozen) == len(wanted):
            return optimizer, tuple(group.grads for group in optimizer._groups), selected
    deleted = any(a.is_deleted() for a in arrays)
    raise TypeError(
        "clip_grad_norm_/clip_grad_value_ clip the pending gradients of an optax_like.optim "
        "optimizer: pass the optimizer (clip_grad_norm_(optimizer, max_norm)), or the params it "
        "holds now (optimizer.params, read after the last step, or a part of it), whose gradients "
        "are clipped as torch clips those params' .grad. "
        + ("These arrays were donated to an earlier step: read optimizer.params again."
           if deleted else f"Got {type(parameters).__name__}, whose arrays no live optimizer holds.")
    )


def _select(grads, selected):
    return tuple(tuple(g if keep else None for g, keep in zip(group, keep_group))
                 for group, keep_group in zip(grads, selected))


def _merge(optimizer, grads, clipped, selected) -> None:
    """Writes the clipped gradients into the optimizer's pending ones."""
    for group, group_grads, clipped_group, keep_group in zip(optimizer._groups, grads, clipped, selected):
        group.grads = tuple(c if keep else g for g, c, keep in zip(group_grads, clipped_group, keep_group))


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> jax.Array:
    """torch.nn.utils.clip_grad_norm_ over an optimizer's pending gradients (from `backward`).

    `parameters`: the optimizer (all its gradients), or, as in torch, the params whose
    gradients to clip (`optimizer.params` or a part of it: arrays the optimizer holds now).
    Scales those gradients by `min(max_norm / (total_norm + 1e-6), 1)` and returns the total
    norm, a device scalar (no host sync), in the gradients' dtype. `norm_type` may be
    `float('inf')`/'inf'. With `error_if_nonfinite=True` a nan/inf total norm raises torch's
    RuntimeError (this reads the norm on the host, as torch does) and leaves the gradients
    unchanged. `foreach` is accepted and ignored (one XLA computation either way).
    """
    del foreach
    norm_type = float(norm_type)
    optimizer, grads, selected = _pending(parameters)
    clipped, total = _jitted_clip_norm(_select(grads, selected), float(max_norm), norm_type)
    if error_if_nonfinite and not bool(jnp.isfinite(total)):
        raise RuntimeError(_NONFINITE.format(norm_type))
    _merge(optimizer, grads, clipped, selected)
    return total


def clip_grad_value_(parameters, clip_value: float, foreach: bool | None = None) -> None:
    """torch.nn.utils.clip_grad_value_ over an optimizer's pending gradients (`parameters`: the
    optimizer, or the params it holds, as in `clip_grad_norm_`): clamps each to
    `[-clip_value, clip_value]` (in place, as torch: returns None)."""
    del foreach
    optimizer, grads, selected = _pending(parameters)
    clipped = _jitted_clip_value(_select(grads, selected), float(clip_value))
    _merge(optimizer, grads, clipped, selected)


def _clip_norm_groups(grads, max_norm, norm_type):
    flat, total = clip_by_total_norm([g for group in grads for g in group], max_norm, norm_type)
    return _regroup(grads, flat), total


def _clip_value_groups(grads, clip_value):
    return _regroup(grads, clip_by_value([g for group in grads for g in group], clip_value))


# max_norm, norm_type and clip_value are static: they are Python floats that rarely change, and
# torch computes `max_norm / (total + 1e-6)` with a Python float max_norm (weakly typed here too).
_jitted_clip_norm = jax.jit(_clip_norm_groups, static_argnums=(1, 2))
_jitted_clip_value = jax.jit(_clip_value_groups, static_argnums=(1,))


def check_step_clip(clip_grad_norm, norm_type, clip_grad_value):
    """The step's clip keywords as a hashable spec (None: no clipping), validated."""
    if clip_grad_norm is not None and clip_grad_value is not None:
        raise ValueError("step() takes clip_grad_norm or clip_grad_value, not both")
    if clip_grad_norm is not None:
        return ("norm", float(clip_grad_norm), float(norm_type))
    if clip_grad_value is not None:
        return ("value", float(clip_grad_value))
    return None


def apply_step_clip(spec, grads):
    """Clips per-group gradient tuples inside the jitted step: (grads, total norm or None)."""
    if spec is None:
        return grads, None
    if spec[0] == "norm":
        return _clip_norm_groups(grads, spec[1], spec[2])
    return _clip_value_groups(grads, spec[1]), None
