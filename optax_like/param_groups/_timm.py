"""timm's and Hugging Face's param grouping, on names and shapes (no torch, no timm at run time).

The functions take what timm reads from a model as arguments: the named params (a list of
`(name, param)` pairs in the model's order, as `model.named_parameters()` gives them, or a
pytree named by key paths), `no_weight_decay_list` (what `model.no_weight_decay()` returns),
`group_matcher` (what `model.group_matcher(coarse=False)` returns) and `classifier` (the
model's `pretrained_cfg['classifier']`, for timm's automatic layer grouping). They return
torch's param groups as timm 1.0.31 builds them: the same groups in the same order, each
`{'params': [(name, param), ...], 'weight_decay': ..., ['lr_scale': ...], ['use_fallback': True]}`
(pairs: torch keeps the names as the group's `param_names`). tests/param_groups/test_timm.py
checks them against timm's own functions on five timm models.

A pytree's params are listed in JAX's leaf order (a dict's: sorted keys), not the model's
registration order, which timm's groups follow. The arrays listed from such a tree are
remembered so (`named_leaves(..., listed_by=...)`, as `optim.named_parameters` does), and an
`optim` optimizer built from these groups loads or exports a state saved without names (timm's)
only by the model's names (`source=model` / `target=model`), never by position.
`param_groups_layer_decay` orders its groups by their first params in that listing too (timm's:
in `model.named_parameters()`), and remembers it (`core.leaf_order.remember_grouped`): with the
model's names, interop.torch puts the groups in timm's order; without them, a state saved
without names is refused even for groups of one param each.
"""

from __future__ import annotations

import collections.abc
import fnmatch
import functools
import logging
import re
from collections import defaultdict
from itertools import chain, islice
from typing import Any, Callable, Collection, Mapping, Optional, Sequence, Union, cast

from optax_like.core.leaf_order import order_issue, remember_grouped
from optax_like.param_groups._rules import DEFAULT, Group, Plan, named_leaves, _configuration

__all__ = [
    "TIMM_OPTIMIZERS", "auto_group_layers", "create_optimizer", "group_with_matcher", "hf_param_groups",
    "param_groups_layer_decay", "param_groups_weight_decay", "plan_from_groups", "timm_optimizer",
]

_logger = logging.getLogger(__name__)

MATCH_PREV_GROUP = (99999,)


