"""The per-parameter plumbing every `scale_by_*` shares, written once.

torch's single-tensor loops all do the same things around a few lines of math: read the
hyperparameters (here: resolve schedules at the state's `schedule_count`), skip a param whose
`grad is None` with its state untouched, advance its `state['step']`, view a complex param as
pairs of reals (`view_as_real`), compute in the param's "opmath" dtype (float32 for bf16/f16)
and write the state back in the param's dtype. `per_param_update` does all of that; a transform
hands it the math of one leaf:

    def math(leaf, g, m, v, t):          # arrays already real views in leaf.dtype
        m = numerics.lerp(m, g, numerics.one_minus(h.b1, leaf.dtype))
        ...
        return u, m, v                   # the update, then the new buffers (leaf.dtype)

    return per_param_update(state, updates, math, buffers=("exp_avg", "exp_avg_sq"))

and gets back `(updates, state)` with the buffers stored (complex view, the param's dtype),
`step` counted for the leaves that had a gradient and `schedule_count` advanced. The state
types and their field names stay the transforms' own (torch's state keys).

Traced scalars that depend on the step and enter the per-leaf math (bias corrections, step
sizes) are computed by a `step_scalars(count, dtype)` function given to `per_param_update`,
not inside `math`: `per_param_update` computes them once per distinct (count, dtype), hands
them to `math`, and gives a scalar that only one leaf uses a second use (see
`per_param_update`), so that a leaf rounds alone as it does in a model.

Uniform kernels: XLA:CPU compiles each distinct fused kernel once (160 same-shaped Adam leaves
compile in 0.3 s, 160 different shapes in 3.6 s), so compile time follows the number of distinct
kernels, and a kernel whose parameters come in another order is another kernel. XLA numbers a
fusion's parameters in the order it fuses producers, latest in post-order first. A traced
scalar's broadcast to a leaf's shape is shared (CSE) by every leaf of that shape: for the first
such leaf it sits inside the leaf's own graph, for the others before it. Where it is an operand
after one of the leaf's arrays (`clamp(-c, x, c)`: `c` after `x`), the first leaf of each shape
gets a kernel of its own; written as the first operand of each op that reads it
(`min(c, max(-c, x))`), it is fused last in every leaf, and all leaves of a shape share kernels
(adopt: 104 -> 86 distinct kernels on ResNet-50's shapes, optax's count). Where the
order is not ours to choose (a division, `sqrt(v) / s`), each leaf gets its own copy of the
step scalars (`per_param_update(pin_step_scalars=True)`, `_pinned_to_leaf`: an
`optimization_barrier` with the leaf's state buffer, which CSE cannot merge across leaves), so
every leaf is fused as the first of its shape is; each copy then has one use, so it gets the
second use that keeps XLA's division (below). Opt-in: the copies cost compile time where the
kernels were uniform without them. A scalar whose
last op is cheap (NAdam's `-expm1(...)`) is still fused into each kernel from the first leaf's
place: `computed_once=True` makes it a division by a traced 1 (exact) that XLA computes once.
The same values and compiled arithmetic: every registry optimizer's params and states after 5
steps bit for bit, functional (float32 and float64) and through the adapter's traced
hyperparameters. Distinct kernels on ResNet-50's shapes (optax's Adam: 87): Adam, AdamW,
NAdamW, AdamWLegacy 105 -> 87, NAdam 108 -> 90, RAdam 106 -> 88, Adan 134 -> 117, Lamb 194 ->
176, AdamP 221 -> 203, Mars 148 -> 130, timm's Muon 121 -> 103, RAdamLegacy 88 -> 86.
Left: LaProp, Adafactor, torchao's low-bit Adams and schedule-free still compile a first leaf
of a shape to kernels of its own (tests/transforms/test_per_param.py lists the uniform ones).
`benchmarks/model_shapes.py` reports the count ("distinct kernels").
"""

from __future__ import annotations

import collections
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import core as jax_core
from jax import lax

from optax_like.core import numerics
from optax_like.core.leaf_scalars import increment_counts, next_counts
from optax_like.core.tree import update_leaves


def hyperparams(count: jax.Array, **values: Any) -> SimpleNamespace:
    """Each hyperparameter resolved at the schedule `count` (`numerics.resolve`), by name. A
    schedule must return a scalar: another shape is refused here, naming the argument (rather
    than broadcast into the params' math, or failing there in a lax shape check)."""
    resolved = {}
    for name, value in values.items():
        resolved[name] = numerics.resolve(value, count)
        if callable(value) and tuple(getattr(resolved[name], "shape", ())) != ():
            raise ValueError(f"the schedule given as {name!r} returned an array of shape "
                             f"{tuple(resolved[name].shape)}; a schedule must return a scalar")
    return SimpleNamespace(**resolved)


