"""Rules: which param goes to which group, with which hyperparameters and which optimizer.

A rule matches a param by its name (the key path joined with dots, torch's spelling:
`"blocks.0.attn.qkv.weight"`), by a glob (`match`, fnmatch as timm's `no_weight_decay_list`)
and/or a regex (`regex`, `re.search`), and/or by `ndim`, `shape` and `dtype`. The first rule
that matches a param decides it; a param that no rule matches goes to the default group. A
rule then sets hyperparameter values (`set`), multiplies numeric ones (`scale`), freezes the
param (`freeze`: no update, no state) or routes it to another optimizer (`optimizer`, a name
in the `routes` given beside the rules).

Everything that can be checked without the params is checked when the plan is made, and every
error names the rule; a rule that matches no param is an error naming it once the params are
seen (a typo in a pattern must not silently train with the default settings).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import warnings
from typing import Any, Iterable, Mapping, Optional, Sequence

import jax
import numpy as np

from optax_like.core import hyperparams
from optax_like.core.leaf_order import order_issue, remember_listed
from optax_like.core.tree import is_named_pairs, is_none, param_name

__all__ = ["DEFAULT", "FROZEN", "FallThroughWarning", "Group", "Plan", "Rule", "muon_rules", "named_leaves", "param_name"]

DEFAULT = "default"  # the label of the default group and the key of the default optimizer
FROZEN = "frozen"  # the label of params in no group (no update, no state)
_GROUP_ENTRIES = ("lr_scale",)  # group entries that are not factory arguments (timm's; see Plan)
_NOT_HYPERPARAMETERS = ("self", "params", "model", "skip_nonfinite")


class FallThroughWarning(UserWarning):
    """Params under a rule's literal prefix that no rule matched (they train with the default)."""


def named_leaves(params: Any, *, listed_by: Optional[str] = None) -> list[tuple[str, Any]]:
    """`(name, leaf)` for every array leaf of `params`: a list of `(name, param)` pairs (torch's
    `named_parameters()`, in that order), or a pytree (names from key paths, JAX's leaf order;
    `None` leaves are not params). The leaf may be anything with `.shape`/`.ndim`/`.dtype`
    (arrays, `jax.ShapeDtypeStruct`s, torch tensors).

    `listed_by` (the helper's name, for messages): the groups made from the pairs go to an
    optimizer. Where the tree's leaf order is JAX's (a dict of several keys: sorted, not the
    model's registration order; `core.leaf_order.order_issue`), the leaves are remembered as
    listed in JAX's order, as `optim.named_parameters` remembers them, so that the `optim`
    group built from them refuses to load or export a state saved without names by position
    (and asks for the model's names) instead of guessing."""
    if is_named_pairs(params):
        return list(params)
    flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_none)[0]
    named = [(param_name(path), leaf) for path, leaf in flat if leaf is not None]
    if listed_by is not None:
        why = order_issue(params)
        if why is not None:
            for _, leaf in named:
                remember_listed(leaf, why, listed_by)
    return named


def _literal_prefix_glob(pattern: str) -> str:
    cut = min([i for i, c in enumerate(pattern) if c in "*?["] + [len(pattern)])
    return pattern[:cut]


