"""Per-parameter scalars of an optimizer state (`LeafScalars`): torch's per-param `step` and
friends, stored shared while every leaf holds the same value, and the helpers that create,
count and select them under torch's "no gradient, no step" rule."""

from __future__ import annotations

import itertools
import operator
from typing import Any, Callable, Sequence, cast

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core import numerics
from optax_like.core.tree import is_none, is_params_placeholder, num_leaves, path_str

# ---------------------------------------------------------------------------------------------
# Per-leaf mapping with torch's "no gradient, no step" rule.
#
# torch skips a parameter whose `.grad` is None: no update, state untouched, its `step` not
# incremented. Here a `None` update leaf means the same thing. Scalars that torch keeps per
# parameter (`state[p]['step']`, NAdam's `mu_product`, ASGD's `eta`/`mu`) are stored as a
# `LeafScalars` node, in one of two forms:
#
# - shared: ONE 0-d array standing for every leaf, while all leaves hold the same value. This is
#   the form `init` creates and the form an update keeps as long as every leaf has a gradient
#   (the common case: torch's per-param steps are then all equal). The step's scalar work
#   (counter increment, bias corrections) is done once for the whole tree, as optax does with
#   its single count: per-leaf scalar kernels cost a few microseconds each on XLA:CPU, and a
#   35-leaf Adam step ran 1.05-1.4x optax's time and compiled 1.4-1.8x longer with one counter
#   per leaf (BENCHMARKS.md, "Shared step counters").
# - per leaf: one 0-d array per non-None leaf, once the values differ: after an update where
#   some leaves had no gradient, or after loading a torch state dict with unequal steps. Not
#   one vector: XLA:CPU compiles one kernel per *distinct* fusion and reuses it for identical
#   ones, and a leaf kernel reading `step[i]` (a slice at a different offset per leaf) would
#   make every leaf's kernel distinct.
#
# The form is pytree structure (aux data) and is fixed at init: `update` never changes it (jit,
# scan, orbax and donation rely on a fixed state structure). `init` gives the shared form;
# `per_leaf_scalars(tx.init(params))` gives the per-leaf form, which a state needs when some
# updates give None for some leaves (torch's `p.grad is None`); the shared form refuses such an
# update at trace time with an error naming the leaf (`select_present`). The per-leaf form
# costs scalar work per leaf (measured in BENCHMARKS.md, "Shared step counters"); the
# stateful adapter switches its own state to it when it first sees a None gradient.
# ---------------------------------------------------------------------------------------------


@jax.tree_util.register_pytree_with_keys_class
class LeafScalars:
    """Per-parameter scalars of an optimizer state, one per non-None params leaf in the params'
    flattening order (torch's per-param `state['step']` and friends).

    Stored either shared (one 0-d array for all `n` leaves while they are equal; see
    `LeafScalars.shared`) or per leaf (one 0-d array each). A registered pytree node (its
    children are the stored arrays: checkpoints, `jax.tree.map`, donation and sharding see
    ordinary array leaves), recognisable by type (the adapter maps it to torch's per-param
    entries, `grouped` treats it as per-member state). It reads like a vector of `n` values in
    either form: `len`, `counts[i]` (the i-th leaf's scalar), iteration, and `np.asarray(counts)`
    / `.tolist()` (stacked on the last axis: `(k, n)` for a state batched over k stacked members
    by `grouped`).
    """

    __slots__ = ("_arrays", "_shared_n")

    def __init__(self, values):
        self._arrays = tuple(values)
        self._shared_n = None

    @classmethod
    def shared(cls, value, n: int) -> "LeafScalars":
        """One scalar `value` standing for `n` leaves (per leaf, i.e. empty, when n == 0)."""
        if n == 0:
            return cls(())
        out = cls.__new__(cls)
        out._arrays = (value,)
        out._shared_n = int(n)
        return out

    @property
    def is_shared(self) -> bool:
        return self._shared_n is not None

    @property
    def values(self) -> tuple:
        """The n per-leaf scalars (the shared one repeated n times)."""
        if self._shared_n is None:
            return self._arrays
        return self._arrays * self._shared_n

    def tree_flatten_with_keys(self):
        return tuple((jax.tree_util.SequenceKey(i), v) for i, v in enumerate(self._arrays)), self._shared_n

    def tree_flatten(self):
        return self._arrays, self._shared_n

    @classmethod
    def tree_unflatten(cls, aux, children):
        if aux is None:
            return cls(children)
        (value,) = children
        return cls.shared(value, aux)

    def __len__(self) -> int:
        return len(self._arrays) if self._shared_n is None else self._shared_n

    def __iter__(self):
        return iter(self.values)

    def __getitem__(self, index):
        if isinstance(index, slice):
            if self._shared_n is None:
                return LeafScalars(self._arrays[index])
            return LeafScalars.shared(self._arrays[0], len(range(*index.indices(self._shared_n))))
        if self._shared_n is None:
            return self._arrays[index]
        if not -self._shared_n <= index < self._shared_n:
            raise IndexError(f"LeafScalars index {index} out of range for {self._shared_n} leaves")
        return self._arrays[0]

    @property
    def dtype(self):
        """The scalars' dtype (they share one; None when there are no leaves)."""
        return jnp.result_type(*self._arrays) if self._arrays else None

    def map(self, fn: Callable, *others: "LeafScalars") -> "LeafScalars":
        """`fn` applied to each scalar (and the matching scalars of `others`): once when every
        operand is shared (the result is shared), else once per leaf."""
        if self.is_shared and all(o.is_shared and len(o) == len(self) for o in others):
            return LeafScalars.shared(fn(self._arrays[0], *(o._arrays[0] for o in others)), len(self))
        return LeafScalars(fn(*xs) for xs in zip(self.values, *(o.values for o in others)))

    def __array__(self, dtype=None, copy=None):
        if not self._arrays:
            out = np.zeros((0,), np.int32)
        else:
            out = np.stack([np.asarray(v) for v in self.values], axis=-1)
        return out if dtype is None else out.astype(dtype)

    def tolist(self) -> list:
        return np.asarray(self).tolist()

    def __repr__(self) -> str:
        if self.is_shared:
            return f"LeafScalars.shared({self._arrays[0]!r}, n={self._shared_n})"
        return f"LeafScalars({list(self._arrays)!r})"