def refuse_complex(params: Any, error: Callable[[np.dtype], Exception]) -> None:
    """Raises `error(dtype)` for the first complex leaf of `params`: for a reference that
    applies an op torch has no complex kernel for (`>`, `maximum`) to complex tensors as they
    are, at `init` (torch: at the first step)."""
    for leaf in jax.tree.leaves(params):
        dtype = jnp.dtype(getattr(leaf, "dtype", np.float32))
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise error(dtype)


def _real_dtype(dtype) -> np.dtype:
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


class LeafView:
    """One param's dtypes and the conversions into and out of its compute dtype.

    `storage_dtype` is the real dtype the state is stored in (the param's, or its real part's
    for complex params); `dtype` is what torch's CPU kernels compute in (`numerics.compute_dtype`).
    """

    __slots__ = ("like", "storage_dtype", "dtype", "_stored")

    def __init__(self, like: jax.Array):
        self.like = like
        self.storage_dtype = _real_dtype(like.dtype)
        self.dtype = numerics.compute_dtype(self.storage_dtype)
        self._stored = None  # (loaded, stored) of the last `rounded` value

    @property
    def is_opmath(self) -> bool:
        """True when the state is stored in the compute dtype (float32/float64 params)."""
        return self.dtype == self.storage_dtype

    def load(self, x: Any) -> Any:
        """A stored (or gradient) leaf as a real view in the compute dtype; None stays None."""
        return None if x is None else numerics.cast(numerics.real_view(x), self.dtype)

    def store(self, x: Any) -> Any:
        """A compute-dtype result back in the stored form (complex view, the param's dtype)."""
        if x is None:
            return None
        if self._stored is not None and self._stored[0] is x:  # from `rounded`: stored already
            return self._stored[1]
        return numerics.cast(numerics.complex_view(x, self.like), self.like.dtype)

    def rounded(self, x: jax.Array) -> jax.Array:
        """`x` as torch reads it back from its state tensor: stored, then loaded again (a
        buffer returned as this value is stored as that stored array, not converted twice)."""
        stored = self.store(x)
        loaded = self.load(stored)
        self._stored = (loaded, stored)
        return loaded

    @property
    def is_complex(self) -> bool:
        return jnp.iscomplexobj(self.like)

    def as_complex(self, *xs: Any) -> tuple:
        """Real views as the complex numbers they hold (a complex param; others unchanged), for
        math a reference does on complex tensors as they are (no `view_as_real`); None stays
        None. `as_real` gives the results back as real views."""
        if not self.is_complex:
            return xs
        return tuple(None if x is None else numerics.complex_view(x, self.like) for x in xs)

    def as_real(self, *xs: Any) -> tuple:
        """Inverse of `as_complex`."""
        if not self.is_complex:
            return xs
        return tuple(None if x is None else numerics.real_view(x) for x in xs)

    def emit(self, u: jax.Array) -> jax.Array:
        """The update leaf (complex view of `u`; kept in the compute dtype)."""
        return numerics.complex_view(u, self.like)