def _literal_prefix_regex(pattern: str) -> str:
    if not pattern.startswith("^"):
        return ""
    out = []
    i = 1
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            out.append(pattern[i + 1])
            i += 2
            continue
        if c in ".^$*+?{}[]|()\\":
            # a quantifier makes the previous character optional: drop it
            if c in "*?{" and out:
                out.pop()
            break
        out.append(c)
        i += 1
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule: what it matches and what it does to the params it matches (first match wins).

    Matching (all given conditions must hold; a rule without conditions matches every param):
      match: a glob on the param name (`fnmatch`, as timm's `no_weight_decay_list`:
        `"*.bias"`, `"blocks.*.attn.*"`; `*` crosses dots).
      regex: a regular expression searched in the name (`re.search`; anchor with `^`/`$`).
      ndim: an int or a collection of ints (`ndim=(0, 1)`: biases, norms, scalars).
      shape: a tuple; `None` entries match any size (`shape=(None, 768)`).
      dtype: a dtype or a collection of dtypes.
    Action (at most one of freeze / the others):
      set: hyperparameter values for the group (`{"weight_decay": 0.0, "betas": (0.9, 0.95)}`),
        arguments of the group's optimizer, or `lr_scale` (timm's group entry: see `Plan`).
      scale: multipliers of numeric hyperparameters (`{"lr": 0.1}`): the group's value is the
        optimizer's value (after `set`) times the multiplier; a schedule is multiplied too.
      freeze: no update and no optimizer state.
      optimizer: the name of a route (`routes={"muon": ...}` beside the rules): the params train
        with that optimizer, as if they were in it alone.
      name: the group's label (default `rule<i>`); rules with the same name share one group
        and must then do the same thing.
    """

    match: Optional[str] = None
    regex: Optional[str] = None
    ndim: Any = None
    shape: Optional[Sequence[Optional[int]]] = None
    dtype: Any = None
    set: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    scale: Mapping[str, float] = dataclasses.field(default_factory=dict)
    freeze: bool = False
    optimizer: Optional[str] = None
    name: Optional[str] = None

    def describe(self, index: int) -> str:
        """How errors and warnings name this rule: `rule 2 'no_decay' (match='*.bias', ndim=1)`."""
        conditions = [f"{f}={getattr(self, f)!r}" for f in ("match", "regex", "ndim", "shape", "dtype")
                      if getattr(self, f) is not None]
        label = f" {self.name!r}" if self.name else ""
        return f"rule {index}{label} ({', '.join(conditions) or 'matches every param'})"

    def matches(self, name: str, leaf: Any, compiled: Optional[re.Pattern] = None) -> bool:
        return self.matches_path(name, compiled) and self.matches_array(leaf)

    def matches_path(self, name: str, compiled: Optional[re.Pattern] = None) -> bool:
        if self.match is not None and not fnmatch.fnmatch(name, self.match):
            return False
        if self.regex is not None and not (compiled or re.compile(self.regex)).search(name):
            return False
        return True

    def matches_array(self, leaf: Any) -> bool:
        shape = tuple(np.shape(leaf)) if not hasattr(leaf, "shape") else tuple(leaf.shape)
        if self.ndim is not None:
            allowed = (self.ndim,) if isinstance(self.ndim, int) else tuple(self.ndim)
            if len(shape) not in allowed:
                return False
        if self.shape is not None:
            want = tuple(self.shape)
            if len(want) != len(shape) or any(w is not None and w != s for w, s in zip(want, shape)):
                return False
        if self.dtype is not None:
            allowed = (self.dtype,) if not isinstance(self.dtype, (list, tuple, set, frozenset)) else tuple(self.dtype)
            dtype = getattr(leaf, "dtype", None)
            if dtype is None or not any(_same_dtype(dtype, d) for d in allowed):
                return False
        return True

    def literal_prefix(self) -> str:
        """The name prefix every param this rule's path pattern can match starts with."""
        prefixes = []
        if self.match is not None:
            prefixes.append(_literal_prefix_glob(self.match))
        if self.regex is not None:
            prefixes.append(_literal_prefix_regex(self.regex))
        return max(prefixes, key=len, default="")


def _same_dtype(a: Any, b: Any) -> bool:
    try:
        return np.dtype(a) == np.dtype(b)
    except TypeError:
        return str(a).rsplit(".", 1)[-1] == str(b).rsplit(".", 1)[-1]


def hyperparameter_kinds(optimizer: Any) -> dict[str, str]:
    """`{argument: NUMBER | FLAG | STATIC}` of a functional factory or an `optim` class."""
    target = optimizer.__init__ if isinstance(optimizer, type) else optimizer
    kinds = hyperparams.argument_kinds(target)
    return {k: v for k, v in kinds.items() if k not in _NOT_HYPERPARAMETERS}