def is_leaf_scalars(x: Any) -> bool:
    return isinstance(x, LeafScalars)


def _distinct(values) -> list:
    """`values` with every array that occurs more than once after its first occurrence replaced
    by a copy: state leaves must not share a buffer (donation). Non-arrays (shardings, shape
    structs) are kept as they are."""
    seen, out = set(), []
    for v in values:
        if isinstance(v, jax.Array) and id(v) in seen:
            v = jnp.array(v, copy=True)
        seen.add(id(v))
        out.append(v)
    return out


def _split(node: LeafScalars) -> LeafScalars:
    return LeafScalars(_distinct(node.values)) if node.is_shared else node


def per_leaf_scalars(tree: Any) -> Any:
    """`tree` (an optimizer state, or a tree of its shardings) with every shared `LeafScalars`
    node split into one entry per leaf (arrays copied).

        state = optax_like.per_leaf_scalars(tx.init(params))

    gives a state whose updates accept a gradient tree with None for some leaves (torch's
    `p.grad is None`: that leaf is skipped, its step count untouched), under `jit`, `lax.scan`
    and `fori_loop` alike: the state's structure stays fixed. The shared form that `init`
    returns refuses such a gradient tree at trace time. Apply it too to
    `optax_like.sharding.state_shardings(...)` given to `jax.jit(out_shardings=...)` for such a
    state. Cost: the per-param scalar work (step increments, bias corrections) is done per leaf.
    """
    return jax.tree.map(lambda n: _split(n) if isinstance(n, LeafScalars) else n, tree, is_leaf=is_leaf_scalars)


def per_leaf_where_none(state: Any, grads: Sequence, leaves: Sequence) -> Any:
    """`state` as `per_leaf_scalars` makes it when a gradient in `grads` is None for a leaf of
    `leaves` (None entries: no leaf) and `state` has a shared `LeafScalars` node; else `state`
    itself. Traceable: the stateful adapter applies it between steps to pending gradients and
    inside its step to a closure's (a param the loss does not reach), where the new structure
    compiles the next step once more."""
    if any(map(operator.is_, grads, itertools.repeat(None))) and any(  # (C-level first: every step)
            g is None and p is not None for g, p in zip(grads, leaves)):
        if any(isinstance(n, LeafScalars) and n.is_shared for n in jax.tree.leaves(state, is_leaf=is_leaf_scalars)):
            return per_leaf_scalars(state)
    return state


