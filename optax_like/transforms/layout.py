"""Grouped (stacked) layouts: run a per-parameter optimizer on a few big buffers, not many leaves.

An optimizer step is memory-bound, but XLA on CPU pays a fixed cost per kernel (dispatch and,
at compile time, code generation), so a step over 2000 small leaves costs far more than one over
a single leaf of the same total size (see BENCHMARKS.md). This module stacks leaves of the same
dtype and shape into one array with a leading "member" axis and runs the optimizer once per
stack, `jax.vmap`-ed over that axis:

    layout = GroupedLayout(params)        # static: which leaves go into which stack
    packed = layout.pack(params)          # {"float32[512,512]": f32[k, 512, 512], ...}
    tx = grouped(adam(1e-3))              # any per-parameter optimizer
    state = tx.init(packed)               # state in the grouped layout

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(packed, state, batch):
        grads = jax.grad(lambda q: loss(layout.unpack(q), batch))(packed)   # grads come packed
        updates, state = tx.update(grads, state, packed)
        return apply_updates(packed, updates), state

This is the fast path: params, grads and state all live in the grouped layout, the unpacking
inside the loss fuses into the model's own ops, and the step compiles to a handful of kernels.
`grouped(tx, layout)` is the drop-in variant: it takes and returns ordinary trees and packs and
unpacks inside the step (fewer kernels than per-leaf, but one extra copy of grads, params and
updates per step, and a slower compile: XLA on CPU compiles slicing a stack into many outputs
slowly).

Semantics are exactly those of `tx` applied leaf by leaf: each stacked member is one torch
parameter, with its own step count (the leaf's 0-d counter becomes a `(k,)` array per stack),
so results match the ungrouped optimizer and torch (tests/parity/test_grouped.py). `tx` must be
per-parameter (every torch.optim optimizer is): a transformation that couples leaves, such as
`clip_by_global_norm`, would see one member at a time inside `grouped`; put it before
`grouped(...)` in a `chain` instead (on a packed tree the global norm is the same number).
In the drop-in variant a `None` update (a param without gradient) skips that member: its
update stays `None` and its whole state (moments, step count) is kept, as torch does.

Sharding: leaves are grouped per dtype, per shape, and per sharding (two leaves with different
shardings never share a stack), so stacking never reshards. A stack of leaves sharded with
`P(*spec)` is laid out as `P(None, *spec)`: the member axis is replicated and each device keeps
the same slice of every member it held before. Hyperparameters in the state of a grouped
`inject_hyperparams` are per member (`(k,)` arrays): edit them with `.at[:].set(...)`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs
from optax_like.core.leaf_scalars import LeafScalars, is_leaf_scalars
from optax_like.core.tree import check_params, is_none


def _sharding_key(x: Any):
    sharding = getattr(x, "sharding", None) if isinstance(x, jax.Array) else None
    if sharding is None or len(sharding.device_set) <= 1:
        return None
    return sharding


def _group_name(dtype, shape, index: int | None) -> str:
    name = f"{jnp.dtype(dtype).name}[{','.join(str(d) for d in shape)}]"
    return name if index is None else f"{name}#{index}"


class GroupedLayout:
    """Which leaves of a params tree are stacked together, and how to pack and unpack trees.

    Leaves are grouped by (dtype, shape, sharding), in tree order; `None` leaves (not optimized)
    belong to no group. A packed tree is a dict `{group name: stacked array}` with names like
    `"float32[512,512]"` (a `#n` suffix separates leaves of one dtype and shape that are sharded
    differently). The layout is static (Python data): build it once, outside `jit`.
    """

    def __init__(self, params: Any):
        check_params(params)
        leaves, self.treedef = jax.tree.flatten(params, is_leaf=is_none)
        self.num_leaves = len(leaves)
        keys: dict[tuple, list[int]] = {}
        shardings: dict[tuple, list] = {}
        for i, leaf in enumerate(leaves):
            if leaf is None:
                continue
            base = (jnp.dtype(leaf.dtype), tuple(jnp.shape(leaf)))
            sharding = _sharding_key(leaf)
            known = shardings.setdefault(base, [])
            if sharding not in known:
                known.append(sharding)
            keys.setdefault((*base, known.index(sharding)), []).append(i)
        self.groups: dict[str, tuple[int, ...]] = {}
        for (dtype, shape, s_index), members in keys.items():
            several = len(shardings[(dtype, shape)]) > 1
            self.groups[_group_name(dtype, shape, s_index if several else None)] = tuple(members)
        self._shapes = {name: tuple(jnp.shape(leaves[m[0]])) for name, m in self.groups.items()}
        self._dtypes = {name: jnp.dtype(leaves[m[0]].dtype) for name, m in self.groups.items()}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}: {len(m)}" for name, m in self.groups.items())
        return f"GroupedLayout({self.num_leaves} leaves in {len(self.groups)} stacks: {sizes})"

    def _leaves(self, tree: Any, what: str) -> list:
        leaves = jax.tree.leaves(tree, is_leaf=is_none)
        treedef = jax.tree.structure(tree, is_leaf=is_none)
        if treedef != self.treedef:
            try:
                leaves = self.treedef.flatten_up_to(tree)
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"{what} do not have the structure this GroupedLayout was built for "
                    f"({self.treedef}): {error}"
                ) from None
        for name, members in self.groups.items():
            for i in members:
                if leaves[i] is not None and tuple(jnp.shape(leaves[i])) != self._shapes[name]:
                    raise ValueError(
                        f"{what} leaf {i} has shape {tuple(jnp.shape(leaves[i]))}, but the layout "
                        f"stacks it in group {name}."
                    )
        return leaves

    def pack(self, tree: Any) -> dict[str, jax.Array]:
        """Stacks a params-shaped tree into `{group name: array of shape (k, *shape)}`."""
        leaves = self._leaves(tree, "packed tree")
        packed = {}
        for name, members in self.groups.items():
            missing = [i for i in members if leaves[i] is None]
            if missing:
                raise ValueError(
                    f"cannot pack a None leaf (leaf {missing[0]}, group {name}); a packed tree "
                    "is dense. Use grouped(tx, layout) for updates with None leaves."
                )
            packed[name] = jnp.stack([jnp.asarray(leaves[i]) for i in members])
        return packed

    def pack_present(self, tree: Any) -> tuple[dict, dict]:
        """Like `pack`, with `None` members replaced by zeros.

        Returns `(packed, present)`: `present[name]` is None when every member has a leaf, a
        NumPy bool vector (static) otherwise. A group whose members are all None still packs
        (to zeros), so that the global parts of the state (schedule counts) advance as in the
        ungrouped chain.
        """
        leaves = self._leaves(tree, "updates")
        packed, present = {}, {}
        for name, members in self.groups.items():
            mask = np.array([leaves[i] is not None for i in members])
            zeros = jnp.zeros(self._shapes[name], self._dtypes[name])
            packed[name] = jnp.stack(
                [jnp.asarray(leaves[i]) if leaves[i] is not None else zeros for i in members]
            )
            present[name] = None if mask.all() else mask
        return packed, present

    def unpack(self, packed: dict[str, Any], present: dict | None = None) -> Any:
        """The params-shaped tree of a packed dict (members not `present` become None)."""
        missing = set(self.groups) - set(packed)
        if missing:
            raise ValueError(f"packed tree lacks groups {sorted(missing)} of this layout.")
        leaves: list = [None] * self.num_leaves
        for name, members in self.groups.items():
            stack = packed[name]
            if stack is None:
                continue
            if jnp.shape(stack)[:1] != (len(members),) or tuple(jnp.shape(stack)[1:]) != self._shapes[name]:
                raise ValueError(
                    f"packed group {name} has shape {jnp.shape(stack)}, expected "
                    f"{(len(members), *self._shapes[name])}."
                )
            mask = None if present is None else present.get(name)
            # lax.split (not indexing): its transpose is one concatenate, so the gradient of a
            # loss of `unpack(packed)` comes out packed at the cost of one copy.
            parts = jax.lax.split(jnp.asarray(stack), [1] * len(members), axis=0)
            for j, i in enumerate(members):
                if mask is None or mask[j]:
                    leaves[i] = parts[j].reshape(self._shapes[name])
        return self.treedef.unflatten(leaves)


class GroupedState(NamedTuple):
    inner: Any  # per stacked leaf (or group name): the inner state, batched over the member axis


def _per_param_leaves(tx: GradientTransformation, dtype) -> list[bool]:
    """For each leaf of `tx`'s state: whether it is per parameter (params-shaped buffers, per-leaf
    step counters) rather than global (scalar counters, hyperparameters).

    Probed on one parameter of shape (2,): per-parameter buffers then have a shape, global
    leaves are scalars, and per-parameter scalars (step counts, ...) are the 0-d children of a
    `LeafScalars` node. A skipped member keeps its per-parameter state and takes the global
    state's new value, as in the ungrouped chain (where a scheduler's count advances for every
    param).
    """
    probe = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((2,), dtype))
    out = []
    for node in jax.tree.leaves(probe, is_leaf=is_leaf_scalars):
        if isinstance(node, LeafScalars):
            out.extend([True] * len(jax.tree.leaves(node)))
        else:
            out.append(len(node.shape) > 0)
    return out


def _select_members(mask: np.ndarray, per_param: list[bool], new: Any, old: Any) -> Any:
    """Per member: `new` where `mask`, else `old`, for per-parameter state leaves (member axis first)."""
    new_leaves, treedef = jax.tree.flatten(new)
    old_leaves = treedef.flatten_up_to(old)
    out = []
    for n, o, keep in zip(new_leaves, old_leaves, per_param):
        if keep:
            m = jnp.asarray(mask).reshape((-1,) + (1,) * (jnp.ndim(n) - 1))
            n = jnp.where(m, n, o)
        out.append(n)
    return treedef.unflatten(out)


def grouped(tx: GradientTransformation, layout: GroupedLayout | None = None) -> GradientTransformationExtraArgs:
    """Runs the per-parameter optimizer `tx` once per stack of same-shape leaves (`jax.vmap`).

    Without `layout`, `init`/`update` take packed trees (from `GroupedLayout.pack`): every leaf
    is a stack whose leading axis enumerates parameters, and `tx` treats each member as one
    parameter. With `layout`, they take ordinary trees and pack/unpack inside (drop-in; `None`
    update leaves are skipped per member). Either way the results are those of `tx` itself,
    leaf by leaf, with per-member step counts. See the module docstring for when to use which.
    """
    vinit = jax.vmap(tx.init)

    def init(params):
        if layout is not None:
            packed = layout.pack(params)
            return GroupedState({name: vinit(x) for name, x in packed.items()})
        check_params(params)
        return GroupedState(jax.tree.map(vinit, params))

    def run(u, s, p, extra):
        return jax.vmap(lambda u, s, p: tx.update(u, s, p, **extra) if extra else tx.update(u, s, p))(u, s, p)

    def update(updates, state, params=None, **extra_args):
        if not isinstance(tx, GradientTransformationExtraArgs):
            extra_args = {}
        if layout is None:
            leaves, treedef = jax.tree.flatten(updates, is_leaf=is_none)
            states = treedef.flatten_up_to(state.inner)
            plist = [None] * len(leaves) if params is None else treedef.flatten_up_to(params)
            outs_u, outs_s = [], []
            for u, s, p in zip(leaves, states, plist):
                if u is None and p is None:  # no gradient, and no params to shape a zero one
                    outs_u.append(None)
                    outs_s.append(s)
                    continue
                if u is None:  # a stack without gradient: keep its per-parameter state only
                    assert p is not None  # (both None: handled above)
                    _, ns = run(jnp.zeros_like(p), s, p, extra_args)
                    mask = np.zeros(jnp.shape(p)[0], bool)
                    outs_u.append(None)
                    outs_s.append(_select_members(mask, _per_param_leaves(tx, p.dtype), ns, s))
                    continue
                nu, ns = run(u, s, p, extra_args)
                outs_u.append(nu)
                outs_s.append(ns)
            return treedef.unflatten(outs_u), GroupedState(treedef.unflatten(outs_s))
        packed_u, present = layout.pack_present(updates)
        packed_p = None if params is None else layout.pack(params)
        new_u, new_s = {}, {}
        for name in layout.groups:
            u, s = packed_u[name], state.inner[name]
            nu, ns = run(u, s, None if packed_p is None else packed_p[name], extra_args)
            if present[name] is not None:
                per_param = _per_param_leaves(tx, u.dtype)
                ns = _select_members(present[name], per_param, ns, s)
            new_u[name], new_s[name] = nu, ns
        return layout.unpack(new_u, present), GroupedState(new_s)

    return GradientTransformationExtraArgs(init, update)


__all__ = ["GroupedLayout", "GroupedState", "grouped"]
