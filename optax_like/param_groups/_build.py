"""Plans -> the functional core: one `multi_transform` over the plan's groups.

The plan is made from the params' names, shapes and dtypes, which are static: it is computed
while tracing (once per params structure, cached), and the jitted step is exactly the
`multi_transform` one would write by hand with the same labels (benchmarks/param_groups.py).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Collection, Hashable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from optax_like.core.base import GradientTransformation, GradientTransformationExtraArgs
from optax_like.core.tree import is_none
from optax_like.param_groups._rules import FROZEN, Group, Plan, Rule, make_plan, param_name
from optax_like.transforms.combine import chain, multi_transform

__all__ = ["cross_group_transform", "dry_run", "freeze", "partition", "plan", "plan_transform"]


def _factory(optimizer: Any) -> Callable:
    if isinstance(optimizer, str):
        from optax_like import registry

        if optimizer not in registry.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; available: {sorted(registry.OPTIMIZERS)}.")
        return registry.OPTIMIZERS[optimizer].factory
    if isinstance(optimizer, type):
        raise TypeError(f"{optimizer.__name__} is an optim class; the functional view takes a factory "
                        f"(optax_like.{optimizer.__name__.lower()}) or a registry name.")
    return optimizer


def _resolve(optimizer: Any, routes: Optional[Mapping]) -> tuple[Callable, Optional[dict]]:
    resolved = None
    if routes is not None:
        resolved = {}
        for key, spec in routes.items():
            if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
                resolved[key] = (_factory(spec[0]), dict(spec[1]))
            else:
                resolved[key] = (_factory(spec), {})
    return _factory(optimizer), resolved


def freeze() -> GradientTransformation:
    """Frozen params: a zero update and no state."""

    def init(params):
        del params
        return ()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init, update)


def plan(params: Any, rules: Sequence[Rule], optimizer: Any, *, routes: Optional[Mapping] = None,
         **hyperparameters: Any) -> Plan:
    """The groups `rules` make for `params` (first match wins; unmatched params form the default
    group). `optimizer` is the default optimizer (a functional factory, a registry name, or an
    `optim` class) and `hyperparameters` its configuration; `routes = {name: optimizer or
    (optimizer, kwargs)}` are the optimizers rules may route to. Raises, naming the rule, for a
    rule that matches no param or is malformed; warns (`FallThroughWarning`) for params under a
    rule's literal prefix that no rule matched. Groups come in the order of their first param,
    each group's params in the params' order (the order torch's param_groups get)."""
    if not isinstance(optimizer, type):
        optimizer, routes = _resolve(optimizer, routes)
    return make_plan(params, rules, optimizer, routes=routes, hyperparameters=hyperparameters)


def dry_run(params: Any, rules: Sequence[Rule], optimizer: Any, *, routes: Optional[Mapping] = None,
            print_table: bool = True, **hyperparameters: Any) -> list[dict]:
    """What the rules do to `params`, without building anything: one row per param (`param`,
    `shape`, `group`, `optimizer`, `lr` it trains with, `weight_decay`), printed as a Markdown
    table. The same errors and warnings as building the optimizer. `params` may hold
    `jax.ShapeDtypeStruct`s (`jax.eval_shape(model.init, ...)`)."""
    p = plan(params, rules, optimizer, routes=routes, **hyperparameters)
    if print_table:
        print(p.table())
    return p.rows()


def _adapter_option(factory: Callable, option: str) -> Any:
    """The registry record's adapter `option` for `factory`, or for the factory it wraps
    (`functools.wraps`: timm's `lookahead_<name>`); {} for others."""
    from optax_like import registry

    inner = inspect.unwrap(factory)
    for info in registry.OPTIMIZERS.values():
        if info.factory is factory or info.factory is inner:
            return info.adapter.get(option, {})
    return {}


def _cross_group(factory: Callable) -> Mapping[str, Callable]:
    return _adapter_option(factory, "cross_group")


def group_transform(p: Plan, group: Group) -> GradientTransformation:
    """One group's optimizer: its optimizer's factory with the group's hyperparameters (lr
    times `lr_scale`); an argument the optimizer applies over all its groups at once
    (`cross_group`, timm Lamb's `max_grad_norm`) is None here (`cross_group_transform`); the
    registry record's `group_index` argument (timm Kron's per-group draws) is the group's
    position among its optimizer's groups (its position in that optimizer's torch param_groups,
    `Plan.torch_groups`), as the adapter class passes it."""
    factory, _ = p.optimizers[group.optimizer]
    factory = _factory(factory)
    kwargs = dict(group.hyperparameters)
    if "lr" in kwargs:
        kwargs["lr"] = group.effective("lr")
    kwargs.update(dict.fromkeys(k for k in _cross_group(factory) if k in kwargs))
    index_argument = _adapter_option(factory, "group_index")
    if index_argument:
        labels = [g.label for g in p.groups if g.optimizer == group.optimizer]
        kwargs[index_argument] = labels.index(group.label)
    return factory(**kwargs)


def cross_group_transform(p: Plan) -> Optional[GradientTransformation]:
    """What an optimizer of the plan applies to the gradients of all its groups at once, before
    their updates (the registry record's `cross_group`: timm Lamb's one gradient clip over every
    param group, with the optimizer's own `max_grad_norm`, not a group's), in torch's order of the
    groups and their params; None when no optimizer of the plan has one. Stateless."""
    applied = []  # (names in torch's order, [(fn, value), ...]) per optimizer of the plan
    for key, (optimizer, kwargs) in p.optimizers.items():
        factory = _factory(optimizer)
        functions = _cross_group(factory)
        names = [name for group in p.groups if group.optimizer == key for name in group.names]
        if functions and names:
            defaults = {k: q.default for k, q in inspect.signature(factory).parameters.items()}
            values = [(fn, kwargs.get(arg, defaults.get(arg))) for arg, fn in functions.items()]
            if any(value is not None for _, value in values):  # None: not applied (timm: no clip)
                applied.append((names, values))
    if not applied:
        return None

    def init(params):
        del params
        return ()

    def update(updates, state, params=None):
        del params
        leaves, treedef = jax.tree_util.tree_flatten_with_path(updates, is_leaf=is_none)
        position = {param_name(path): i for i, (path, _) in enumerate(leaves)}
        new = [leaf for _, leaf in leaves]
        for names, functions in applied:
            indices = [position[name] for name in names if name in position]
            grads = [new[i] for i in indices]
            for fn, value in functions:
                grads = fn(grads, value)
            for i, g in zip(indices, grads):
                new[i] = g
        return treedef.unflatten(new), state

    return GradientTransformation(init, update)


def _with_cross_group(p: Plan, tx: GradientTransformationExtraArgs) -> GradientTransformationExtraArgs:
    clip = cross_group_transform(p)
    return tx if clip is None else chain(clip, tx)


def plan_transform(p: Plan) -> GradientTransformationExtraArgs:
    """The plan's optimizer: `multi_transform` with one transformation per group (the group's
    optimizer with its hyperparameters; lr times `lr_scale`) and `freeze()` for frozen params.
    Params are matched to groups by name (key path), so `init`/`update` take any pytree whose
    names are the plan's."""
    transforms: dict[Hashable, GradientTransformation] = {group.label: group_transform(p, group) for group in p.groups}
    if p.frozen:
        transforms[FROZEN] = freeze()
    label_of = p.label_of()

    def labels(tree):
        def label(path, _):
            name = param_name(path)
            if name not in label_of:
                raise ValueError(f"param {name!r} is not in the plan's groups (the plan was made for "
                                 f"{list(label_of)[:3]}...).")
            return label_of[name]

        return jax.tree_util.tree_map_with_path(label, tree, is_leaf=lambda x: x is None and False)

    return _with_cross_group(p, multi_transform(transforms, labels))


def partition(rules: Sequence[Rule], optimizer: Any, *, routes: Optional[Mapping] = None,
              stacked: Collection[str] = (), **hyperparameters: Any) -> GradientTransformationExtraArgs:
    """The functional optimizer of `rules`: `optimizer(**hyperparameters)` for the default
    group, with each rule's values and multipliers for its params, `routes[name]` for params
    routed to `name`, and no update or state for frozen params.

        tx = param_groups.partition(
            [Rule(ndim=(0, 1), set={"weight_decay": 0.0}), Rule("head.*", scale={"lr": 10.0})],
            optax_like.adamw, lr=1e-3, weight_decay=0.05)

    The groups are made from the params' names and shapes when `init` (and, while tracing,
    `update`) sees them; the same errors and warnings as `plan`. The step is the
    `multi_transform` of `plan_transform(plan(params, ...))`.

    `stacked`: prefixes of stacked layers (a scan over layers: `blocks.attn.w` of shape
    `(L, ...)` holds `blocks.0.attn.w`, ...): the rules see the unstacked model's names and
    shapes, and the step is `stacked_transform`'s (each stacked leaf vectorised over its
    layers, with the unstacked model's numbers bit for bit).
    """
    factory, resolved = _resolve(optimizer, routes)
    # every check that needs no params runs now, before any step
    from optax_like.param_groups._rules import _check_rules, _optimizer_table, as_rules

    rules = as_rules(rules)
    _check_rules(rules, _optimizer_table(factory, hyperparameters, resolved))

    @functools.lru_cache(maxsize=16)
    def built(signature) -> GradientTransformationExtraArgs:
        specs, warn = signature
        if stacked:
            from optax_like.param_groups._stacked import stacked_transform, unstacked_names

            p = make_plan(unstacked_names(list(specs), stacked), rules, factory, routes=resolved,
                          hyperparameters=hyperparameters, warn=warn)
            return stacked_transform(p, list(specs), stacked)
        return plan_transform(make_plan(list(specs), rules, factory, routes=resolved,
                                        hyperparameters=hyperparameters, warn=warn))

    def tx_for(tree, warn):
        flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]
        specs = tuple((param_name(path), jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)))
                      for path, x in flat if x is not None)
        return built((specs, warn))

    def init(params):
        return tx_for(params, True).init(params)

    def update(updates, state, params=None, **extra_args):
        return tx_for(updates if params is None else params, False).update(updates, state, params, **extra_args)

    return GradientTransformationExtraArgs(init, update)