def per_param_update(
    state: Any,
    updates: Any,
    math: Callable,
    *,
    buffers: Sequence[str],
    inputs: Sequence[Any] = (),
    reference: Any = None,
    counts: Any = "step",
    step_scalars: Callable | None = None,
    step_field: str = "step",
    check: Callable | None = None,
    views: bool = True,
    pin_step_scalars: bool = False,
    computed_once: bool = False,
) -> tuple[Any, Any]:
    """One step of a per-parameter transform: `math` on every leaf that has an update.

    Args:
      state: a NamedTuple with the fields named in `buffers` (params-shaped trees), a
        `step_field` (`core.leaf_scalars.LeafScalars` step counts) and `schedule_count`.
      updates: the gradient tree; a None leaf is skipped, its state untouched (torch's
        `p.grad is None`), and its step is not counted.
      math: `math(leaf, g, *buffers, *inputs[, count][, scalars])` for one leaf, with `leaf`
        its `LeafView`; returns `(u, *new_buffers)`. With `views` (the default) every array
        argument arrives as `leaf.load(x)` and the results are in `leaf.dtype`: `u` goes out
        through `leaf.emit`, buffers through `leaf.store`. With `views=False` leaves arrive
        and return as they are (SparseAdam's sparse gradients).
      buffers: the state fields that `math` reads and rewrites, in argument order.
      inputs: further params-shaped trees `math` reads (e.g. the params), after the buffers.
      reference: the tree that names the leaves (structure, `LeafView.like`, which leaves
        are counted); default the first buffer.
      counts: what `math` receives after the inputs: "step" (default) the leaf's step number for this
        update (`next_counts(state.step)`), None nothing, else a sequence with one entry per
        non-None leaf (`LeafScalars`, e.g. per-leaf tuples of scalars).
      step_scalars: `step_scalars(count, dtype) -> tuple` of the traced step scalars the leaf
        math uses (bias corrections, step sizes: what it divides or multiplies by), given the
        leaf's count (as `math` receives it) and compute dtype; `math` receives the tuple last.
        Called once per distinct (count, dtype) (leaves whose counts are stored shared share
        one call). XLA (on CPU) rewrites `x / broadcast(s)` into `x * broadcast(1 / s)` and
        `sqrt(v) / sqrt(s)` into `sqrt(v) * rsqrt(s)` when `s` has a single use: in a tree of
        one leaf, for counters stored per leaf (`per_leaf_scalars`) or for the only leaf of a
        dtype, the leaf would round differently from the same leaf in a model. So every
        scalar of the tuple (jax arrays; host constants need nothing) that only one leaf uses
        gets a second use: one `optimization_barrier` with the new `schedule_count` (a scalar
        output: scalars only, so no update is held in memory for it on any backend). Trees
        whose leaves share their scalars get no barrier. tests/test_tree_independence.py
        checks every optimizer.
      pin_step_scalars: each leaf receives its own copies of the traced step scalars
        (`_pinned_to_leaf`), so that leaves of one shape share kernels where a division by one
        fixed the fusion's parameter order ("Uniform kernels" above). Opt-in: where the kernels
        are uniform without it (ADOPT's, AdaBelief's), the per-leaf copies only cost (ADOPT on
        ResNet-50's shapes: XLA's compile 1.07 -> 1.19 s for the same 86 kernels).
      computed_once: the traced floating step scalars are divided by a traced 1 (exact), which
        XLA computes once per step instead of fusing a scalar's cheap last op (NAdam's
        `-expm1(...)`) into every leaf kernel from the first leaf's place: for transforms whose
        leaves of one shape still compile to several kernels without it (tests/transforms/
        test_per_param.py); each such scalar may become a scalar kernel of its own.
      step_field: the name of the per-leaf counter field.
      check: called with each raw gradient leaf before it is read (torch's per-step errors).

    Returns `(new_updates, new_state)`: `state` with the buffers replaced, the counter of
    every leaf with an update advanced (`core.leaf_scalars.increment_counts`) and
    `schedule_count` advanced once (through the barrier of `step_scalars`, when one is needed).
    """
    old_step = getattr(state, step_field)
    if isinstance(counts, str) and counts == "step":
        counts = next_counts(old_step)
    if step_scalars is not None and counts is None:
        raise ValueError("per_param_update: step_scalars needs counts")
    trees = tuple(getattr(state, name) for name in buffers) + tuple(inputs)
    reference = trees[0] if reference is None else reference
    n_buffers = len(buffers)
    # once per distinct (count, dtype): a count stored shared is one object for every leaf
    prepare = _computed_once if computed_once else tuple
    scalars_of = None if step_scalars is None else numerics.once_per_step(
        lambda c, dtype: prepare(tuple(step_scalars(c, dtype))))
    used = []  # per leaf: the traced step scalars its math received

    def leaf_fn(g, ref, *rest):
        if check is not None:
            check(g)
        leaf = LeafView(ref)
        args, extra = rest[: len(trees)], rest[len(trees):]
        if scalars_of is not None:
            scalars = scalars_of(extra[0], leaf.dtype)
            if pin_step_scalars and args:
                scalars = _pinned_to_leaf(scalars, args[0])
            extra = (*extra, scalars)
            used.append(scalars)
        if views:
            out = math(leaf, leaf.load(g), *(leaf.load(x) for x in args), *extra)
        else:
            out = math(leaf, g, *args, *extra)
        if len(out) != 1 + n_buffers:
            raise ValueError(f"per-param math returned {len(out) - 1} buffers for {n_buffers} ({', '.join(buffers)})")
        u, new = out[0], out[1:]
        if views:
            u, new = leaf.emit(u), tuple(leaf.store(x) for x in new)
        return (u, None, *new, *(None,) * len(inputs))

    # The reference tree goes first: it gives the structure and each leaf's `LeafView`.
    results = update_leaves(leaf_fn, updates, reference, *trees, counts=counts)
    new_updates, new_trees = results[0], results[2 : 2 + n_buffers]
    schedule_count = _second_use_of_lone_scalars(numerics.safe_increment(state.schedule_count), used)
    new_state = state._replace(
        **dict(zip(buffers, new_trees)),
        **{step_field: increment_counts(old_step, updates, reference)},
        schedule_count=schedule_count,
    )
    return new_updates, new_state


