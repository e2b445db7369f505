"""`MultiSteps`: gradient accumulation over micro-batches."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

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
    skip_state: Any = ()  # what `should_skip_update_fn` returned for the latest micro-batch


ShouldSkipUpdateFunction = Callable[[Any, jax.Array, Any], tuple[jax.Array, Any]]


def skip_not_finite(updates: Any, gradient_step: jax.Array, params: Any) -> tuple[jax.Array, dict]:
    """A `should_skip_update_fn` for `MultiSteps` (optax's): skip a micro-batch whose gradients
    hold an inf or a NaN. Returns `(should_skip, {'should_skip', 'num_not_finite'})`."""
    del gradient_step, params
    counts = [jnp.sum(jnp.logical_not(jnp.isfinite(u))) for u in jax.tree.leaves(updates)]
    num_not_finite = jnp.sum(jnp.array(counts)) if counts else jnp.zeros((), jnp.int32)
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(updates: Any, gradient_step: jax.Array, params: Any,
                       max_squared_norm: Any) -> tuple[jax.Array, dict]:
    """A `should_skip_update_fn` for `MultiSteps` (optax's; bind `max_squared_norm` with
    `functools.partial`): skip a micro-batch whose squared global norm is not below
    `max_squared_norm` (NaN included). Returns `(should_skip, {'should_skip', 'norm_squared'})`."""
    del gradient_step, params
    sums = [jnp.sum(jnp.square(u)) for u in jax.tree.leaves(updates)]
    norm_sq = jnp.sum(jnp.array(sums)) if sums else jnp.zeros(())
    should_skip = jnp.logical_not(norm_sq < max_squared_norm)
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_sq}


class MultiSteps:
    """Accumulates `every_k_schedule` micro-batch gradients, then applies `inner` to their mean.

        opt = MultiSteps(adam(1e-3), every_k_schedule=4)

    On the k-th call the inner optimizer sees `mean(g_1..g_k)` and its update is returned;
    on the other calls the update is zero and the inner state is untouched. This is the loop
    torch users write as `(loss / k).backward()` k times followed by `optimizer.step()`.
    `every_k_schedule` is an int or a function `gradient_step -> k`.

    optax's options: `use_grad_mean=False` gives the inner optimizer the sum instead of the
    mean (torch's k backward passes without dividing the loss by k); `should_skip_update_fn
    (updates, gradient_step, params) -> (bool scalar, skip_state)` rejects a micro-batch (not
    accumulated, not counted, a zero update; its `skip_state` is kept in the state), e.g.
    `skip_not_finite` or `functools.partial(skip_large_updates, max_squared_norm=...)`;
    `accumulator_dtype` is the sum's dtype (default: each param's compute dtype, float32 for
    bf16/f16 params).

    A None gradient (torch's `p.grad is None`) adds nothing to that leaf's sum. At the k-th
    call, a leaf that had a gradient in some micro-batch of the window is stepped with its sum
    / k (torch's `.grad` holds the sum of the backward passes that reached it); a leaf that had
    none is skipped (its state untouched, a zero update). Whether a leaf without a gradient in
    the k-th call had one earlier is known only at run time: such leaves are stepped, then
    each one without a gradient in the window gets its old state back
    (`select_param_state`). An inner state that must skip some leaves needs
    per-leaf scalars: `per_leaf_scalars(opt.init(params))`.
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: Union[int, Callable[[jax.Array], Any]],
        use_grad_mean: bool = True,
        should_skip_update_fn: Optional[ShouldSkipUpdateFunction] = None,
        accumulator_dtype: Any = None,
    ):
        if not callable(every_k_schedule):
            k = int(every_k_schedule)
            if k < 1:
                raise ValueError(f"every_k_schedule must be >= 1, got {every_k_schedule}.")
            every_k_schedule = lambda step, k=k: jnp.asarray(k, jnp.int32)
        self._opt = with_extra_args_support(opt)
        self._every_k_schedule = every_k_schedule
        self._use_grad_mean = bool(use_grad_mean)
        self._should_skip_update_fn = should_skip_update_fn
        self._accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

    @property
    def inner_opt(self) -> GradientTransformation:
        return self._opt

    def init(self, params) -> MultiStepsState:
        def zeros(p):  # through tree.zeros_like so the buffer keeps p's sharding under jit
            return zeros_like(p, self._accumulator_dtype or numerics.compute_dtype(p.dtype))

        gradient_step = jnp.zeros((), jnp.int32)
        skip_state = ()
        if self._should_skip_update_fn is not None:
            _, skip_state = self._should_skip_update_fn(zeros_like(params), gradient_step, params)
        return MultiStepsState(
            mini_step=jnp.zeros((), jnp.int32),
            gradient_step=gradient_step,
            inner_opt_state=self._opt.init(params),
            acc_grads=map_params(zeros, params),
            acc_present=map_params(lambda p: jnp.zeros((), bool), params),
            skip_state=skip_state,
        )

    def update(self, updates, state, params=None, **extra_args) -> tuple[Any, Any]:  # state: MultiStepsState
        if self._should_skip_update_fn is None:
            return self._accumulate(updates, state, params, **extra_args)
        should_skip, skip_state = self._should_skip_update_fn(updates, state.gradient_step, params)
        should_skip = jnp.asarray(should_skip)
        if (should_skip.dtype, should_skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                "should_skip_update_fn must return a boolean scalar array, but it returned an array of "
                f"dtype {should_skip.dtype} and shape {should_skip.shape}."
            )

        def accept(_):
            new_updates, new_state = self._accumulate(updates, state, params, **extra_args)
            return new_updates, new_state._replace(skip_state=skip_state)

        def reject(_):  # as if this micro-batch never happened: nothing added, nothing counted
            shapes = jax.eval_shape(lambda: accept(None)[0])
            return jax.tree.map(jnp.zeros_like, shapes), state._replace(skip_state=skip_state)

        return jax.lax.cond(should_skip, reject, accept, None)

    def _accumulate(self, updates, state: MultiStepsState, params=None, **extra_args):
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
                map_params(jnp.zeros_like, acc), map_params(lambda f: jnp.zeros((), bool), present),
                state.skip_state)
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
                    out.append((a / k.astype(a.dtype) if self._use_grad_mean else a).astype(dtype))
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
            return zeros, state._replace(mini_step=state.mini_step + 1, acc_grads=acc, acc_present=present)

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

