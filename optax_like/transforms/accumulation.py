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


class MultiSteps:
    """Accumulates `every_k_schedule` micro-batch gradients, then applies `inner` to their mean.

        opt = MultiSteps(adam(1e-3), every_k_schedule=4)

    On the k-th call the inner optimizer sees `mean(g_1..g_k)` and its update is returned;
    on the other calls the update is zero and the inner state is untouched. This is the loop
    torch users write as `(loss / k).backward()` k times followed by `optimizer.step()`.
    `every_k_schedule` is an int or a function `gradient_step -> k`.
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
        )

    def update(self, updates, state: MultiStepsState, params=None, **extra_args):
        k = jnp.asarray(self._every_k_schedule(state.gradient_step), jnp.int32)
        acc = map_params(lambda a, g: a + g.astype(a.dtype), state.acc_grads, updates)
        emit = state.mini_step + 1 >= k

        def apply(_):
            mean = map_params(lambda a, g: (a / k.astype(a.dtype)).astype(g.dtype), acc, updates)
            new_updates, inner = self._opt.update(mean, state.inner_opt_state, params, **extra_args)
            return (
                new_updates,
                MultiStepsState(jnp.zeros((), jnp.int32), numerics.safe_increment(state.gradient_step), inner, map_params(jnp.zeros_like, acc)),
            )

        def skip(_):
            shapes = jax.eval_shape(lambda: self._opt.update(updates, state.inner_opt_state, params, **extra_args)[0])
            zeros = jax.tree.map(jnp.zeros_like, shapes)  # keeps the sharding on Explicit meshes
            return zeros, MultiStepsState(state.mini_step + 1, state.gradient_step, state.inner_opt_state, acc)

        return jax.lax.cond(emit, apply, skip, None)

    def gradient_transformation(self) -> GradientTransformationExtraArgs:
        return GradientTransformationExtraArgs(self.init, self.update)

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """True right after a call that applied the inner optimizer."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)
