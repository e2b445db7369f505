"""Stacked layers (a scan over layers): each slice along the leading axis is one layer.

A model whose blocks are stacked (`params["blocks"]["attn"]["qkv"]` of shape `(L, ...)`, from
`flax.linen.scan`, `nnx.vmap`, `equinox.filter_vmap`) names its layers `blocks.0`, ...,
`blocks.{L-1}` only implicitly. `unstacked_names` spells them out (`blocks.attn.qkv`'s slice `i`
is `blocks.{i}.attn.qkv`, the unstacked model's name), so timm's layer grouping, rules and
plans apply to the slices exactly as to the unstacked model, and `layer_vectors` gives a group
entry (`lr_scale`) of each stacked leaf as a vector along the leading axis.

`stacked_transform(plan, params, stacked)` runs a plan made for the unstacked names on the
stacked params, vectorised: a stacked leaf whose layers share an optimizer is updated by one
program `jax.vmap`-ed over the leading axis, the hyperparameters that differ between its layers
(layer decay's lr) entering as `numerics.PerLayer` values: one host float64 value per layer,
whose host math (`1 - lr * wd`, ...) is done per layer as for a host scalar. The slices'
numbers are the unstacked model's, bit for bit (tests/param_groups/test_stacked.py: every
registry optimizer with `layers_vectorised`); per-tensor reductions (LARS' and AdamP's norms,
Muon's orthogonalisation) stay per layer, as vmap keeps them. The state of such a leaf is its
layers' states stacked along axis 0 (layer `i`'s state at index `i`), except the scalars no
layer changes differently (step counts, shared as in one layer's state: `over_layers`). When some layer of a stacked leaf is in another optimizer's
group than the others, or frozen alone (a rule on `blocks.0.*`), or its optimizer is not a
registry optimizer vectorised bit for bit (`OptimizerInfo.layers_vectorised`: Adagrad and
Adafactor are not), the plan runs on the slices instead (`unstacked(tx)`: a slice and a stack
of the updates per step, one program per layer, state per layer named as the unstacked
model's); the numbers are the same.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Collection, Hashable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core import hyperparams, numerics
from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support
from optax_like.core.tree import is_none
from optax_like.param_groups._rules import FROZEN, Group, Plan, named_leaves, param_name

__all__ = ["layer_vectors", "over_layers", "stacked_transform", "unstacked", "unstacked_names"]


def _stacked_prefix(name: str, stacked: Collection[str]) -> str | None:
    for prefix in stacked:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


def _slice_name(name: str, prefix: str, i: int) -> str:
    return f"{prefix}.{i}{name[len(prefix):]}"


def unstacked_names(params: Any, stacked: Collection[str]) -> list[tuple[str, Any]]:
    """The unstacked model's named params: every leaf under a `stacked` prefix becomes its
    slices along axis 0 (`blocks.attn.w` -> `blocks.0.attn.w`, ...: layer by layer, in the
    leaves' order within a layer), other leaves stay. Leaves may be arrays or shape structs."""
    out: list[tuple[str, Any]] = []
    pending: dict[str, list[tuple[str, Any]]] = {}
    for name, leaf in named_leaves(params):
        prefix = _stacked_prefix(name, stacked)
        if prefix is None:
            out.append((name, leaf))
            continue
        if prefix not in pending:
            pending[prefix] = []
            out.append((prefix, None))  # placeholder: the layers come where the stack first appears
        pending[prefix].append((name, leaf))
    result = []
    for name, leaf in out:
        if leaf is not None or name not in pending:
            result.append((name, leaf))
            continue
        leaves = pending[name]
        sizes: set[tuple[int, ...]] = {tuple(getattr(x, "shape", ()))[:1] for _, x in leaves}
        if len(sizes) != 1 or not next(iter(sizes)):
            raise ValueError(f"the leaves under the stacked prefix {name!r} must share a leading axis, got "
                             f"shapes {[tuple(getattr(x, 'shape', ())) for _, x in leaves]}.")
        (size,) = next(iter(sizes))
        for i in range(size):
            for leaf_name, x in leaves:
                result.append((_slice_name(leaf_name, name, i), jax.ShapeDtypeStruct(tuple(x.shape)[1:], x.dtype)))
    return result


def layer_vectors(groups: Sequence[Mapping], params: Any, stacked: Collection[str], key: str = "lr_scale",
                  default: float = 1.0) -> dict[str, np.ndarray]:
    """`{stacked leaf name: vector}`: each stacked leaf's `key` entry (timm's `lr_scale`) per
    slice along its leading axis, read from `groups` made for the unstacked names (the values
    are those groups' own floats). A slice in no group (frozen) reads 0."""
    of = {}
    for group in groups:
        for name, _ in group["params"]:
            of[name] = group.get(key, default)
    out = {}
    for name, leaf in named_leaves(params):
        prefix = _stacked_prefix(name, stacked)
        if prefix is not None:
            out[name] = np.array([of.get(_slice_name(name, prefix, i), 0.0) for i in range(leaf.shape[0])],
                                 dtype=np.float64)
    return out


def unstacked(inner, stacked: Collection[str]) -> GradientTransformationExtraArgs:
    """`inner` (made for the unstacked names, e.g. `plan_transform` of groups from
    `unstacked_names`) applied to stacked params: `init`/`update` split each stacked leaf into
    its layers, named as in the unstacked model, and stack the updates back."""
    inner_update = with_extra_args_support(inner).update

    def split(tree):
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)
        out, layout = {}, []
        for path, leaf in flat:
            name = param_name(path)
            prefix = _stacked_prefix(name, stacked) if leaf is not None else None
            if prefix is None or leaf is None:  # (prefix is None when leaf is)
                out[name] = leaf
                layout.append((name, None))
            else:
                names = [_slice_name(name, prefix, i) for i in range(leaf.shape[0])]
                out.update(zip(names, (leaf[i] for i in range(leaf.shape[0]))))
                layout.append((name, names))
        return out, (treedef, layout)

    def join(flat, structure):
        treedef, layout = structure
        leaves = [flat[name] if names is None else jnp.stack([flat[n] for n in names]) for name, names in layout]
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def init(params):
        return inner.init(split(params)[0])

    def update(updates, state, params=None, **extra_args):
        flat_updates, structure = split(updates)
        flat_params = None if params is None else split(params)[0]
        new, state = inner_update(flat_updates, state, flat_params, **extra_args)
        return join(new, structure), state

    return GradientTransformationExtraArgs(init, update)


