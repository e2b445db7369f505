"""`MultiSteps`: gradient accumulation over micro-batches."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support
from optax_like.core.leaf_scalars import LeafScalars, raise_needs_per_leaf_scalars
from optax_like.core.tree import is_none, map_params, zeros_like


class MultiStepsState(NamedTuple):
    mini_step: jax.Array  # micro-batches accumulated since the last real step
    gradient_step: jax.Array  # real (inner) steps taken
    inner_opt_state: Any
    acc_grads: Any  # running sum of the micro-batch gradients, in the compute dtype
    acc_present: Any  # per params leaf: whether some micro-batch of this window had a gradient


class MultiSteps:
    """Accumulates `every_k_schedule` micro-batch gradients, then applies `inner` to their mean.

        opt = MultiSteps(adam(1e-3), every_k_schedule=4)

    On the k-th call the inner optimizer sees `mean(g_1..g_k)` and its update is returned;
    on the other calls the update is zero and the inner state is untouched. This is the loop
    torch users write as `(loss / k).backward()` k times followed by `optimizer.step()`.
    `every_k_schedule` is an int or a function `gradient_step -> k`.

    A None gradient (torch's `p.grad is None`) adds nothing to that leaf's sum. At the k-th
    call, a leaf that had a gradient in some micro-batch of the window is stepped with its sum
    / k (torch's `.grad` holds the sum of the backward passes that reached it); a leaf that had
    none is skipped (its state untouched, a zero update). Whether a leaf without a gradient in
    the k-th call had one earlier is known only at run time: such leaves are stepped, then
    each one without a gradient in the window gets its old state back
    (`select_param_state`). An inner state that must skip some leaves needs
    per-leaf scalars: `per_leaf_scalars(opt.init(params))`.
    """

    def __init__(self, opt: GradientTransformation, every_k_schedule: Union[int, Callable[[jax.Array], Any]]):
        if not callable(every_k_schedule):
            k = int(every_k_schedule)
            if k < 1:
                raise ValueError(f"every_k_schedule must be >= 1, got {every_k_schedule}.")
            every_k_schedule = lambda step, k=k: jnp.asarray(k, jnp.int32)
        self._opt = with_extra_args_support(opt)
        self._every_k_schedule = every_k_schedule

    def init(self, params) -> MultiStepsState:
        def zeros(p):  # through tree.zeros_like so the buffer keeps p's sharding under jit
            return zeros_like(p, numerics.compute_dtype(p.dtype))

        return MultiStepsState(
            mini_step=jnp.zeros((), jnp.int32),
            gradient_step=jnp.zeros((), jnp.int32),
            inner_opt_state=self._opt.init(params),
            acc_grads=map_params(zeros, params),
            acc_present=map_params(lambda p: jnp.zeros((), bool), params),
        )

    def update(self, updates, state: MultiStepsState, params=None, **extra_args):
        k = jnp.asarray(self._every_k_schedule(state.gradient_step), jnp.int32)
        # A None gradient leaves that leaf's sum (and presence flag) as it is.
        acc = map_params(lambda a, g: a if g is None else a + g.astype(a.dtype), state.acc_grads, updates)
        present = map_params(lambda f, g: f if g is None else jnp.ones((), bool), state.acc_present, updates)
        emit = state.mini_step + 1 >= k
        like = state.acc_grads  # params-shaped (None where a leaf is not optimized)
        treedef = jax.tree.structure(like, is_leaf=lambda x: x is None)
        acc_leaves = treedef.flatten_up_to(acc)
        g_leaves = treedef.flatten_up_to(updates)
        p_leaves = treedef.flatten_up_to(params) if params is not None else [None] * len(acc_leaves)
        # Per params leaf: True if it has a gradient in this call, else whether some earlier
        # micro-batch of the window gave it one (a traced bool), None for a leaf not optimized.
        keep = [None if f is None else (True if g is not None else f)
                for f, g in zip(treedef.flatten_up_to(present), g_leaves)]

        def inner_step(grads):
            new_updates, inner = self._opt.update(grads, state.inner_opt_state, params, **extra_args)
            fresh = MultiStepsState(
                jnp.zeros((), jnp.int32), numerics.safe_increment(state.gradient_step), inner,
                map_params(jnp.zeros_like, acc), map_params(lambda f: jnp.zeros((), bool), present))
            return new_updates, fresh

        def grads_for(include_missing: bool):
            """The window means, in the gradient's (or param's) dtype; None for a leaf without a
            gradient in this call unless `include_missing`."""
            out = []
            for a, g, p in zip(acc_leaves, g_leaves, p_leaves):
                if a is None or (g is None and not include_missing):
                    out.append(None)
                else:
                    dtype = (g if g is not None else (p if p is not None else a)).dtype
                    out.append((a / k.astype(a.dtype)).astype(dtype))
            return treedef.unflatten(out)

        def apply(_):
            if all(k is True or k is None for k in keep):
                return inner_step(grads_for(False))
            # Leaves without a gradient in this call are stepped with their window sum / k and
            # then, where they had no gradient in the whole window, given back their old state
            # and a zero update: torch's `grad is None` skip, decided per leaf at run time.
            new_updates, fresh = inner_step(grads_for(True))
            inner = select_param_state(keep, fresh.inner_opt_state, state.inner_opt_state, like)
            u_leaves = treedef.flatten_up_to(new_updates)
            u_leaves = [u if (u is None or k is True or k is None) else jnp.where(k, u, jnp.zeros_like(u))
                        for u, k in zip(u_leaves, keep)]
            return treedef.unflatten(u_leaves), fresh._replace(inner_opt_state=inner)

        def skip(_):
            shapes = jax.eval_shape(lambda: apply(None)[0])
            zeros = jax.tree.map(jnp.zeros_like, shapes)  # keeps the sharding on Explicit meshes
            return zeros, MultiStepsState(state.mini_step + 1, state.gradient_step, state.inner_opt_state, acc, present)

        return jax.lax.cond(emit, apply, skip, None)

    def gradient_transformation(self) -> GradientTransformationExtraArgs:
        return GradientTransformationExtraArgs(self.init, self.update)

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """True right after a call that applied the inner optimizer."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)


def select_param_state(keep: list, new: Any, old: Any, reference: Any) -> Any:
    """Per params leaf: the state of `new` where `keep` (a Python bool or a traced 0-d bool per
    leaf of `reference`'s structure, None leaves included), else `old`'s: for combinators that
    decide at run time whether a param takes part in a step (`MultiSteps`: did it get a
    gradient in the window?).

    Per-param state is recognised by structure: a sub-tree with `reference`'s structure (a
    params-shaped buffer, of any leaf shapes) and the entries of a per-leaf `LeafScalars`.
    Everything else (global counters, hyperparameters) is taken from `new`. A shared
    `LeafScalars` cannot differ per leaf: it is refused unless `keep` is static and uniform.
    """
    treedef = jax.tree.structure(reference, is_leaf=is_none)
    present = [k for k, r in zip(keep, treedef.flatten_up_to(reference)) if r is not None]

    def pick(k, n, o):
        if k is True:
            return n
        if k is False:
            return o
        return jnp.where(k, n, o)

    def visit(n, o):
        if isinstance(n, LeafScalars):
            if n.is_shared:
                if all(k is True for k in present):
                    return n
                if all(k is False for k in present):
                    return o
                raise_needs_per_leaf_scalars(
                    treedef.unflatten([None if k is not True else r for k, r in zip(keep, treedef.flatten_up_to(reference))]),
                    reference)
            return LeafScalars(pick(k, a, b) for k, a, b in zip(present, n.values, o.values))
        if _has_structure(n, treedef):
            n_l, o_l = treedef.flatten_up_to(n), treedef.flatten_up_to(o)
            return treedef.unflatten([
                a if a is None else pick(k, a, b) for k, a, b in zip(keep, n_l, o_l)])
        children_n, def_n = jax.tree_util.tree_flatten(n, is_leaf=lambda x: x is not n and (
            isinstance(x, LeafScalars) or _has_structure(x, treedef)))
        if len(children_n) == 1 and children_n[0] is n:
            return n  # a leaf that is not per-param state
        children_o = def_n.flatten_up_to(o)
        return def_n.unflatten([visit(a, b) for a, b in zip(children_n, children_o)])

    return visit(new, old)


def _has_structure(x: Any, treedef) -> bool:
    try:
        return x is not None and jax.tree.structure(x, is_leaf=is_none) == treedef
    except Exception:
        return False