def _is_scalar_number_default(optimizer: Any, key: str) -> bool:
    import inspect

    target = optimizer.__init__ if isinstance(optimizer, type) else optimizer
    default = inspect.signature(target).parameters[key].default
    return hyperparams.is_number(default)


@dataclasses.dataclass(frozen=True)
class Group:
    """One param group of a plan: its label, params (names, in order), the optimizer (a route
    name, `DEFAULT` for the default optimizer) and the group's hyperparameters: `overrides` are
    the values that differ from the optimizer's (what a torch group dict carries beside
    'params'), `hyperparameters` the group's full configuration (`lr` is the optimizer's lr
    before `lr_scale`, as in a timm group)."""

    label: str
    names: tuple[str, ...]
    optimizer: str
    overrides: Mapping[str, Any]
    hyperparameters: Mapping[str, Any]
    rule: Optional[str] = None  # how the rule is named in messages; None for the default group

    @property
    def lr_scale(self) -> float:
        return float(self.overrides.get("lr_scale", 1.0))

    def effective(self, key: str) -> Any:
        """The value the group trains with: `lr` times `lr_scale`; other values as they are."""
        value = self.hyperparameters.get(key)
        if key == "lr" and "lr_scale" in self.overrides:
            return _multiply(value, self.lr_scale)
        return value


def _multiply(value: Any, factor: float) -> Any:
    if factor == 1.0:
        return value
    if callable(value):
        return lambda count, _v=value, _f=factor: _v(count) * _f
    return value * factor