def _matches_pattern(name: str, patterns: Collection[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _ndim(leaf: Any) -> int:
    return len(getattr(leaf, "shape", ()))


def param_groups_weight_decay(params: Any, weight_decay: Optional[float] = 1e-5, weight_decay_exclude_1d: bool = True,
                              no_weight_decay_list: Collection[str] = (), fallback_list: Collection[str] = (),
                              fallback_no_weight_decay: bool = False) -> list[dict]:
    """timm's `param_groups_weight_decay`: no decay for params of ndim <= 1, names ending in
    `.bias` (with `weight_decay_exclude_1d`) and names matching `no_weight_decay_list` (globs);
    `fallback_list` globs mark groups `use_fallback` (timm's Muon trains them with AdamW).
    Groups, in timm's order: no_decay, decay, no_decay fallback, decay fallback (empty ones
    dropped)."""
    if fallback_no_weight_decay:
        fallback_list = set(fallback_list) | set(no_weight_decay_list)
    no_wd = not weight_decay
    buckets: dict[tuple[bool, bool], list] = {(d, f): [] for d in (False, True) for f in (False, True)}
    for name, param in named_leaves(params, listed_by="param_groups_weight_decay"):
        is_fallback = _matches_pattern(name, fallback_list)
        if no_wd:
            decay = False
        else:
            excluded_1d = weight_decay_exclude_1d and (_ndim(param) <= 1 or name.endswith(".bias"))
            decay = not (excluded_1d or _matches_pattern(name, no_weight_decay_list))
        buckets[(decay, is_fallback)].append((name, param))
    groups = []
    for (decay, fallback) in ((False, False), (True, False), (False, True), (True, True)):
        members = buckets[(decay, fallback)]
        if members:
            group = {"params": members, "weight_decay": weight_decay if decay else 0.0}
            if fallback:
                group["use_fallback"] = True
            groups.append(group)
    return groups


def group_with_matcher(names: Sequence[str], group_matcher: Union[Mapping, Callable], reverse: bool = False):
    """timm's `group_with_matcher` over param names: `{layer_id: [names]}`, or with `reverse`
    `{name: layer_id}`. `group_matcher` is a model's `group_matcher(coarse=False)`: a dict of
    regexes (or `[(regex, suffix), ...]`) per group, in order, or a callable name -> ordinal."""
    matcher: Union[list, Callable]
    if isinstance(group_matcher, Mapping):
        compiled = []
        for group_ordinal, (_, mspec) in enumerate(group_matcher.items()):
            if mspec is None:
                continue
            if isinstance(mspec, (tuple, list)):
                for sspec in mspec:
                    compiled += [(re.compile(sspec[0]), (group_ordinal,), sspec[1])]
            else:
                compiled += [(re.compile(mspec), (group_ordinal,), None)]
        matcher = compiled
    else:
        matcher = group_matcher

    def _get_grouping(name):
        if isinstance(matcher, (list, tuple)):
            for match_fn, prefix, suffix in matcher:
                r = match_fn.match(name)
                if r:
                    parts = (prefix, r.groups(), suffix)
                    return tuple(map(float, chain.from_iterable(filter(None, parts))))
            return (float("inf"),)
        ordinal = matcher(name)
        if not isinstance(ordinal, collections.abc.Iterable):
            return (ordinal,)
        return tuple(ordinal)

    grouping = defaultdict(list)
    for name in names:
        grouping[_get_grouping(name)].append(name)
    layer_id_to_param = defaultdict(list)
    lid = -1
    for k in sorted(filter(lambda x: x is not None, grouping.keys())):
        if lid < 0 or k[-1] != MATCH_PREV_GROUP[0]:
            lid += 1
        layer_id_to_param[lid].extend(grouping[k])
    if reverse:
        return {n: lid for lid, lm in layer_id_to_param.items() for n in lm}
    return layer_id_to_param


def auto_group_layers(names: Sequence[str], layers_per_group: int = 12, num_groups: Optional[int] = None,
                      classifier: Union[None, str, Sequence[str]] = None) -> dict[str, int]:
    """timm's `auto_group_layers` (for models without a `group_matcher`): params in model order
    are cut into layers of `layers_per_group`; names starting with `classifier` (the model's
    `pretrained_cfg['classifier']`) form the last layer. Without `classifier`, every param is
    in the head (one layer), as in timm."""

    def _in_head(n, hp):
        if not hp:
            return True
        if isinstance(hp, (tuple, list)):
            return any(n.startswith(h) for h in hp)
        return n.startswith(hp)

    names_trunk, names_head = [], []
    for n in names:
        (names_head if _in_head(n, classifier) else names_trunk).append(n)
    if num_groups is not None:
        layers_per_group = -(len(names_trunk) // -num_groups)
    it = iter(names_trunk)
    trunk = list(iter(lambda: tuple(islice(it, layers_per_group)), ()))
    layer_map = {n: i for i, layer in enumerate(trunk) for n in layer}
    layer_map.update({n: len(trunk) for n in names_head})
    return layer_map


def param_groups_layer_decay(params: Any, weight_decay: float = 0.05, no_weight_decay_list: Collection[str] = (),
                             fallback_list: Collection[str] = (), fallback_no_weight_decay: bool = False,
                             weight_decay_exclude_1d: bool = True, layer_decay: float = 0.75, min_scale: float = 0.0,
                             no_opt_scale: Optional[float] = None, *, group_matcher: Union[None, Mapping, Callable] = None,
                             classifier: Union[None, str, Sequence[str]] = None) -> list[dict]:
    """timm's `param_groups_layer_decay` (BEiT's layer-wise lr decay): layer `i` of `L` gets
    `lr_scale = max(min_scale, layer_decay ** (L - 1 - i))`, layers from `group_matcher`
    (`model.group_matcher(coarse=False)`) or else `auto_group_layers(..., classifier=...)`;
    no decay for ndim <= 1 (with `weight_decay_exclude_1d`; unlike `param_groups_weight_decay`,
    a 2-D `.bias` decays, as in timm) and `no_weight_decay_list`. Params whose scale is below
    `no_opt_scale` are in no group (timm sets `requires_grad = False`: frozen). One group per
    (layer, decay, fallback), in order of first appearance, with `lr_scale` and `weight_decay`.
    """
    if fallback_no_weight_decay:
        fallback_list = set(fallback_list) | set(no_weight_decay_list)
    named = named_leaves(params, listed_by="param_groups_layer_decay")
    names = [n for n, _ in named]
    if group_matcher is not None:
        layer_map = cast("dict[str, int]", group_with_matcher(names, group_matcher, reverse=True))  # {name: layer}
    else:
        layer_map = auto_group_layers(names, classifier=classifier)
    num_layers = max(layer_map.values()) + 1
    if num_layers == 1:
        _logger.warning("Layer-wise lr decay has no effect, all parameters were assigned to one layer. Pass "
                        "group_matcher= (model.group_matcher(coarse=False)) or classifier= for automatic grouping.")
    layer_max = num_layers - 1
    layer_scales = [max(min_scale, layer_decay ** (layer_max - i)) for i in range(num_layers)]
    groups: dict[str, dict] = {}
    for name, param in named:
        is_fallback = _matches_pattern(name, fallback_list)
        if (weight_decay_exclude_1d and _ndim(param) <= 1) or _matches_pattern(name, no_weight_decay_list):
            g_decay, this_decay = "no_decay", 0.0
        else:
            g_decay, this_decay = "decay", weight_decay
        layer_id = layer_map.get(name, layer_max)
        this_scale = layer_scales[layer_id]
        if no_opt_scale and this_scale < no_opt_scale:
            continue
        group_name = "layer_%d_%s%s" % (layer_id, g_decay, "_fallback" if is_fallback else "")
        if group_name not in groups:
            groups[group_name] = {"lr_scale": this_scale, "weight_decay": this_decay, "params": []}
            if is_fallback:
                groups[group_name]["use_fallback"] = True
        groups[group_name]["params"].append((name, param))
    # The groups come in the order their first params appear in `named`: JAX's order for a params
    # tree, while timm's follow the model's registration order. Remembered so that the optimizer
    # built from them matches a timm state's groups to its own by the model's names
    # (interop.torch's source=/target=), not by position.
    remember_grouped([param for group in groups.values() for _, param in group["params"]],
                     "param_groups_layer_decay", order_issue(params, [param for _, param in named]))
    return list(groups.values())


_HF_NO_DECAY = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")


def hf_param_groups(params: Any, weight_decay: float = 0.0, *, layernorm_modules: Collection[str] = (),
                    no_decay_patterns: Sequence[str] = _HF_NO_DECAY) -> list[dict]:
    """Hugging Face Trainer's default groups (`Trainer.get_decay_parameter_names`): no weight
    decay for names whose lower case matches one of `no_decay_patterns` (`re.search`; HF's:
    bias, layernorm, rmsnorm, norm as a name part, `_norm`) and for params of `nn.LayerNorm`
    modules, which HF finds by type: name those modules in `layernorm_modules` (`"ln_f"`,
    `"h.0.ln_1"`: every param under them). Two groups, decay first: `[{'params': decay,
    'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]`."""
    patterns = [re.compile(p) for p in no_decay_patterns]
    modules = tuple(m + "." for m in layernorm_modules)
    decay, no_decay = [], []
    for name, param in named_leaves(params, listed_by="hf_param_groups"):
        excluded = name.startswith(modules) or any(p.search(name.lower()) for p in patterns)
        (no_decay if excluded else decay).append((name, param))
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


_TORCH_GROUP_KEYS = ("params", "param_names")
_MARKERS = ("use_fallback",)  # timm group entries that only timm's Muon reads


def plan_from_groups(groups: Sequence[Mapping], optimizer: Any, *, params: Any = None, routes: Optional[Mapping] = None,
                     route_key: Optional[Callable[[Mapping], Optional[str]]] = None, **hyperparameters: Any) -> Plan:
    """A plan from torch's param groups of `(name, param)` pairs (what the functions above,
    or a hand-written torch grouping, return): each group's entries override `optimizer`'s
    `hyperparameters`; `lr_scale` is kept as timm's entry (see `Plan`); `use_fallback` is
    kept as a marker. `route_key(group)` may name a route for a group (None: the default).
    Params of `params` in no group are frozen."""
    from optax_like.core.hyperparams import as_flag
    from optax_like.param_groups._build import _adapter_option, _resolve

    if not isinstance(optimizer, type):
        optimizer, routes = _resolve(optimizer, routes)
    from optax_like.param_groups._rules import _optimizer_table, hyperparameter_kinds

    optimizers = _optimizer_table(optimizer, hyperparameters, routes)
    out, seen, leaves = [], set(), {}
    for g, group in enumerate(groups):
        pairs = named_leaves(list(group["params"])) if group["params"] else []
        if pairs and len(pairs) != len(group["params"]):
            raise ValueError(f"param group {g}: params must be (name, param) pairs.")
        key = (route_key(group) if route_key else None) or DEFAULT
        if key not in optimizers:
            raise ValueError(f"param group {g} routes to {key!r}, which is not a route ({sorted(optimizers)}).")
        opt, kwargs = optimizers[key]
        kinds = hyperparameter_kinds(opt)
        overrides = {k: v for k, v in group.items() if k not in _TORCH_GROUP_KEYS}
        for k in overrides:
            if k not in kinds and k not in ("lr_scale",) + _MARKERS:
                raise ValueError(f"param group {g} sets {k!r}, which is not a hyperparameter of "
                                 f"{getattr(opt, '__name__', opt)} (its hyperparameters: {sorted(kinds)}).")
        config = _configuration(opt, kwargs)
        flags = _adapter_option(opt, "group_flags")  # timm Muon's use_fallback/use_muon: read as timm's `if`
        config.update({k: (as_flag(v, k) if k in flags else v) for k, v in overrides.items() if k in kinds})
        names = tuple(n for n, _ in pairs)
        for n, p in pairs:
            if n in seen:
                raise ValueError(f"param {n!r} is in more than one group (group {g}).")
            seen.add(n)
            leaves[n] = p
        if names:
            out.append(Group(f"group{g}", names, key, overrides, config))
    frozen = ()
    if params is not None:
        every = named_leaves(params)
        frozen = tuple(n for n, _ in every if n not in seen)
        leaves = {n: leaves.get(n, p) for n, p in every}
    return Plan(tuple(out), frozen, optimizers, leaves)


# timm 1.0.31's optimizer names: name -> (reference class, what it accepts: e = eps, m = momentum,
# b = betas, defaults). tests/param_groups/test_timm.py checks this table against timm's
# `default_registry`. Whether we have a name is read from optax_like.registry by reference
# class, so a record added there makes its timm names available here.
TIMM_OPTIMIZERS: Mapping[str, tuple[str, str, Mapping[str, Any]]] = {
    'adabelief': ('timm.optim.adabelief.AdaBelief', 'eb', {'rectify': False}),
    'adadelta': ('torch.optim.Adadelta', 'e', {}),
    'adafactor': ('timm.optim.adafactor.Adafactor', 'eb', {}),
    'adafactorbv': ('timm.optim.adafactor_bv.AdafactorBigVision', 'em', {}),
    'adafactorbvc': ('timm.optim.adafactor_bv.AdafactorBigVision', 'em', {'corrected_weight_decay': True}),
    'adagrad': ('torch.optim.Adagrad', 'e', {'eps': 1e-08}),
    'adahessian': ('timm.optim.adahessian.Adahessian', 'eb', {}),
    'adam': ('torch.optim.Adam', 'eb', {}),
    'adamax': ('torch.optim.Adamax', 'eb', {}),
    'adamc': ('timm.optim.adamw.AdamWLegacy', 'eb', {'corrected_weight_decay': True}),
    'adamp': ('timm.optim.adamp.AdamP', 'eb', {'wd_ratio': 0.01, 'nesterov': True}),
    'adamuon': ('timm.optim.muon.Muon', 'emb', {'algo': 'adamuon'}),
    'adamw': ('torch.optim.AdamW', 'eb', {}),
    'adamwlegacy': ('timm.optim.adamw.AdamWLegacy', 'eb', {}),
    'adan': ('timm.optim.adan.Adan', 'eb', {'no_prox': False}),
    'adanw': ('timm.optim.adan.Adan', 'eb', {'no_prox': True}),
    'adopt': ('timm.optim.adopt.Adopt', 'eb', {}),
    'adoptc': ('timm.optim.adopt.Adopt', 'eb', {'decoupled': True, 'corrected_weight_decay': True}),
    'adoptw': ('timm.optim.adopt.Adopt', 'eb', {'decoupled': True}),
    'bnbadam': ('bitsandbytes.optim.Adam', 'eb', {}),
    'bnbadam8bit': ('bitsandbytes.optim.Adam8bit', 'eb', {}),
    'bnbadamw': ('bitsandbytes.optim.AdamW', 'eb', {}),
    'bnbadamw8bit': ('bitsandbytes.optim.AdamW8bit', 'eb', {}),
    'bnbademamix': ('bitsandbytes.optim.AdEMAMix', 'eb', {}),
    'bnbademamix8bit': ('bitsandbytes.optim.AdEMAMix8bit', 'eb', {}),
    'bnblion': ('bitsandbytes.optim.Lion', 'b', {}),
    'bnblion8bit': ('bitsandbytes.optim.Lion8bit', 'b', {}),
    'bnbsgd': ('bitsandbytes.optim.SGD', 'm', {'nesterov': True}),
    'bnbsgd8bit': ('bitsandbytes.optim.SGD8bit', 'm', {'nesterov': True}),
    'cadafactor': ('timm.optim.adafactor.Adafactor', 'eb', {'caution': True, 'betas': (0.9, 0.999)}),
    'cadafactorbv': ('timm.optim.adafactor_bv.AdafactorBigVision', 'em', {'caution': True}),
    'cadafactorbvc': ('timm.optim.adafactor_bv.AdafactorBigVision', 'em', {'caution': True, 'corrected_weight_decay': True}),
    'cadamc': ('timm.optim.adamw.AdamWLegacy', 'eb', {'caution': True, 'corrected_weight_decay': True}),
    'cadamp': ('timm.optim.adamp.AdamP', 'eb', {'wd_ratio': 0.01, 'nesterov': True, 'caution': True}),
    'cadamw': ('timm.optim.adamw.AdamWLegacy', 'eb', {'caution': True}),
    'cadan': ('timm.optim.adan.Adan', 'eb', {'caution': True, 'no_prox': False}),
    'cadanw': ('timm.optim.adan.Adan', 'eb', {'caution': True, 'no_prox': True}),
    'cadopt': ('timm.optim.adopt.Adopt', 'eb', {'caution': True}),
    'cadoptc': ('timm.optim.adopt.Adopt', 'eb', {'decoupled': True, 'caution': True, 'corrected_weight_decay': True}),
    'cadoptw': ('timm.optim.adopt.Adopt', 'eb', {'decoupled': True, 'caution': True}),
    'clamb': ('timm.optim.lamb.Lamb', 'eb', {'caution': True}),
    'clambw': ('timm.optim.lamb.Lamb', 'eb', {'caution': True, 'decoupled_decay': True}),
    'claprop': ('timm.optim.laprop.LaProp', 'eb', {'caution': True}),
    'clion': ('timm.optim.lion.Lion', 'b', {'caution': True}),
    'clionc': ('timm.optim.lion.Lion', 'b', {'caution': True, 'corrected_weight_decay': True}),
    'cmars': ('timm.optim.mars.Mars', 'eb', {'caution': True}),
    'cnadamc': ('timm.optim.nadamw.NAdamW', 'eb', {'caution': True, 'corrected_weight_decay': True}),
    'cnadamw': ('timm.optim.nadamw.NAdamW', 'eb', {'caution': True}),
    'crmsproptf': ('timm.optim.rmsprop_tf.RMSpropTF', 'em', {'alpha': 0.9, 'caution': True}),
    'csgdc': ('timm.optim.sgdw.SGDW', 'm', {'nesterov': True, 'caution': True, 'corrected_weight_decay': True}),
    'csgdp': ('timm.optim.sgdp.SGDP', 'em', {'nesterov': True, 'caution': True}),
    'csgdw': ('timm.optim.sgdw.SGDW', 'm', {'nesterov': True, 'caution': True}),
    'fusedadam': ('apex.optimizers.FusedAdam', 'eb', {'adam_w_mode': False}),
    'fusedadamw': ('apex.optimizers.FusedAdam', 'eb', {'adam_w_mode': True}),
    'fusedlamb': ('apex.optimizers.FusedLAMB', 'eb', {}),
    'fusednovograd': ('apex.optimizers.FusedNovoGrad', 'eb', {'betas': (0.95, 0.98)}),
    'fusedsgd': ('apex.optimizers.FusedSGD', 'm', {'nesterov': True}),
    'kron': ('timm.optim.kron.Kron', 'm', {}),
    'kronc': ('timm.optim.kron.Kron', 'm', {'decoupled_decay': True, 'corrected_weight_decay': True}),
    'kronw': ('timm.optim.kron.Kron', 'm', {'decoupled_decay': True}),
    'lamb': ('timm.optim.lamb.Lamb', 'eb', {}),
    'lambc': ('timm.optim.lamb.Lamb', 'eb', {'trust_clip': True}),
    'lambcd': ('timm.optim.lamb.Lamb', 'eb', {'decoupled_decay': True, 'corrected_weight_decay': True}),
    'lambcw': ('timm.optim.lamb.Lamb', 'eb', {'trust_clip': True, 'decoupled_decay': True}),
    'lambw': ('timm.optim.lamb.Lamb', 'eb', {'decoupled_decay': True}),
    'laprop': ('timm.optim.laprop.LaProp', 'eb', {}),
    'lapropc': ('timm.optim.laprop.LaProp', 'eb', {'corrected_weight_decay': True}),
    'larc': ('timm.optim.lars.Lars', 'em', {'trust_clip': True}),
    'lars': ('timm.optim.lars.Lars', 'em', {}),
    'lion': ('timm.optim.lion.Lion', 'b', {}),
    'lionc': ('timm.optim.lion.Lion', 'b', {'corrected_weight_decay': True}),
    'madgrad': ('timm.optim.madgrad.MADGRAD', 'em', {}),
    'madgradw': ('timm.optim.madgrad.MADGRAD', 'em', {'decoupled_decay': True}),
    'mars': ('timm.optim.mars.Mars', 'eb', {}),
    'momentum': ('torch.optim.SGD', 'm', {'nesterov': False}),
    'muon': ('timm.optim.muon.Muon', 'emb', {}),
    'nadam': ('torch.optim.NAdam', 'eb', {}),
    'nadamc': ('timm.optim.nadamw.NAdamW', 'eb', {'corrected_weight_decay': True}),
    'nadamlegacy': ('timm.optim.nadam.NAdamLegacy', 'eb', {}),
    'nadamuon': ('timm.optim.muon.Muon', 'emb', {'algo': 'adamuon', 'nesterov': True}),
    'nadamw': ('timm.optim.nadamw.NAdamW', 'eb', {}),
    'nesterov': ('torch.optim.SGD', 'm', {'nesterov': True}),
    'nesterovw': ('timm.optim.sgdw.SGDW', 'm', {'nesterov': True}),
    'nlarc': ('timm.optim.lars.Lars', 'em', {'nesterov': True, 'trust_clip': True}),
    'nlars': ('timm.optim.lars.Lars', 'em', {'nesterov': True}),
    'nmuon': ('timm.optim.muon.Muon', 'emb', {'nesterov': True}),
    'novograd': ('timm.optim.nvnovograd.NvNovoGrad', 'eb', {}),
    'novogradc': ('timm.optim.nvnovograd.NvNovoGrad', 'eb', {'decoupled_decay': True, 'corrected_weight_decay': True}),
    'novogradw': ('timm.optim.nvnovograd.NvNovoGrad', 'eb', {'decoupled_decay': True}),
    'radabelief': ('timm.optim.adabelief.AdaBelief', 'eb', {'rectify': True}),
    'radam': ('torch.optim.RAdam', 'eb', {}),
    'radamlegacy': ('timm.optim.radam.RAdamLegacy', 'eb', {}),
    'radamw': ('torch.optim.RAdam', 'eb', {'decoupled_weight_decay': True}),
    'rmsprop': ('torch.optim.RMSprop', 'em', {'alpha': 0.9}),
    'rmsproptf': ('timm.optim.rmsprop_tf.RMSpropTF', 'em', {'alpha': 0.9}),
    'rmsproptfc': ('timm.optim.rmsprop_tf.RMSpropTF', 'em', {'alpha': 0.9, 'decoupled_decay': True, 'corrected_weight_decay': True}),
    'rmsproptfw': ('timm.optim.rmsprop_tf.RMSpropTF', 'em', {'alpha': 0.9, 'decoupled_decay': True}),
    'sgd': ('torch.optim.SGD', 'm', {'nesterov': True}),
    'sgdc': ('timm.optim.sgdw.SGDW', 'm', {'nesterov': True, 'corrected_weight_decay': True}),
    'sgdp': ('timm.optim.sgdp.SGDP', 'em', {'nesterov': True}),
    'sgdw': ('timm.optim.sgdw.SGDW', 'm', {'nesterov': True}),
}


def timm_optimizer(opt: str):
    """`(registry record, timm's defaults, accepts)` for a timm optimizer name (`"sgd"`,
    `"adamw"`, `"clion"`, ...). A name whose class optax_like lacks is a ValueError naming it
    and listing the names that are available."""
    from optax_like import registry

    name = opt.lower().split("_")[-1]
    if name not in TIMM_OPTIMIZERS:
        raise ValueError(f"Optimizer {name} not found in timm's registry (timm 1.0.31).")
    reference, accepts, defaults = TIMM_OPTIMIZERS[name]
    by_reference = {info.reference: info for info in registry.OPTIMIZERS.values()}
    if reference not in by_reference:
        available = sorted(n for n, (ref, _, _) in TIMM_OPTIMIZERS.items() if ref in by_reference)
        raise ValueError(f"timm optimizer {name!r} ({reference}) is not available in optax_like; available: "
                         f"{', '.join(available)}.")
    return by_reference[reference], dict(defaults), accepts


def uses_lookahead(opt: str) -> bool:
    """timm's `lookahead_<name>`: the optimizer wrapped in `Lookahead(optimizer)` (alpha 0.5, k 6)."""
    split = opt.lower().split("_")
    return len(split) > 1 and split[0] == "lookahead"


def timm_arguments(opt: str, weight_decay: float, lr: Optional[float], momentum: float, foreach: Optional[bool],
                   kwargs: Mapping[str, Any]):
    """`(record, constructor kwargs)` as timm's `create_optimizer` computes them."""
    info, defaults, accepts = timm_optimizer(opt)
    args = {"weight_decay": weight_decay, **kwargs}
    if lr is not None:
        args["lr"] = lr
    for k, v in defaults.items():
        args.setdefault(k, v)
    if "m" in accepts:
        args.setdefault("momentum", momentum)
    if "e" not in accepts:
        args.pop("eps", None)
    if "b" not in accepts:
        args.pop("betas", None)
    if foreach is not None:
        args.setdefault("foreach", foreach)
    return info, args


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def timm_groups(params: Any, *, weight_decay: float, filter_bias_and_bn: bool, layer_decay: Optional[float],
                layer_decay_min_scale: float, layer_decay_no_opt_scale: Optional[float], fallback_list: Collection[str],
                fallback_no_weight_decay: bool, param_group_fn: Optional[Callable], no_weight_decay_list: Collection[str],
                group_matcher: Any, classifier: Any):
    """timm's `create_optimizer` grouping: `(groups, weight_decay for the optimizer)`, or
    `(params, weight_decay)` passed through when `params` is torch's groups or a list of bare
    arrays (timm groups only a model: `model.parameters()`, a list of tensors, passes through,
    every param then decayed)."""
    if isinstance(params, (list, tuple)) and params and all(
            (isinstance(g, Mapping) and "params" in g) or _is_array(g) for g in params):
        return params, weight_decay
    if param_group_fn is not None:
        return param_group_fn(params), weight_decay
    if layer_decay is not None:
        groups = param_groups_layer_decay(
            params, weight_decay=weight_decay, layer_decay=layer_decay, no_weight_decay_list=no_weight_decay_list,
            fallback_list=fallback_list, fallback_no_weight_decay=fallback_no_weight_decay,
            weight_decay_exclude_1d=filter_bias_and_bn, min_scale=layer_decay_min_scale,
            no_opt_scale=layer_decay_no_opt_scale, group_matcher=group_matcher, classifier=classifier)
    else:
        groups = param_groups_weight_decay(
            params, weight_decay=weight_decay, weight_decay_exclude_1d=filter_bias_and_bn,
            no_weight_decay_list=no_weight_decay_list, fallback_list=fallback_list,
            fallback_no_weight_decay=fallback_no_weight_decay)
    return groups, 0.0


def create_optimizer(params: Any, opt: str = "sgd", lr: Optional[float] = None, weight_decay: float = 0.0,
                     momentum: float = 0.9, foreach: Optional[bool] = None, filter_bias_and_bn: bool = True,
                     fallback_list: Collection[str] = (), fallback_no_weight_decay: bool = False,
                     layer_decay: Optional[float] = None, layer_decay_min_scale: float = 0.0,
                     layer_decay_no_opt_scale: Optional[float] = None, param_group_fn: Optional[Callable] = None,
                     no_weight_decay_list: Collection[str] = (), group_matcher: Any = None, classifier: Any = None,
                     stacked: Collection[str] = (), **kwargs: Any):
    """The functional counterpart of timm's `create_optimizer_v2` (and of
    `optax_like.optim.create_optimizer_v2`): the same groups and arguments, as one
    `GradientTransformation` (`plan_transform`) whose groups apply their `lr_scale` to lr
    (a schedule `lr` included). `params`: named params (pairs in model order, or a pytree; see
    the module docstring), or torch's groups of pairs. Params in no group (layer decay's
    `no_opt_scale`) are frozen.

    `stacked`: prefixes of stacked layers (`("blocks",)`: `blocks.attn.w` of shape `(L, ...)`
    holds `blocks.0.attn.w`, ...): the groups are made for the unstacked names (each layer its
    `lr_scale`: a vector along the leading axis, `layer_vectors`) and each stacked leaf is
    updated by one program vectorised over its layers (`stacked_transform`), with the unstacked
    model's numbers bit for bit; `params` must then be the stacked pytree (arrays or
    `jax.ShapeDtypeStruct`s), for which the state is made."""
    from optax_like.param_groups._build import plan_transform
    from optax_like.param_groups._stacked import stacked_transform, unstacked_names

    grouped = unstacked_names(params, stacked) if stacked else params
    groups, opt_weight_decay = timm_groups(
        grouped, weight_decay=weight_decay, filter_bias_and_bn=filter_bias_and_bn, layer_decay=layer_decay,
        layer_decay_min_scale=layer_decay_min_scale, layer_decay_no_opt_scale=layer_decay_no_opt_scale,
        fallback_list=fallback_list, fallback_no_weight_decay=fallback_no_weight_decay, param_group_fn=param_group_fn,
        no_weight_decay_list=no_weight_decay_list, group_matcher=group_matcher, classifier=classifier)
    info, args = timm_arguments(opt, opt_weight_decay, lr, momentum, foreach, kwargs)
    is_groups = groups is grouped
    factory = info.factory
    if uses_lookahead(opt):
        from optax_like.transforms.lookahead import lookahead

        base_factory = factory
        factory = functools.wraps(base_factory)(lambda **a: lookahead(base_factory(**a)))
    if is_groups and all(_is_array(g) for g in groups):  # a list of arrays: timm's one group of them
        return factory(**args)
    p = plan_from_groups(groups, factory, params=None if is_groups else grouped, **args)
    return stacked_transform(p, params, stacked) if stacked else plan_transform(p)