def _dependent(closed: Any, inputs: Sequence[bool]) -> list[bool]:
    """Which outputs of a closed jaxpr depend on the inputs flagged True (conservatively: an
    equation's outputs depend on all its inputs)."""
    from jax.extend import core as jex_core

    jaxpr = closed.jaxpr
    dep = dict(zip(jaxpr.invars, inputs))
    for eqn in jaxpr.eqns:
        d = any(dep.get(v, False) for v in eqn.invars if not isinstance(v, jex_core.Literal))
        for v in eqn.outvars:
            dep[v] = d
    return [not isinstance(v, jex_core.Literal) and dep.get(v, False) for v in jaxpr.outvars]


def _layer_axes(make: Callable[[Any], GradientTransformation], params: Any) -> Any:
    """vmap axes of a layer's state: 0 (per layer) for a leaf that depends on the layer (its
    index, params or gradients), None (shared by the layers, as in one layer's state) for a
    scalar that does not: step counts and what only they determine (NAdam's `mu_product`),
    so the step scalars (bias corrections) are the unstacked program's scalars. Found from the
    jaxprs of `init` and `update` of one layer, to a fixed point."""
    layer = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), params)
    index = jax.ShapeDtypeStruct((), jnp.int32)
    closed, state = jax.make_jaxpr(lambda i, p: make(i).init(p), return_shape=True)(index, layer)
    flat_state, state_def = jax.tree.flatten(state)
    per_layer = _dependent(closed, [True] * len(closed.jaxpr.invars))
    per_layer = [d or x.ndim > 0 for d, x in zip(per_layer, flat_state)]
    n_in = len(jax.tree.leaves(layer))
    closed = jax.make_jaxpr(lambda i, u, s, p: make(i).update(u, s, p))(index, layer, state, layer)
    while True:  # the update's flags for (index, updates, state, params) -> (updates, state)
        out = _dependent(closed, [True] * (1 + n_in) + per_layer + [True] * n_in)[-len(flat_state):]
        widened = [a or b for a, b in zip(per_layer, out)]
        if widened == per_layer:
            return jax.tree.unflatten(state_def, [0 if d else None for d in per_layer])
        per_layer = widened