def _is_traced(x: Any) -> bool:
    """A traced (or concrete jax) value rather than a host constant: what XLA sees as an operand."""
    return isinstance(x, (jax.Array, jax_core.Tracer))


def _computed_once(scalars: tuple) -> tuple:
    """The traced floating step scalars, each divided by `(s == s)` as a number: 1, or 0 for a
    NaN (NaN / 0 is NaN): exactly themselves, but each is then a division, which XLA's fusion
    computes once and does not copy into its consumers. A cheap op at the end of a scalar's
    chain (the negation in `-expm1(t log b)`) is otherwise fused into every leaf kernel that
    reads it, from the first leaf's place in the program, which gives that leaf kernels of their
    own (see "Uniform kernels"). The divisor depends on the scalar alone: one shared with other
    values (a traced `step > 0`) made a scalar batched over stacked layers (`jax.vmap`) a vector,
    and XLA then turned the leaf's division by it into a product with its reciprocal
    (tests/param_groups/test_stacked.py). A scalar that was a chain of cheap ops fused into the
    leaf kernels becomes a scalar kernel of its own (ADOPT's first-step weights: 5 more
    kernels), hence opt-in (`per_param_update(computed_once=True)`)."""
    return tuple(lax.div(s, lax.convert_element_type(lax.eq(s, s), s.dtype))
                 if _is_traced(s) and jnp.ndim(s) == 0 and jnp.issubdtype(s.dtype, jnp.floating) else s
                 for s in scalars)


def _pinned_to_leaf(scalars: tuple, anchor: jax.Array) -> tuple:
    """`scalars` with the traced ones replaced by the leaf's own copies, passed through one
    `optimization_barrier` with an array of the leaf, so that XLA's CSE cannot share their
    broadcasts between leaves of the same shape (see "Uniform kernels"); the same values. Each
    copy has one user, so it gets a second use (`_second_use_of_lone_scalars`).

    The anchor is the leaf's first state buffer (or input): an argument of the jitted step,
    never a value computed in it. With the gradient as anchor, XLA:GPU wrote a gradient computed
    in the same jit to memory for the barrier instead of fusing its producer into the
    optimizer's kernels (H100, a train step with in-jit gradients, global-norm clipping and Adam
    on 6 x 4096^2 + 6 x 4096 params: 46 fusions and 1.87-1.92 ms against 34 and 1.62-1.70 ms with
    the state buffer or without pinning; optax 1.63-1.67 ms)."""
    traced = [i for i, x in enumerate(scalars) if _is_traced(x) and jnp.ndim(x) == 0]
    if not traced:
        return scalars
    pinned, _ = jax.lax.optimization_barrier((tuple(scalars[i] for i in traced), anchor))
    out = list(scalars)
    for i, x in zip(traced, pinned):
        out[i] = x
    return tuple(out)


def _second_use_of_lone_scalars(count: jax.Array, used: list) -> jax.Array:
    """`count` (the new `schedule_count`, a scalar output of the step) passed through one
    barrier with every step scalar that only one leaf used (`per_param_update`'s
    `step_scalars`): a second use, so that XLA keeps the division by it that the same leaf gets
    in a tree whose leaves share the scalar. Tied to a scalar output, not to the leaf's update: a
    barrier on the update would make XLA:GPU write the update to memory before `p + u`
    (measured on an H200: a one-leaf Adam step 1.14x optax's time)."""
    per_leaf = [list({id(s): s for s in scalars if _is_traced(s)}.values())
                for scalars in used]  # each traced scalar once per leaf
    users = collections.Counter(id(s) for scalars in per_leaf for s in scalars)
    lone = tuple(s for scalars in per_leaf for s in scalars if users[id(s)] == 1)
    if not lone:
        return count
    return jax.lax.optimization_barrier((count, lone))[0]


__all__ = ["LeafView", "hyperparams", "per_param_update", "refuse_complex"]