@dataclasses.dataclass(frozen=True)
class Plan:
    """Params -> groups: what the rules (or timm's and HF's grouping functions) decided.

    `groups` are in order (torch's param_groups order); `frozen` are the names of params in no
    group; `optimizers` maps the default (`DEFAULT`) and each route name to `(optimizer,
    kwargs)`: a functional factory or an `optim` class, with the configuration its groups start
    from. Build it with `plan(...)` (rules) or `plan_from_groups(...)` (torch's groups of
    `(name, param)` pairs: timm's, HF's, hand-written), and turn it into a
    `GradientTransformation` (`plan_transform`), torch's param groups (`torch_groups`), or a
    table (`rows`, `table`: the dry run).

    `lr_scale`: a timm group entry (layer decay). timm's optimizers ignore it and timm's
    schedulers apply it (`lr = value * lr_scale` when they write `lr`; timm #2532). Here the
    functional view applies it to the group's lr (a schedule included); in the adapter the
    group carries it as timm's does and `optax_like.optim.lr_scheduler`'s schedulers apply it
    when they are created (see its module docstring).
    """

    groups: tuple[Group, ...]
    frozen: tuple[str, ...]
    optimizers: Mapping[str, tuple[Any, Mapping[str, Any]]]
    leaves: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def label_of(self) -> dict[str, str]:
        out = {name: group.label for group in self.groups for name in group.names}
        out.update({name: FROZEN for name in self.frozen})
        return out

    def group(self, label: str) -> Group:
        for group in self.groups:
            if group.label == label:
                return group
        raise KeyError(label)

    def rows(self) -> list[dict[str, Any]]:
        """One row per param, in the params' order: name, shape, group, optimizer, lr (the lr it
        trains with: after `scale` and `lr_scale`), weight decay."""
        where = {}
        for group in self.groups:
            for name in group.names:
                where[name] = group
        rows = []
        for name, leaf in self.leaves.items():
            group = where.get(name)
            shape = tuple(getattr(leaf, "shape", ()))
            if group is None:
                rows.append(dict(param=name, shape=shape, group=FROZEN, optimizer="-", lr="-", weight_decay="-"))
                continue
            optimizer, _ = self.optimizers[group.optimizer]
            rows.append(dict(param=name, shape=shape, group=group.label, optimizer=_optimizer_name(optimizer, group.optimizer),
                             lr=group.effective("lr"), weight_decay=group.hyperparameters.get("weight_decay", "-")))
        return rows

    def table(self) -> str:
        """`rows()` as a Markdown table."""
        head = ["param", "shape", "group", "optimizer", "lr", "weight_decay"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows():
            lines.append("| " + " | ".join(_cell(row[k]) for k in head) + " |")
        return "\n".join(lines)

    def torch_groups(self, params: Any = None) -> Any:
        """torch's param_groups: `[{'params': [(name, array), ...], **overrides}, ...]` with the
        arrays of `params` (by name; default: the leaves the plan was made from). Frozen params
        are in no group (with `model=params`, the adapter leaves them untouched, as torch leaves
        a param no group holds). With routes: `{optimizer: [groups]}`, one list per optimizer
        (torch's idiom: one optimizer per algorithm, side by side)."""
        arrays = dict(named_leaves(params, listed_by="Plan.torch_groups")) if params is not None else dict(self.leaves)
        out: dict[str, list] = {key: [] for key in self.optimizers}
        for group in self.groups:
            entry = {"params": [(name, arrays[name]) for name in group.names]}
            entry.update(group.overrides)
            out[group.optimizer].append(entry)
        if set(self.optimizers) == {DEFAULT}:
            return out[DEFAULT]
        return out


def _optimizer_name(optimizer: Any, key: str) -> str:
    name = getattr(optimizer, "__name__", None) or str(optimizer)
    return name if key in (DEFAULT, name) else f"{name} (route {key!r})"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if callable(value):
        return "schedule"
    return str(value)


def as_rules(rules: Sequence[Any]) -> list[Rule]:
    """`rules` as `Rule`s: a dict (a config file's entry) is `Rule(**entry)`."""
    out = []
    for i, rule in enumerate(rules):
        if isinstance(rule, Mapping):
            try:
                rule = Rule(**rule)
            except TypeError as e:
                raise TypeError(f"rules[{i}] = {dict(rule)!r}: {e} (a Rule's fields: "
                                f"{[f.name for f in dataclasses.fields(Rule)]}).") from None
        if not isinstance(rule, Rule):
            raise TypeError(f"rules[{i}] is a {type(rule).__name__}, expected a param_groups.Rule or a dict.")
        out.append(rule)
    return out


def _functional_factory(optimizer: Any) -> Optional[Any]:
    """The functional factory behind `optimizer` (itself, or an `optim` class's registry record's)."""
    if not isinstance(optimizer, type):
        return optimizer
    from optax_like import registry

    try:
        return registry.by_class(optimizer.__name__).factory
    except KeyError:
        return None


def _check_values(where: str, optimizer: Any, kwargs: Mapping, rule: "Rule") -> None:
    """The group's configuration through the optimizer's own validation (torch's messages),
    prefixed with the rule."""
    factory = _functional_factory(optimizer)
    if factory is None or not (rule.set or rule.scale):
        return
    config = _configuration(optimizer, kwargs)
    config.update({k: v for k, v in rule.set.items() if k not in _GROUP_ENTRIES})
    for key, factor in rule.scale.items():
        config[key] = _multiply(config[key], float(factor))
    try:
        factory(**{k: v for k, v in config.items() if k in hyperparameter_kinds(factory)})
    except (ValueError, TypeError) as e:
        raise type(e)(f"{where}: {e}") from None


def _check_rules(rules: Sequence[Rule], optimizers: Mapping[str, tuple[Any, Mapping]]) -> list[Optional[re.Pattern]]:
    compiled = []
    for i, rule in enumerate(rules):
        where = rule.describe(i)
        if rule.freeze and rule.optimizer is not None:
            raise ValueError(f"{where} freezes its params and routes them to {rule.optimizer!r}: choose one.")
        if rule.freeze and (rule.set or rule.scale):
            raise ValueError(f"{where} freezes its params and sets hyperparameters {sorted({**rule.set, **rule.scale})}: "
                             "a frozen param has no optimizer.")
        if rule.optimizer is not None and rule.optimizer not in optimizers:
            routes = sorted(k for k in optimizers if k != DEFAULT)
            raise ValueError(f"{where} routes to {rule.optimizer!r}, which is not a route "
                             f"(routes given: {routes or 'none'}; pass routes={{{rule.optimizer!r}: (optimizer, kwargs)}}).")
        pattern = None
        if rule.regex is not None:
            try:
                pattern = re.compile(rule.regex)
            except re.error as e:
                raise ValueError(f"{where}: regex {rule.regex!r} does not compile: {e}.") from None
        if rule.ndim is not None and not (isinstance(rule.ndim, int) or all(isinstance(n, int) for n in rule.ndim)):
            raise TypeError(f"{where}: ndim must be an int or a collection of ints, got {rule.ndim!r}.")
        compiled.append(pattern)
        if rule.freeze:
            continue
        optimizer, _ = optimizers[rule.optimizer or DEFAULT]
        kinds = hyperparameter_kinds(optimizer)
        opt_name = getattr(optimizer, "__name__", optimizer)
        for key in rule.set:
            if key not in kinds and key not in _GROUP_ENTRIES:
                raise ValueError(f"{where} sets {key!r}, which is not a hyperparameter of {opt_name} "
                                 f"(its hyperparameters: {sorted(kinds)}).")
        for key, factor in rule.scale.items():
            if key not in kinds:
                raise ValueError(f"{where} scales {key!r}, which is not a hyperparameter of {opt_name} "
                                 f"(its hyperparameters: {sorted(kinds)}).")
            if kinds[key] != hyperparams.NUMBER or not _is_scalar_number_default(optimizer, key):
                raise ValueError(f"{where} scales {key!r}, which is not a number of {opt_name} "
                                 f"(a {kinds[key]}{' tuple' if kinds[key] == hyperparams.NUMBER else ''}): "
                                 f"set its value with set={{{key!r}: ...}} instead.")
            if not hyperparams.is_number(factor):
                raise TypeError(f"{where} scales {key!r} by {factor!r}: a multiplier is a number.")
        _check_values(where, optimizer, optimizers[rule.optimizer or DEFAULT][1], rule)
    return compiled


def _configuration(optimizer: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer's full configuration: its defaults, then `kwargs`."""
    import inspect

    target = optimizer.__init__ if isinstance(optimizer, type) else optimizer
    out = {}
    for name, p in inspect.signature(target).parameters.items():
        if name in _NOT_HYPERPARAMETERS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not inspect.Parameter.empty:
            out[name] = p.default
    unknown = set(kwargs) - set(out)
    if unknown:
        raise TypeError(f"{getattr(optimizer, '__name__', optimizer)} got unexpected hyperparameters {sorted(unknown)}.")
    out.update(kwargs)
    return out


def _optimizer_table(optimizer: Any, hyperparameters: Mapping, routes: Optional[Mapping]) -> dict:
    table = {DEFAULT: (optimizer, dict(hyperparameters))}
    for key, spec in (routes or {}).items():
        if key == DEFAULT:
            raise ValueError(f"a route may not be named {DEFAULT!r} (the default optimizer's name).")
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
            table[key] = (spec[0], dict(spec[1]))
        else:
            table[key] = (spec, {})
    for key, (opt, kwargs) in table.items():
        _configuration(opt, kwargs)  # unknown arguments fail here, naming the optimizer
    return table


def make_plan(params: Any, rules: Sequence[Rule], optimizer: Any, *, routes: Optional[Mapping] = None,
              hyperparameters: Optional[Mapping] = None, warn: bool = True) -> Plan:
    """The plan the rules make for `params` (see `plan`)."""
    optimizers = _optimizer_table(optimizer, hyperparameters or {}, routes)
    rules = as_rules(rules)
    compiled = _check_rules(rules, optimizers)
    leaves = named_leaves(params, listed_by="param_groups.plan")
    labels = _labels(rules)
    members: dict[int, list[str]] = {}
    fell_through: list[str] = []
    for name, leaf in leaves:
        for i, (rule, pattern) in enumerate(zip(rules, compiled)):
            if rule.matches(name, leaf, pattern):
                members.setdefault(i, []).append(name)
                break
        else:
            fell_through.append(name)
    unused = [rule.describe(i) for i, rule in enumerate(rules) if i not in members]
    if unused:
        raise ValueError(f"{unused[0]} matches no param{' (also: ' + '; '.join(unused[1:]) + ')' if unused[1:] else ''}; "
                         f"names look like {[n for n, _ in leaves[:3]]}.")
    if warn:
        _warn_fall_through(rules, compiled, fell_through)
    position = {name: k for k, (name, _) in enumerate(leaves)}
    groups: dict[str, Group] = {}
    frozen: list[str] = []
    by_label_rule: dict[str, int] = {}
    for i in sorted(members):
        rule = rules[i]
        if rule.freeze:
            frozen.extend(members[i])
            continue
        label = labels[i]
        if label in groups:
            j = by_label_rule[label]
            if not _same_action(rules[j], rule):
                raise ValueError(f"{rule.describe(i)} and {rules[j].describe(j)} share the name {label!r} "
                                 "but do not do the same thing: give them different names.")
            groups[label] = dataclasses.replace(groups[label], names=groups[label].names + tuple(members[i]))
            continue
        by_label_rule[label] = i
        groups[label] = _group(label, tuple(members[i]), rule.optimizer or DEFAULT, rule.set, rule.scale,
                               optimizers, rule.describe(i))
    if fell_through:
        groups[DEFAULT] = _group(DEFAULT, tuple(fell_through), DEFAULT, {}, {}, optimizers, None)
    # groups in the order of their first param, each group's params in the params' order
    ordered = [dataclasses.replace(g, names=tuple(sorted(g.names, key=position.__getitem__))) for g in groups.values()]
    ordered.sort(key=lambda g: position[g.names[0]])
    return Plan(tuple(ordered), tuple(sorted(frozen, key=position.__getitem__)), optimizers, dict(leaves))


def _same_action(a: Rule, b: Rule) -> bool:
    return (dict(a.set), dict(a.scale), a.freeze, a.optimizer) == (dict(b.set), dict(b.scale), b.freeze, b.optimizer)


def _labels(rules: Sequence[Rule]) -> list[str]:
    labels = []
    for i, rule in enumerate(rules):
        label = rule.name or f"rule{i}"
        if label in (DEFAULT, FROZEN):
            raise ValueError(f"{rule.describe(i)}: {label!r} is reserved (the default group's / frozen params' label).")
        labels.append(label)
    return labels


def _group(label, names, optimizer_key, set_values, scale_values, optimizers, rule_name) -> Group:
    optimizer, kwargs = optimizers[optimizer_key]
    config = _configuration(optimizer, kwargs)
    overrides = dict(set_values)
    config.update({k: v for k, v in set_values.items() if k not in _GROUP_ENTRIES})
    for key, factor in scale_values.items():
        config[key] = _multiply(config[key], float(factor))
        overrides[key] = config[key]
    return Group(label, names, optimizer_key, overrides, config, rule_name)


def _warn_fall_through(rules: Sequence[Rule], compiled, fell_through: Iterable[str]) -> None:
    for i, (rule, pattern) in enumerate(zip(rules, compiled)):
        prefix = rule.literal_prefix()
        if not prefix:
            continue
        near = [n for n in fell_through if n.startswith(prefix) and not rule.matches_path(n, pattern)]
        if near:
            shown = ", ".join(near[:3]) + (f", ... ({len(near)} in all)" if len(near) > 3 else "")
            warnings.warn(f"{rule.describe(i)}: params under its prefix {prefix!r} match no rule and train with the "
                          f"default settings: {shown}. Add a rule for them, or a catch-all rule with the default "
                          "settings to say so.", FallThroughWarning, stacklevel=4)


def muon_rules(fallback_list: Iterable[str] = (), route: str = "muon") -> list[Rule]:
    """Muon for 2-D hidden matrices, the default optimizer (AdamW) for the rest: params
    matching `fallback_list` (timm's globs: embeddings, heads) stay on the default, then every
    other 2-D param is routed to `route`. Use with `routes={route: (muon, kwargs)}`."""
    return [*(Rule(pattern, name="fallback") for pattern in fallback_list), Rule(ndim=2, optimizer=route, name=route)]
