"""Pytree helpers: checks with leaf-path error messages, and `None`-aware maps.

Params may be any pytree of arrays: dicts, lists, tuples, NamedTuples, dataclass-style
modules. `None` marks a leaf that is not optimized (frozen, or filtered out of an
equinox/flax module with `eqx.filter(model, eqx.is_inexact_array)`); it passes through every
transformation. Any other non-array leaf (a Python callable, a string, an integer array) is
rejected with an error that names its path, rather than failing deep inside jax.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core import numerics


def is_none(x: Any) -> bool:
    return x is None


def path_str(path) -> str:
    """A leaf path as a user reads it: `['encoder']['layers'][0].w`."""
    return jax.tree_util.keystr(tuple(path)) or "<root>"


def map_params(fn: Callable, tree: Any, *rest: Any) -> Any:
    """`jax.tree.map` that treats `None` as a leaf and maps it to `None`."""

    def f(x, *xs):
        if x is None:
            return None
        return fn(x, *xs)

    return jax.tree.map(f, tree, *rest, is_leaf=is_none)


def _is_array_like(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic)) or hasattr(x, "__jax_array__")


def check_params(params: Any, what: str = "params") -> None:
    """Raises a TypeError naming the first leaf that is not a float/complex array (or None)."""
    leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_none)[0]
    for path, leaf in leaves:
        if leaf is None:
            continue
        if isinstance(leaf, jax.ShapeDtypeStruct) or _is_array_like(leaf):
            dtype = jnp.dtype(leaf.dtype)
            if jnp.issubdtype(dtype, jnp.inexact):
                continue
            raise TypeError(
                f"optax_like optimizes floating-point or complex arrays, but {what} leaf "
                f"{path_str(path)} has dtype {dtype}. Replace leaves that are not optimized by "
                "None (e.g. eqx.filter(model, eqx.is_inexact_array))."
            )
        raise TypeError(
            f"{what} leaf {path_str(path)} is a {type(leaf).__name__}, not an array. Replace "
            "leaves that are not optimized by None (e.g. eqx.filter(model, "
            "eqx.is_inexact_array)) before calling init/update."
        )


def check_same_structure(reference: Any, other: Any, ref_name: str, other_name: str) -> None:
    """Raises a ValueError naming the first leaf path where two trees' structure or shape differ.

    `None` in `other` where `reference` has an array is allowed (a param without gradient);
    the converse is not.
    """
    ref_def = jax.tree.structure(reference, is_leaf=is_none)
    other_def = jax.tree.structure(other, is_leaf=is_none)
    if ref_def != other_def:
        ref_paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(reference, is_leaf=is_none)[0]]
        other_paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(other, is_leaf=is_none)[0]]
        missing = [p for p in ref_paths if p not in set(other_paths)]
        extra = [p for p in other_paths if p not in set(ref_paths)]
        detail = []
        if missing:
            detail.append(f"missing from {other_name}: {', '.join(missing[:5])}")
        if extra:
            detail.append(f"not in {ref_name}: {', '.join(extra[:5])}")
        if not detail:
            detail.append(f"{ref_name} is {ref_def}, {other_name} is {other_def}")
        raise ValueError(
            f"{other_name} do not have the structure of {ref_name} ({'; '.join(detail)})."
        )
    ref_leaves = jax.tree_util.tree_flatten_with_path(reference, is_leaf=is_none)[0]
    other_leaves = jax.tree.leaves(other, is_leaf=is_none)
    for (path, r), o in zip(ref_leaves, other_leaves):
        if r is None or o is None:
            continue
        if jnp.shape(r) != jnp.shape(o):
            raise ValueError(
                f"{other_name} leaf {path_str(path)} has shape {jnp.shape(o)} but the "
                f"{ref_name} leaf has shape {jnp.shape(r)}."
            )
        _check_leaf_dtype(path, r, o, ref_name, other_name)


def _leaf_dtype(x: Any):
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return None
    try:
        return jnp.dtype(dtype)
    except TypeError:
        return None


def _check_leaf_dtype(path, r: Any, o: Any, ref_name: str, other_name: str) -> None:
    """Raises a TypeError naming the leaf when `o` cannot be an update of `r`: an integer or
    bool leaf, or a complex leaf for a real one (the update would silently change the math or
    fail deep inside a transform). Floating precisions may differ (arithmetic promotes)."""
    rd, od = _leaf_dtype(r), _leaf_dtype(o)
    if rd is None or od is None or not jnp.issubdtype(rd, jnp.inexact):
        return
    if not jnp.issubdtype(od, jnp.inexact) or (
        jnp.issubdtype(od, jnp.complexfloating) and not jnp.issubdtype(rd, jnp.complexfloating)
    ):
        raise TypeError(
            f"{other_name} leaf {path_str(path)} has dtype {od} but the {ref_name} leaf has "
            f"dtype {rd}: {other_name} must be floating-point arrays (complex only for complex "
            f"{ref_name})."
        )


def tree_sum(tree: Any) -> jax.Array:
    """Sum of all leaves of a tree of scalars (None leaves skipped)."""
    leaves = [x for x in jax.tree.leaves(tree) if x is not None]
    return sum(leaves, jnp.zeros(())) if leaves else jnp.zeros(())


def global_norm_sq(tree: Any) -> jax.Array:
    """Sum of squared magnitudes of every element of every leaf, accumulated in >= float32."""
    parts = []
    for x in jax.tree.leaves(tree):
        x = jnp.asarray(x)
        acc = jnp.promote_types(jnp.real(x).dtype, jnp.float32)
        parts.append(jnp.sum(jnp.abs(x).astype(acc) ** 2) if jnp.iscomplexobj(x) else jnp.sum(jnp.square(x.astype(acc))))
    if not parts:
        return jnp.zeros((), jnp.float32)
    return sum(parts[1:], parts[0])


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


def num_leaves(tree: Any) -> int:
    """The number of non-None leaves."""
    return len([x for x in jax.tree.leaves(tree, is_leaf=is_none) if x is not None])


def leaf_scalars(params: Any, value, dtype) -> LeafScalars:
    """`value` as a 0-d `dtype` array shared by every non-None leaf of `params` (a fresh buffer)."""
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


def update_leaves(fn: Callable, updates: Any, *trees: Any, counts=None):
    """Maps `fn` leaf-wise over `updates` and `trees` (params-shaped; None = not optimized).

    The first tree gives the structure. Where it and `updates` both have a leaf, calls
    `fn(update, *tree_leaves[, count])`, which returns `(new_update, *new_tree_leaves)`.
    Where `updates` is None the leaf is skipped (torch's `grad is None`): the update stays None
    and every tree leaf is returned unchanged. `counts` (a `LeafScalars` from `init_counts`, or
    any sequence with one entry per non-None leaf) passes the leaf's entry as the last argument.
    Returns `(new_updates, *new_trees)`, each with the first tree's structure.
    """
    reference = trees[0]
    treedef = jax.tree.structure(reference, is_leaf=is_none)
    ref_leaves = jax.tree.leaves(reference, is_leaf=is_none)
    upd_leaves = treedef.flatten_up_to(updates)
    tree_leaves = [treedef.flatten_up_to(t) for t in trees]
    outs = [[] for _ in range(1 + len(trees))]
    index = 0
    for i, (r, u) in enumerate(zip(ref_leaves, upd_leaves)):
        olds = [t[i] for t in tree_leaves]
        if r is None or u is None:
            results = (None if r is not None else u, *olds)
        else:
            extra = (counts[index],) if counts is not None else ()
            results = fn(u, *olds, *extra)
        if r is not None:
            index += 1
        for out, value in zip(outs, results):
            out.append(value)
    return tuple(treedef.unflatten(out) for out in outs)


def _filled_tree(leaves: list, value: Any, dtype) -> list:
    """Arrays of `value` with each leaf's shape and sharding (dtype `dtype`, default the
    leaf's); None leaves stay None.

    Outside tracing `jnp.full_like` already keeps a committed array's sharding. Under `jit`
    the tracer's aval carries the sharding only on an Explicit mesh; on an Auto mesh
    `jnp.full_like` gives an unconstrained constant that XLA places on one device (or
    replicates). So under tracing each buffer is written as `select(False, p, value)`: an
    elementwise op of `p`, which both sharding-in-types (Explicit) and XLA's sharding
    propagation (Auto) give `p`'s sharding. XLA folds it to a broadcast after propagation
    (no runtime cost), and the result is exactly `value` whatever `p` holds (no `0 * nan`).
    The data dependence on `p` is also what `optax_like.sharding.state_shardings` reads to
    map state leaves to their params.
    """
    traced = isinstance(value, jax.core.Tracer) or any(isinstance(p, jax.core.Tracer) for p in leaves)
    if not traced:
        return [None if p is None else jnp.full_like(p, value, dtype=dtype) for p in leaves]
    srcs, fills, nevers = [], [], []
    for p in leaves:
        if p is None:
            continue
        p = jnp.asarray(p)
        target = jnp.dtype(p.dtype if dtype is None else dtype)
        src = p
        if jnp.iscomplexobj(src) and not jnp.issubdtype(target, jnp.complexfloating):
            src = jax.lax.real(src)
        src = jax.lax.convert_element_type(src, target)
        srcs.append(src)
        nevers.append(jax.lax.full_like(src, False, dtype=bool))
        fills.append(jnp.full_like(src, value) if isinstance(value, jax.core.Tracer) else jax.lax.full_like(src, value))
    selected = iter(_select_all(nevers, srcs, fills))
    return [None if p is None else next(selected) for p in leaves]


@jax.jit
def _select_all(preds: list, on_true: list, on_false: list) -> list:
    # `select(False, p, fill)` for every leaf of a tree inside one nested jit (jnp.where's
    # construction, once per tree instead of once per leaf: ~100 us of tracing per leaf): the
    # call boundary keeps XLA from folding the constant select before sharding propagation
    # (a bare select in the caller's computation loses `p`'s sharding on an Auto mesh).
    return [jax.lax.select(c, t, f) for c, t, f in zip(preds, on_true, on_false)]


def zeros_like(params: Any, dtype=None) -> Any:
    """Zero state buffers shaped and sharded like `params` (eager and under jit, on Auto and
    Explicit meshes); `dtype` defaults to each param's dtype; None stays None.

    Every optimizer allocates its params-shaped state through this function (or `full_like`),
    so that layout and sharding rules live in one place. Each call returns fresh buffers
    (no two state leaves share one, as donation requires).
    """
    return full_like(params, 0, dtype)


def full_like(params: Any, value, dtype=None) -> Any:
    """Like `zeros_like`, filled with `value` (a host scalar or a traced scalar)."""
    leaves, treedef = jax.tree.flatten(params, is_leaf=is_none)
    return treedef.unflatten(_filled_tree(leaves, value, dtype))


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
