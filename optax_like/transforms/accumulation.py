"""`MultiSteps`: gradient accumulation over micro-batches."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from optax_like.core import numerics
from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support
from optax_like.core.tree import map_params, zeros_like


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
    none is passed to `inner` as None (skipped, its state untouched). Whether a leaf without a
    gradient in the k-th call had one earlier is known only at run time: both cases are
    compiled (a `lax.cond`) and, when several such leaves disagree, each is stepped or skipped
    exactly as torch would only if they all agree; so keep a param's None pattern fixed within
    a window (e.g. frozen params always None), which is what accumulation loops do. An inner
    state that must skip leaves needs per-leaf scalars: `per_leaf_scalars(opt.init(params))`.
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
        like = map_params(lambda p: p, state.acc_grads)

        def mean_of(a, dtype):
            return (a / k.astype(a.dtype)).astype(dtype)

        def dtype_of(g, a, p):
            return (g if g is not None else (p if p is not None else a)).dtype

        def inner_step(grads):
            new_updates, inner = self._opt.update(grads, state.inner_opt_state, params, **extra_args)
            fresh = MultiStepsState(
                jnp.zeros((), jnp.int32), numerics.safe_increment(state.gradient_step), inner,
                map_params(jnp.zeros_like, acc), map_params(lambda f: jnp.zeros((), bool), present))
            return new_updates, fresh

        p_leaves = jax.tree.structure(like, is_leaf=lambda x: x is None).flatten_up_to(params) if params is not None else None

        def grads_for(include_missing: bool):
            treedef = jax.tree.structure(like, is_leaf=lambda x: x is None)
            a_l = treedef.flatten_up_to(acc)
            g_l = treedef.flatten_up_to(updates)
            p_l = p_leaves or [None] * len(a_l)
            out = []
            for a, g, p in zip(a_l, g_l, p_l):
                if a is None:
                    out.append(None)
                elif g is not None or include_missing:
                    out.append(mean_of(a, dtype_of(g, a, p)))
                else:
                    out.append(None)
            return treedef.unflatten(out)

        missing = [f for f, g, a in zip(
            jax.tree.leaves(present, is_leaf=lambda x: x is None),
            jax.tree.structure(like, is_leaf=lambda x: x is None).flatten_up_to(updates),
            jax.tree.leaves(like, is_leaf=lambda x: x is None)) if a is not None and g is None]

        def apply(_):
            if not missing:
                return inner_step(grads_for(False))
            # Leaves without a gradient in this call: stepped if they had one earlier in the window.
            stepped = lambda: inner_step(grads_for(True))
            shapes = jax.eval_shape(stepped)[0]

            def skipped():  # zero updates where the inner update is None: one output structure
                new_updates, fresh = inner_step(grads_for(False))
                new_updates = jax.tree.map(lambda u, s: jnp.zeros(s.shape, s.dtype) if u is None else u,
                                           new_updates, shapes, is_leaf=lambda x: x is None)
                return new_updates, fresh

            return jax.lax.cond(jnp.any(jnp.stack(missing)), stepped, skipped)

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