def leaf_scalars_like(tree: Any, reference: Any) -> Any:
    """`tree` with each `LeafScalars` node in the form of the matching node of `reference` (a
    tree with the same structure up to those forms, e.g. the state an update returned, for the
    state it started from): split where `reference`'s is per leaf; merged where `reference`'s is
    shared, which needs all entries to be the same object or equal non-arrays (shardings)."""
    def match(ref, node):
        if not (isinstance(ref, LeafScalars) and isinstance(node, LeafScalars)) or ref.is_shared == node.is_shared:
            return node
        if not ref.is_shared:
            return _split(node)
        first = node[0]
        if all(v is first or (not isinstance(v, jax.Array) and v == first) for v in node.values):
            return LeafScalars.shared(first, len(node))
        raise ValueError("leaf_scalars_like: cannot merge per-leaf scalars with different values into a shared one")

    return jax.tree.map(match, reference, tree, is_leaf=is_leaf_scalars)


def leaf_scalars(params: Any, value, dtype) -> LeafScalars:
    """`value` as a 0-d `dtype` array shared by every non-None leaf of `params` (a fresh buffer).

    For `optax.tree.map_params`'s placeholder params, a plain 0-d array: a leaf of the
    placeholder state, which the real state's `LeafScalars` node (of however many leaves) then
    matches as a whole (per-param counters are not params-shaped: not mapped)."""
    if is_params_placeholder(params):
        return cast(LeafScalars, jnp.array(value, dtype=dtype))
    # copy=True: `jnp.array` may hand back `value` itself when it is already a 0-d array of
    # `dtype`, and state leaves sharing one buffer cannot be donated.
    return LeafScalars.shared(jnp.array(value, dtype=dtype, copy=True).reshape(()), num_leaves(params))


def init_counts(params: Any) -> LeafScalars:
    """A zero per-leaf step counter for `params` (shared int32 zero)."""
    return leaf_scalars(params, 0, jnp.int32)


def present_mask(updates: Any, reference: Any) -> list[bool]:
    """For each non-None leaf of `reference`: whether `updates` has a gradient there."""
    ref = jax.tree.leaves(reference, is_leaf=is_none)
    upd = jax.tree.structure(reference, is_leaf=is_none).flatten_up_to(updates)
    return [u is not None for r, u in zip(ref, upd) if r is not None]


def next_counts(counts: LeafScalars) -> LeafScalars:
    """Every counter plus one, saturating at int32's max (the step number being taken)."""
    # numerics.safe_increment: the same formula as the transforms' own counters, so XLA compiles
    # one scalar kernel for both (BENCHMARKS.md, "Where compile time goes").
    return counts.map(numerics.safe_increment)


def increment_counts(counts: LeafScalars, updates: Any, reference: Any) -> LeafScalars:
    """Adds one to the counter of every leaf that received an update (saturating at int32's
    max); the counters of leaves without a gradient are returned as they are."""
    return select_present(next_counts(counts), counts, updates, reference)


def select_present(new: LeafScalars, old: LeafScalars, updates: Any, reference: Any) -> LeafScalars:
    """Per leaf: `new`'s scalar where `updates` has a gradient, else `old`'s (a static choice).

    The result has the form (shared or per leaf) of `old`: an update never changes a state's
    pytree structure. A shared node can only take one side for every leaf; a gradient tree that
    has a gradient for some leaves and None for others needs the per-leaf form, chosen at init
    (`per_leaf_scalars(tx.init(params))`), and is refused here, at trace time, naming the leaf.
    """
    mask = present_mask(updates, reference)
    if all(mask):
        return new
    if not any(mask):
        return old
    if old.is_shared or new.is_shared:
        raise_needs_per_leaf_scalars(updates, reference)
    return LeafScalars(_distinct(n if keep else o for n, o, keep in zip(new.values, old.values, mask)))


class NoneGradientError(ValueError):
    """A None gradient for some (not all) leaves of a state whose per-param scalars are shared."""


def raise_needs_per_leaf_scalars(updates: Any, reference: Any) -> None:
    """Raises `NoneGradientError` naming the first params leaf whose gradient is None."""
    paths = [path for path, r in jax.tree_util.tree_flatten_with_path(reference, is_leaf=is_none)[0]]
    ref = jax.tree.leaves(reference, is_leaf=is_none)
    upd = jax.tree.structure(reference, is_leaf=is_none).flatten_up_to(updates)
    missing = [path_str(p) for p, r, u in zip(paths, ref, upd) if r is not None and u is None]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise NoneGradientError(
        f"the gradient of leaf {missing[0]}{more} is None, so this update may step some leaves and "
        "skip others, but this optimizer state keeps torch's per-parameter step counters shared "
        "(one scalar for every leaf, the form init gives: the state's structure cannot change "
        "inside update). Start "
        "from `state = optax_like.per_leaf_scalars(tx.init(params))` to allow gradients that "
        "are None for some leaves (torch's `p.grad is None`), or pass zeros for that leaf."
    )
