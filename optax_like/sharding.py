"""Sharding helpers: optimizer state laid out like its params, and ZeRO-1 (sharded state).

optax_like runs inside JAX's SPMD machinery (`jax.sharding` meshes, `jax.jit` with shardings,
`jax.distributed` for several hosts); nothing here replaces it. What this module adds:

* `tx.init(params)` already gives every params-shaped state leaf its param's sharding, eagerly
  and under `jax.jit`, on Auto and Explicit meshes (see `optax_like.core.tree.zeros_like`).
* `state_shardings(tx, params, param_shardings)`: the sharding of every state leaf, as a tree
  with the state's structure, for `jax.jit(..., out_shardings=...)`, `jax.device_put` and
  checkpoint restore. Leaves that mirror a param get its sharding; scalars, per-leaf step
  counts (0-d) and hyperparameters are replicated.
* `zero1_shardings(tx, params, mesh, axis='data')`: the same, with every params-derived state
  leaf additionally split along the data-parallel mesh axis (ZeRO stage 1: each data-parallel
  replica keeps 1/N of the optimizer state, params stay as they are).
* `abstract_state` (restore targets for orbax), `constrain` (pin shardings inside `jit`),
  `bytes_per_device` (memory accounting).

How state leaves are matched to params: `tx.init` is traced once (no FLOPs, no memory) and
each output leaf is followed back through the jaxpr to the params it depends on. Every
params-shaped buffer is allocated by `tree.zeros_like` / `tree.full_like`, which derive it from
its param, so a state leaf that depends on exactly one param and has its shape mirrors that
param, however deeply combinators (`chain`, `masked`, `multi_transform`,
`inject_hyperparams`, `MultiSteps`, ...) nest it. A leaf that depends on no param (a count) is
replicated.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from optax_like.core.base import GradientTransformation
from optax_like.core.leaf_scalars import leaf_scalars_like

__all__ = [
    "abstract_state",
    "bytes_per_device",
    "constrain",
    "param_shardings_of",
    "state_param_paths",
    "state_shardings",
    "zero1_shardings",
    "zero1_spec",
]

AxisName = Union[str, Sequence[str]]

# What a state leaf is, relative to the params.
_MIRROR = "mirror"  # same shape as exactly one param, derived from it (exp_avg, momentum_buffer)
_DERIVED = "derived"  # derived from params but not a mirror (factored stats, flat buffers)
_FREE = "free"  # depends on no param: counts, per-leaf step counts, hyperparameters


def _is_spec_leaf(x: Any) -> bool:
    return x is None or isinstance(x, (Sharding, PartitionSpec))


def _init_fn(tx: Any):
    init = getattr(tx, "init", None)
    if not callable(init):
        raise TypeError(f"expected a GradientTransformation (with .init), got {type(tx).__name__}.")
    return init


def _classify(tx: GradientTransformation, params: Any):
    """Traces `tx.init(params)` and, for each state leaf, says which param it mirrors.

    Returns `(state_treedef, state_avals, kinds, param_index)` where `kinds[j]` is one of
    `_MIRROR`/`_DERIVED`/`_FREE` and `param_index[j]` is the index (into the non-None leaves of
    `params`) of the mirrored param, or None.
    """
    flat, p_def = jax.tree.flatten(params)
    abstract = [jax.ShapeDtypeStruct(np.shape(x), jnp.dtype(x.dtype)) for x in flat]
    init = _init_fn(tx)

    def traced(*leaves):
        return init(jax.tree.unflatten(p_def, leaves))

    closed, out_shape = jax.make_jaxpr(traced, return_shape=True)(*abstract)
    jaxpr = closed.jaxpr
    out_deps = _output_dependencies(jaxpr, [frozenset((i,)) for i in range(len(jaxpr.invars))])
    state_leaves, s_def = jax.tree.flatten(out_shape)
    if len(state_leaves) != len(jaxpr.outvars):  # pragma: no cover - make_jaxpr guarantees it
        raise RuntimeError("tx.init's traced outputs do not match its state leaves.")
    kinds, index = [], []
    for aval, d in zip(state_leaves, out_deps):
        if len(d) == 1 and tuple(aval.shape) == tuple(abstract[next(iter(d))].shape):
            kinds.append(_MIRROR)
            index.append(next(iter(d)))
        elif d:
            kinds.append(_DERIVED)
            index.append(None)
        else:
            kinds.append(_FREE)
            index.append(None)
    return s_def, state_leaves, kinds, index, flat, p_def


def _output_dependencies(jaxpr, in_deps: list) -> list:
    """For each output of `jaxpr`, the set of inputs (by index, from `in_deps`) it depends on.

    Conservative per equation (an output depends on every input of its equation), except that
    a nested jit / call is followed inside (its outputs depend on what its own body says), so
    a call that builds the buffers of many params at once keeps each buffer tied to its param.
    """
    empty: frozenset = frozenset()
    deps: dict = dict(zip(jaxpr.invars, in_deps))

    def of(v):
        return deps.get(v, empty) if isinstance(v, jex_core.Var) else empty

    for eqn in jaxpr.eqns:
        inner = eqn.params.get("jaxpr") if eqn.primitive.name in ("pjit", "jit", "closed_call", "core_call") else None
        inner = getattr(inner, "jaxpr", inner)
        if inner is not None and len(inner.invars) == len(eqn.invars) and len(inner.outvars) == len(eqn.outvars):
            outs = _output_dependencies(inner, [of(v) for v in eqn.invars])
        else:
            d = empty.union(*(of(v) for v in eqn.invars))
            outs = [d] * len(eqn.outvars)
        for o, d in zip(eqn.outvars, outs):
            deps[o] = d
    return [of(v) for v in jaxpr.outvars]


def state_param_paths(tx: GradientTransformation, params: Any) -> Any:
    """A tree with the state's structure whose leaves name the param each state leaf mirrors
    (its key path, as `jax.tree_util.keystr` writes it), or None for leaves that mirror no param.

    A debugging aid and the mapping `state_shardings` uses.
    """
    s_def, _, kinds, index, _, _ = _classify(tx, params)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return jax.tree.unflatten(s_def, [paths[i] if k == _MIRROR else None for k, i in zip(kinds, index)])


def param_shardings_of(params: Any) -> Any:
    """The `.sharding` of every param (jax.Arrays, or ShapeDtypeStructs with a sharding)."""

    def get(x):
        sharding = getattr(x, "sharding", None)
        if sharding is None:
            raise ValueError(
                f"param of shape {np.shape(x)} has no sharding (a host array?): pass "
                "param_shardings explicitly, or device_put the params first."
            )
        return sharding

    return jax.tree.map(get, params)


def _flat_shardings(params: Any, p_def, param_shardings: Any, mesh: Optional[Mesh]) -> list:
    if param_shardings is None:
        param_shardings = param_shardings_of(params)
    if _is_spec_leaf(param_shardings) and param_shardings is not None:
        flat = [param_shardings] * p_def.num_leaves
    else:
        try:
            flat = jax.tree.structure(params, is_leaf=lambda x: x is None)
            flat = flat.flatten_up_to(param_shardings)
        except (ValueError, TypeError) as e:
            raise ValueError(
                "param_shardings must be one Sharding/PartitionSpec or a tree with the params' "
                f"structure: {e}"
            ) from None
        flat = [s for s in flat if s is not None]
        if len(flat) != p_def.num_leaves:
            raise ValueError(
                f"param_shardings has {len(flat)} shardings for {p_def.num_leaves} params "
                "(None is only allowed where the param is None)."
            )
    out = []
    for s in flat:
        if isinstance(s, PartitionSpec):
            if mesh is None:
                raise ValueError("param_shardings given as PartitionSpecs need mesh=.")
            s = NamedSharding(mesh, s)
        if not isinstance(s, Sharding):
            raise TypeError(f"expected a Sharding or PartitionSpec, got {type(s).__name__}.")
        out.append(s)
    return out


def _replicated_like(shardings: list, mesh: Optional[Mesh]) -> Sharding:
    if mesh is not None:
        return NamedSharding(mesh, PartitionSpec())
    for s in shardings:
        if isinstance(s, NamedSharding):
            return NamedSharding(s.mesh, PartitionSpec())
    devices = {d for s in shardings for d in s.device_set}
    if len(devices) == 1:
        return SingleDeviceSharding(next(iter(devices)))
    if not devices:
        return SingleDeviceSharding(jax.devices()[0])
    raise ValueError(
        "cannot tell how to replicate scalar state over params placed on several devices "
        "without a NamedSharding: pass mesh=."
    )


def state_shardings(
    tx: GradientTransformation,
    params: Any,
    param_shardings: Any = None,
    *,
    mesh: Optional[Mesh] = None,
) -> Any:
    """The sharding of every leaf of `tx.init(params)`, as a tree with the state's structure.

    Args:
      tx: any optax_like transformation (combinators included).
      params: the params tree, as arrays or `jax.ShapeDtypeStruct`s (None leaves allowed).
      param_shardings: a `Sharding` (or `PartitionSpec`, with `mesh`) per param, as a tree with
        the params' structure, or one for all params. Default: each param's own `.sharding`.
      mesh: the mesh for replicated leaves and for `PartitionSpec`s (default: the mesh of the
        first `NamedSharding` among `param_shardings`).

    State leaves that mirror a param (`exp_avg`, `momentum_buffer`, ...) get that param's
    sharding; every other leaf (counts, per-leaf step counts, hyperparameters, and buffers
    derived from several params) is replicated. Use it as `out_shardings` of a jitted `init`,
    to `jax.device_put` a host state, or to build restore targets (`abstract_state`).
    """
    s_def, _, kinds, index, _, p_def = _classify(tx, params)
    flat = _flat_shardings(params, p_def, param_shardings, mesh)
    replicated = _replicated_like(flat, mesh)
    out = [flat[i] if k == _MIRROR else replicated for k, i in zip(kinds, index)]
    return jax.tree.unflatten(s_def, out)


def _axis_tuple(axis: AxisName) -> tuple:
    return (axis,) if isinstance(axis, str) else tuple(axis)


def _names(entry) -> tuple:
    if entry is None or entry is PartitionSpec.UNCONSTRAINED:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def zero1_spec(shape: Sequence[int], spec: PartitionSpec, mesh: Mesh, axis: AxisName = "data") -> PartitionSpec:
    """`spec` with the first dimension that `axis` can split evenly also split along `axis`.

    The rule behind `zero1_shardings`: a dimension not yet sharded whose size is a multiple of
    the axis size is preferred; failing that, a sharded dimension whose size is a multiple of
    its current shard count times the axis size gets `axis` appended. If no dimension divides
    evenly (or `axis` is already used by `spec`) the spec is returned unchanged, i.e. that
    leaf stays replicated along `axis`.
    """
    axes = _axis_tuple(axis)
    for a in axes:
        if a not in mesh.shape:
            raise ValueError(f"mesh has no axis {a!r}; its axes are {tuple(mesh.shape)}.")
    size = math.prod(mesh.shape[a] for a in axes)
    entries = list(tuple(spec)) + [None] * (len(shape) - len(tuple(spec)))
    used = {n for e in entries for n in _names(e)}
    if size == 1 or used & set(axes) or not shape:
        return PartitionSpec(*entries)
    new = axes[0] if len(axes) == 1 else axes
    for d, n in enumerate(shape):
        if entries[d] is None and n % size == 0:
            entries[d] = new
            return PartitionSpec(*entries)
    for d, n in enumerate(shape):
        names = _names(entries[d])
        if names and n % (math.prod(mesh.shape[a] for a in names) * size) == 0:
            entries[d] = (*names, *axes)
            return PartitionSpec(*entries)
    return PartitionSpec(*entries)


def zero1_shardings(
    tx: GradientTransformation,
    params: Any,
    mesh: Mesh,
    axis: AxisName = "data",
    param_shardings: Any = None,
) -> Any:
    """State shardings for ZeRO stage 1: optimizer state split along the data axis `axis`.

    Every state leaf derived from params starts from its param's layout (as `state_shardings`
    gives it; default: replicated, as params usually are in data parallelism) and is further
    split along `axis` by `zero1_spec` (the first evenly divisible dimension). Counts and other
    scalars stay replicated. With N devices on `axis`, each holds ~1/N of the state.

    Pass the result as the state's `out_shardings` (and `in_shardings`) of a jitted step, and
    give params their own sharding in `out_shardings` so that XLA all-gathers the updated params
    (a step then costs one reduce-scatter-like split of the update and one all-gather of the
    params, instead of keeping N copies of the state).

    `param_shardings` defaults to each param's `.sharding` when params are placed on `mesh`,
    and to replicated otherwise (host arrays, ShapeDtypeStructs without a sharding).
    """
    s_def, avals, kinds, index, flat_params, p_def = _classify(tx, params)
    if param_shardings is None:
        param_shardings = [
            getattr(x, "sharding", None) if isinstance(getattr(x, "sharding", None), NamedSharding) else NamedSharding(mesh, PartitionSpec())
            for x in flat_params
        ]
        param_shardings = jax.tree.unflatten(p_def, param_shardings)
    flat = _flat_shardings(params, p_def, param_shardings, mesh)
    out = []
    for aval, k, i in zip(avals, kinds, index):
        if k == _FREE or not aval.shape:
            out.append(NamedSharding(mesh, PartitionSpec()))
            continue
        base = flat[i] if k == _MIRROR else None
        if base is not None and not isinstance(base, NamedSharding):
            raise ValueError(f"zero1_shardings needs NamedShardings on the mesh, got {base}.")
        if base is not None and dict(base.mesh.shape) != dict(mesh.shape):
            raise ValueError("param_shardings are on a different mesh than mesh=.")
        spec = base.spec if base is not None else PartitionSpec()
        out.append(NamedSharding(mesh, zero1_spec(aval.shape, spec, mesh, axis)))
    return jax.tree.unflatten(s_def, out)


def abstract_state(tx: GradientTransformation, params: Any, shardings: Any) -> Any:
    """`jax.ShapeDtypeStruct`s of `tx.init(params)` carrying `shardings` (from
    `state_shardings`/`zero1_shardings`): the restore target for orbax
    (`checkpointer.restore(path, abstract_state(...))`) or for `jax.make_array_from_callback`.
    Per-param scalars (`core.leaf_scalars.LeafScalars`) take the form of `shardings`: pass
    `optax_like.per_leaf_scalars(shardings)` for a state made with `per_leaf_scalars`.
    """
    shapes = jax.eval_shape(_init_fn(tx), jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params))
    shapes = leaf_scalars_like(shapes, shardings)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def _has_explicit(sharding: Sharding) -> bool:
    if not isinstance(sharding, NamedSharding):
        return False
    names = {n for e in sharding.spec for n in _names(e)}
    types = dict(zip(sharding.mesh.axis_names, sharding.mesh.axis_types))
    return any(types.get(n) == AxisType.Explicit for n in names) or (
        not names and all(t == AxisType.Explicit for t in sharding.mesh.axis_types)
    )


def constrain(tree: Any, shardings: Any) -> Any:
    """Pins each leaf of `tree` to its sharding inside `jit` (or moves it, outside).

    Uses `jax.sharding.reshard` where the sharding names Explicit mesh axes (there a
    sharding constraint would be a type error) and `jax.lax.with_sharding_constraint` on Auto
    axes. `shardings` is a tree with `tree`'s structure (None leaves of `tree` stay None), or
    one sharding for every leaf. Per-param scalars (`core.leaf_scalars.LeafScalars`) may be shared in one
    and per leaf in the other (a state after a step that skipped a param, with the shardings of
    its init state).
    """

    def one(x, s):
        if _has_explicit(s):
            return jax.sharding.reshard(x, s)
        return jax.lax.with_sharding_constraint(x, s)

    if isinstance(shardings, Sharding):
        return jax.tree.map(lambda x: one(x, shardings), tree)
    return jax.tree.map(one, tree, leaf_scalars_like(shardings, tree))


def bytes_per_device(tree: Any) -> dict:
    """Bytes of `tree`'s arrays held on each addressable device, as `{device: bytes}`.

    A replicated array counts fully on every device; a sharded one counts its shard.
    """
    out: dict = {}
    for x in jax.tree.leaves(tree):
        if not isinstance(x, jax.Array):
            continue
        for shard in x.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out
