"""Param groups for the adapter: rules (`with_rules`) and timm's `create_optimizer_v2`.

Both build torch's param groups of `(name, param)` pairs (`optax_like.param_groups`), so the
optimizer's `state_dict()` carries `param_names` and loads into the torch optimizer built from
the same groups (and back). A params pytree is passed as `model=` too: frozen params (in no
group) stay in `optimizer.params` untouched, and the loss receives the whole tree. The groups
list a pytree's params in JAX's leaf order (a dict's: sorted keys), which need not be the
torch model's: a state saved without names (timm's, torch's from bare params) then loads, and
`to_torch_state_dict` exports, only by the model's names (`source=model` / `target=model`),
as for `AdamW(params_dict)`; pairs in the model's order load by position, torch's rule.

`lr_scale` (timm's layer decay): the groups carry it and the optimizer does not read it, as
timm's optimizers do not (timm #2532); `optax_like.optim.lr_scheduler`'s schedulers apply it,
as timm's schedulers do.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping, Optional, Sequence

from optax_like import param_groups as _pg
from optax_like.core.tree import is_named_pairs
from optax_like.param_groups import _timm as _pg_timm
from optax_like.param_groups import param_groups_layer_decay, param_groups_weight_decay

__all__ = ["create_optimizer_v2", "in_groups", "param_groups_layer_decay", "param_groups_weight_decay", "with_rules"]


_ADAPTER_OPTIONS = ("skip_nonfinite",)  # keywords of every optim class that are not hyperparameters


def _adapter_options(kwargs: dict) -> dict:
    return {k: kwargs.pop(k) for k in _ADAPTER_OPTIONS if k in kwargs}


def _build(cls: type, groups: Sequence, params: Any, kwargs: Mapping[str, Any], options: Mapping[str, Any]):
    model = None if params is None or is_named_pairs(params) else params
    return cls(groups, model=model, **kwargs, **options)


def in_groups(optimizer, tree: Any) -> list[list]:
    """The values of `tree` (named like the params: a dict keyed by names, a pytree, or
    `(name, value)` pairs) arranged as `optimizer.params` is for groups of `(name, param)`
    pairs: one list per group, in its `param_names` order. With routes, each optimizer takes
    its own params' gradients from the whole tree: `opt.backward(in_groups(opt, grads))`."""
    values = dict(_pg.named_leaves(tree))
    out = []
    for g, group in enumerate(optimizer.param_groups):
        names = group.get("param_names")
        if names is None:
            raise ValueError(f"param group {g} has no param_names: build the optimizer from (name, param) pairs.")
        missing = [n for n in names if n not in values]
        if missing:
            raise KeyError(f"param group {g}: {missing[:3]} not in the tree (its names look like {list(values)[:3]}).")
        out.append([values[n] for n in names])
    return out


def with_rules(params: Any, rules: Sequence[_pg.Rule], optimizer: type, *, routes: Optional[Mapping] = None, **kwargs: Any):
    """`optimizer(groups, **kwargs)` with the groups `rules` make (`param_groups.plan`): the
    default group first where it holds the first param, each rule's values and multipliers
    in its group dict. With `routes = {name: (optim class, kwargs)}`: a dict `{'default':
    optimizer, name: optimizer, ...}`, one optimizer per algorithm over its own params (torch's
    idiom: `torch.optim.Muon` and `torch.optim.AdamW` side by side); step each with its own
    params' gradients (`opt.backward(in_groups(opt, grads))`)."""
    options = _adapter_options(kwargs)
    plan = _pg.plan(params, rules, optimizer, routes=routes, **kwargs)
    groups = plan.torch_groups()
    if routes is None:
        return _build(optimizer, groups, params, kwargs, options)
    out = {}
    for key, (cls, cls_kwargs) in plan.optimizers.items():
        if groups[key]:
            out[key] = cls(groups[key], **cls_kwargs, **options)
    return out


def create_optimizer_v2(params: Any, opt: str = "sgd", lr: Optional[float] = None, weight_decay: float = 0.0,
                        momentum: float = 0.9, foreach: Optional[bool] = None, filter_bias_and_bn: bool = True,
                        fallback_list: Collection[str] = (), fallback_no_weight_decay: bool = False,
                        layer_decay: Optional[float] = None, layer_decay_min_scale: float = 0.0,
                        layer_decay_no_opt_scale: Optional[float] = None, param_group_fn: Optional[Callable] = None,
                        no_weight_decay_list: Collection[str] = (), group_matcher: Any = None, classifier: Any = None,
                        **kwargs: Any):
    """timm's `create_optimizer_v2` over optax_like's classes: the same groups (timm 1.0.31's
    `param_groups_weight_decay` / `param_groups_layer_decay`, or `param_group_fn(params)`),
    the same name table (`sgd` is SGD with nesterov=True, `momentum` without, ...; a name
    whose class optax_like lacks is an error listing those it has) and the same constructor
    arguments (timm's defaults, `momentum` where the optimizer takes it, `eps`/`betas`
    dropped where it does not). What timm reads from the model comes in as arguments:
    `no_weight_decay_list` (`model.no_weight_decay()`), `group_matcher`
    (`model.group_matcher(coarse=False)`) and `classifier` (`model.pretrained_cfg['classifier']`,
    used only without a group_matcher). `params`: named params (a pytree, or `(name, param)`
    pairs in the model's order), or torch's param groups (passed through). `skip_nonfinite=`
    reaches the class (the adapter's option). `lookahead_<name>` wraps the optimizer in
    `Lookahead(optimizer)`, as timm does."""
    groups, opt_weight_decay = _pg_timm.timm_groups(
        params, weight_decay=weight_decay, filter_bias_and_bn=filter_bias_and_bn, layer_decay=layer_decay,
        layer_decay_min_scale=layer_decay_min_scale, layer_decay_no_opt_scale=layer_decay_no_opt_scale,
        fallback_list=fallback_list, fallback_no_weight_decay=fallback_no_weight_decay, param_group_fn=param_group_fn,
        no_weight_decay_list=no_weight_decay_list, group_matcher=group_matcher, classifier=classifier)
    options = _adapter_options(kwargs)
    info, args = _pg_timm.timm_arguments(opt, opt_weight_decay, lr, momentum, foreach, kwargs)
    optimizer = _build(info.adapter_class(), groups, None if groups is params else params, args, options)
    if _pg_timm.uses_lookahead(opt):
        from optax_like.optim.wrappers import Lookahead

        optimizer = Lookahead(optimizer)  # timm's defaults: alpha 0.5, k 6
    return optimizer