def over_layers(make: Callable[[Any], GradientTransformation], size: int) -> GradientTransformationExtraArgs:
    """`make(index)`, an optimizer built for layer `index` (a traced int inside `jax.vmap`;
    hyperparameters that differ between layers read it: `numerics.PerLayer`), applied to each
    slice along the leading axis of every leaf (all of length `size`) by one vectorised program.
    The state holds the layers' states stacked along axis 0, except the scalars that do not
    depend on the layer (step counts), which stay shared as in one layer's state
    (`_layer_axes`)."""
    layers = jnp.arange(size, dtype=jnp.int32)
    axes_of = functools.lru_cache(maxsize=8)(
        lambda structure: _layer_axes(make, jax.tree.unflatten(structure[0], list(structure[1]))))

    def axes(params):
        flat, treedef = jax.tree.flatten(params)
        return axes_of((treedef, tuple(jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in flat)))

    def init(params):
        return jax.vmap(lambda i, p: make(i).init(p), out_axes=axes(params))(layers, params)

    def update(updates, state, params=None, **extra_args):
        state_axes = axes(updates if params is None else params)

        def one(i, u, s, p):
            return with_extra_args_support(make(i)).update(u, s, p, **extra_args)

        if params is None:
            return jax.vmap(lambda i, u, s: one(i, u, s, None), in_axes=(0, 0, state_axes),
                            out_axes=(0, state_axes))(layers, updates, state)
        return jax.vmap(one, in_axes=(0, 0, state_axes, 0), out_axes=(0, state_axes))(layers, updates, state, params)

    return GradientTransformationExtraArgs(init, update)


def _same(values: Sequence) -> bool:
    first = values[0]
    for v in values[1:]:
        if v is first:
            continue
        if callable(v) or callable(first):
            return False
        try:
            if type(v) is not type(first) or not bool(np.all(v == first)):
                return False
        except (TypeError, ValueError):
            return False
    return True


def _per_layer_spec(values: Sequence) -> Any:
    """How a hyperparameter's per-layer values enter the vectorised step: `("same", v)`,
    `("host", floats)` (a `PerLayer`), `("tuple", specs)`, or None (not vectorisable)."""
    if _same(values):
        return ("same", values[0])
    if all(hyperparams.is_number(v) and not isinstance(v, bool) for v in values):
        return ("host", tuple(float(v) for v in values))
    if all(isinstance(v, tuple) for v in values) and len({len(v) for v in values}) == 1:
        parts = tuple(_per_layer_spec([v[k] for v in values]) for k in range(len(values[0])))
        return None if any(p is None for p in parts) else ("tuple", parts)
    return None


def _lr_spec(groups: Sequence[Group]) -> Any:
    """The groups' effective lr (`lr * lr_scale`, see `Group.effective`) per layer."""
    bases = [g.hyperparameters["lr"] for g in groups]
    scales = tuple(g.lr_scale for g in groups)
    if callable(bases[0]) and all(b is bases[0] for b in bases):
        return ("same", bases[0]) if all(s == 1.0 for s in scales) else ("schedule", bases[0], scales)
    return _per_layer_spec([g.effective("lr") for g in groups])


def _value(spec: Any, index: Any) -> Any:
    kind = spec[0]
    if kind == "same":
        return spec[1]
    if kind == "host":
        return numerics.PerLayer(spec[1], index)
    if kind == "tuple":
        return tuple(_value(part, index) for part in spec[1])
    _, schedule, scales = spec

    def scaled(count):  # `Group.effective`'s `schedule(count) * lr_scale` for this layer
        value = schedule(count)
        return value * numerics.pick_layer(scales, index, jnp.result_type(value))

    return scaled


def _host_value(spec: Any, i: int) -> Any:
    """Layer `i`'s value as the unstacked model's group has it (a host number; the base
    schedule for a scaled one): what the factory checks."""
    kind = spec[0]
    if kind == "host":
        return spec[1][i]
    if kind == "tuple":
        return tuple(_host_value(part, i) for part in spec[1])
    return spec[1]


