"""Param groups by rules, for the functional core and the `optim` adapter alike.

    from optax_like.param_groups import Rule
    rules = [
        Rule(ndim=(0, 1), set={"weight_decay": 0.0}, name="no_decay"),   # biases, norms
        Rule("embed.*", freeze=True),                                    # no update, no state
        Rule("blocks.*", ndim=2, optimizer="muon"),                      # routed
        Rule(regex=r"^head\\.", scale={"lr": 10.0}),                     # multiplier
    ]
    param_groups.dry_run(params, rules, optax_like.adamw, lr=1e-3, weight_decay=0.05,
                         routes={"muon": (optax_like.muon, {"lr": 0.02})})      # prints the table
    tx = param_groups.partition(rules, optax_like.adamw, lr=1e-3, weight_decay=0.05,
                                routes={"muon": (optax_like.muon, {"lr": 0.02})})
    opt = optax_like.optim.with_rules(params, rules, optim.AdamW, lr=1e-3, weight_decay=0.05)

One spec, two views: `plan(...)` turns rules (or timm's / HF's groups: `plan_from_groups`)
into a `Plan`; `plan_transform(plan)` is its functional optimizer (one `multi_transform`),
`plan.torch_groups()` its torch param groups (names carried). timm's grouping functions and
`create_optimizer` (timm's `create_optimizer_v2`) are in `_timm.py`.
"""

from optax_like.param_groups._build import cross_group_transform, dry_run, freeze, partition, plan, plan_transform
from optax_like.param_groups._rules import DEFAULT, FROZEN, FallThroughWarning, Group, Plan, Rule, muon_rules, named_leaves
from optax_like.param_groups._stacked import layer_vectors, over_layers, stacked_transform, unstacked, unstacked_names
from optax_like.param_groups._timm import (
    TIMM_OPTIMIZERS,
    auto_group_layers,
    create_optimizer,
    group_with_matcher,
    hf_param_groups,
    param_groups_layer_decay,
    param_groups_weight_decay,
    plan_from_groups,
    timm_optimizer,
)

__all__ = [
    "DEFAULT", "FROZEN", "FallThroughWarning", "Group", "Plan", "Rule", "TIMM_OPTIMIZERS", "auto_group_layers",
    "create_optimizer", "cross_group_transform", "dry_run", "freeze", "group_with_matcher", "hf_param_groups", "muon_rules", "named_leaves",
    "param_groups_layer_decay", "param_groups_weight_decay", "partition", "plan", "plan_from_groups",
    "plan_transform", "timm_optimizer", "layer_vectors", "over_layers", "stacked_transform", "unstacked",
    "unstacked_names",
]