def _vectorises(factory: Callable) -> bool:
    """Whether `factory` is a registry optimizer whose vmapped step is its slices' bit for bit
    (`OptimizerInfo.layers_vectorised`); other factories run on the slices."""
    from optax_like import registry

    return any(info.factory is factory and info.layers_vectorised for info in registry.OPTIMIZERS.values())


def _layer_stack(p: Plan, groups: Sequence[Optional[Group]]):
    """`(factory, {hyperparameter: spec})` for a stacked leaf whose layers are in `groups`
    (None: frozen), or None when its layers do not share one optimizer (or are frozen only in
    part)."""
    from optax_like.param_groups._build import _factory

    if any(g is None for g in groups):
        return "frozen" if all(g is None for g in groups) else None
    groups = [g for g in groups if g is not None]  # (all of them)
    if len({g.optimizer for g in groups}) != 1 or len({tuple(sorted(g.hyperparameters)) for g in groups}) != 1:
        return None
    factory = _factory(p.optimizers[groups[0].optimizer][0])
    if not _vectorises(factory):
        return None
    specs = {}
    for key in groups[0].hyperparameters:
        spec = _lr_spec(groups) if key == "lr" else _per_layer_spec([g.hyperparameters[key] for g in groups])
        if spec is None:
            return None
        specs[key] = spec
    return factory, specs


def _hashable(x: Any) -> Any:
    try:
        hash(x)
        return x
    except TypeError:
        return object()  # unique: not merged with another leaf


def stacked_transform(p: Plan, params: Any, stacked: Collection[str]) -> GradientTransformationExtraArgs:
    """The optimizer of `p`, a plan made for the unstacked names of `params`
    (`unstacked_names(params, stacked)`), on the stacked params: each stacked leaf vectorised
    over its layers (`over_layers`) with the layers' own hyperparameters, the other leaves as
    `plan_transform` has them; `unstacked(plan_transform(p), stacked)` where some stacked leaf's
    layers do not share an optimizer (see the module docstring). The state is made for
    `params`' structure."""
    from optax_like.param_groups._build import cross_group_transform, freeze, group_transform, plan_transform
    from optax_like.transforms.combine import multi_transform

    if cross_group_transform(p) is not None:  # timm Lamb's clip over all its groups: per-param norms
        return unstacked(plan_transform(p), stacked)

    group_of = {name: group for group in p.groups for name in group.names}
    transforms: dict[Hashable, Any] = {}
    label_of: dict[str, str] = {}
    merged: dict[Any, str] = {}
    for name, leaf in named_leaves(params):
        prefix = _stacked_prefix(name, stacked)
        if prefix is None:
            group = group_of.get(name)
            label = FROZEN if group is None else group.label
            if label not in transforms:
                transforms[label] = freeze() if group is None else group_transform(p, group)
            label_of[name] = label
            continue
        size = leaf.shape[0]
        stack = _layer_stack(p, [group_of.get(_slice_name(name, prefix, i)) for i in range(size)])
        if stack is None:
            return unstacked(plan_transform(p), stacked)
        if stack == "frozen":
            transforms.setdefault(FROZEN, freeze())
            label_of[name] = FROZEN
            continue
        factory, specs = stack
        key = (factory, size, tuple((k, _hashable(v)) for k, v in specs.items()))
        if key not in merged:
            merged[key] = label = f"layers of {name}"
            for i in range(size):  # the factory's own checks, on each layer's values, before any step
                factory(**{k: _host_value(v, i) for k, v in specs.items()})
            transforms[label] = over_layers(
                lambda index, _f=factory, _s=specs: _f(**{k: _value(v, index) for k, v in _s.items()}), size)
        label_of[name] = merged[key]

    def labels(tree):
        def label(path, _):
            name = param_name(path)
            if name not in label_of:
                raise ValueError(f"param {name!r} is not in the stacked params the optimizer was made for "
                                 f"({list(label_of)[:3]}...).")
            return label_of[name]

        return jax.tree_util.tree_map_with_path(label, tree)

    return multi_transform(transforms, labels)
