"""Rules -> groups: matching, actions, errors and warnings, the dry run, and both views."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like import optim
from optax_like import param_groups as pg
from optax_like.optim import grouping
from optax_like.param_groups import Rule


def _params():
    k = iter(jax.random.split(jax.random.PRNGKey(0), 16))
    return {
        "embed": {"weight": jax.random.normal(next(k), (10, 4))},
        "blocks": [{"attn": {"weight": jax.random.normal(next(k), (4, 4)), "bias": jax.random.normal(next(k), (4,))},
                    "norm": {"scale": jax.random.normal(next(k), (4,))}} for _ in range(2)],
        "head": {"weight": jax.random.normal(next(k), (4, 3)), "bias": jax.random.normal(next(k), (3,))},
    }


RULES = [
    Rule(ndim=(0, 1), set={"weight_decay": 0.0}, name="no_decay"),
    Rule("embed.*", freeze=True),
    Rule(regex=r"^head\.", scale={"lr": 10.0}, set={"betas": (0.8, 0.99)}, name="head"),
]


def test_first_match_wins_and_groups_follow_the_params_order():
    plan = pg.plan(_params(), RULES, ol.adamw, lr=1e-3, weight_decay=0.05)
    assert [(g.label, g.names) for g in plan.groups] == [
        ("no_decay", ("blocks.0.attn.bias", "blocks.0.norm.scale", "blocks.1.attn.bias", "blocks.1.norm.scale", "head.bias")),
        ("default", ("blocks.0.attn.weight", "blocks.1.attn.weight")),
        ("head", ("head.weight",)),
    ]
    assert plan.frozen == ("embed.weight",)
    head = plan.group("head")
    assert head.hyperparameters["lr"] == pytest.approx(1e-2) and head.hyperparameters["betas"] == (0.8, 0.99)
    assert head.overrides == {"betas": (0.8, 0.99), "lr": head.hyperparameters["lr"]}
    assert plan.group("no_decay").overrides == {"weight_decay": 0.0}


def test_matching_conditions():
    leaf = jax.ShapeDtypeStruct((4, 768), jnp.bfloat16)
    assert Rule(shape=(None, 768)).matches("a.w", leaf)
    assert not Rule(shape=(None, 512)).matches("a.w", leaf)
    assert Rule(dtype=jnp.bfloat16).matches("a.w", leaf) and not Rule(dtype=(jnp.float32,)).matches("a.w", leaf)
    assert Rule("a.*", ndim=2).matches("a.w", leaf) and not Rule("a.*", ndim=1).matches("a.w", leaf)
    assert Rule(regex=r"\.w$").matches("a.w", leaf) and not Rule(regex=r"^w").matches("a.w", leaf)
    assert Rule().matches("anything", leaf)


def test_partition_is_the_hand_written_multi_transform():
    """Same updates, same state, and the same jaxpr (no per-step cost): the rules are resolved
    while tracing."""
    params = _params()
    tx = pg.partition(RULES, ol.adamw, lr=1e-3, weight_decay=0.05)
    labels = {"embed": {"weight": "frozen"},
              "blocks": [{"attn": {"weight": "default", "bias": "no_decay"}, "norm": {"scale": "no_decay"}}] * 2,
              "head": {"weight": "head", "bias": "no_decay"}}
    by_hand = ol.multi_transform({
        "no_decay": ol.adamw(lr=1e-3, weight_decay=0.0),
        "default": ol.adamw(lr=1e-3, weight_decay=0.05),
        "head": ol.adamw(lr=1e-3 * 10.0, betas=(0.8, 0.99), weight_decay=0.05),
        "frozen": pg.freeze(),
    }, labels)
    grads = jax.tree.map(lambda p: jnp.cos(p) + 0.5, params)
    s1, s2 = tx.init(params), by_hand.init(params)
    assert jax.tree.structure(s1) == jax.tree.structure(s2)
    assert s1.inner_states["frozen"] == ()  # a frozen param has no state
    assert jax.tree.leaves(s1.inner_states["no_decay"])  # the others do
    for _ in range(3):
        u1, s1 = tx.update(grads, s1, params)
        u2, s2 = by_hand.update(grads, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_array_equal(a, b)
    assert not np.any(np.asarray(u1["embed"]["weight"]))  # frozen: no update
    j1 = jax.make_jaxpr(tx.update)(grads, s1, params)
    j2 = jax.make_jaxpr(by_hand.update)(grads, s2, params)
    assert str(j1) == str(j2)


def test_schedules_are_scaled():
    sched = lambda count: 1e-3 * 0.5 ** count
    tx = pg.partition([Rule("head.*", scale={"lr": 4.0})], ol.sgd, lr=sched)
    params = {"head": {"w": jnp.ones(2)}, "body": {"w": jnp.ones(2)}}
    state = tx.init(params)
    for _ in range(2):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    np.testing.assert_allclose(updates["head"]["w"], 4 * updates["body"]["w"], rtol=1e-7)


@pytest.mark.parametrize("rule, message", [
    (Rule("*.bias", set={"weigth_decay": 0.0}), r"rule 0 \(match='\*\.bias'\) sets 'weigth_decay', which is not a hyperparameter of adamw"),
    (Rule("*.bias", scale={"amsgrad": 2.0}), r"rule 0 .* scales 'amsgrad', which is not a number of adamw \(a flag\)"),
    (Rule("*.bias", scale={"betas": 0.5}), r"rule 0 .* scales 'betas', which is not a number of adamw \(a number tuple\)"),
    (Rule("*.bias", freeze=True, optimizer="muon"), r"rule 0 .* freezes its params and routes them to 'muon'"),
    (Rule("*.bias", freeze=True, set={"lr": 0.1}), r"rule 0 .* freezes its params and sets hyperparameters \['lr'\]"),
    (Rule(regex="blocks.(", name="bad"), r"rule 0 'bad' \(regex='blocks.\('\): regex 'blocks.\(' does not compile"),
    (Rule("*.bias", optimizer="sgd"), r"rule 0 .* routes to 'sgd', which is not a route \(routes given: \['muon'\]"),
    (Rule("*.bias", set={"betas": (0.5, 1.0)}), r"rule 0 .*: Invalid beta parameter at index 1: 1.0"),  # torch's message
    (Rule("*.bias", scale={"lr": -1.0}), r"rule 0 .*: Invalid learning rate: -0.001"),
    (Rule("*.bias", set={"momentum": 0.9}, optimizer="muon"), None),  # valid for Muon
    ({"match": "*.bias", "set": {"weight_decay": 0.0}}, None),  # a config file's dict
    ({"match": "*.bias", "sett": {}}, r"rules\[0\] = .*unexpected keyword argument 'sett'"),
])
def test_bad_rules_are_errors_naming_the_rule_before_any_step(rule, message):
    kwargs = dict(lr=1e-3, routes={"muon": (ol.muon, {"lr": 0.02})})
    if message is None:
        pg.partition([rule], ol.adamw, **kwargs)
        return
    with pytest.raises((ValueError, TypeError), match=message):
        pg.partition([rule], ol.adamw, **kwargs)  # construction: no params needed
    with pytest.raises((ValueError, TypeError), match="(?i)" + message):
        grouping.with_rules(_params(), [rule], optim.AdamW, lr=1e-3, routes={"muon": (optim.Muon, {"lr": 0.02})})


def test_a_rule_that_matches_nothing_is_an_error_naming_it():
    rules = [Rule("*.bias", set={"weight_decay": 0.0}), Rule("encoder.*", scale={"lr": 0.1}, name="enc")]
    tx = pg.partition(rules, ol.adamw)
    with pytest.raises(ValueError, match=r"rule 1 'enc' \(match='encoder\.\*'\) matches no param"):
        tx.init(_params())
    with pytest.raises(ValueError, match="rule 1 'enc'"):
        pg.dry_run(_params(), rules, ol.adamw, print_table=False)


def test_fall_through_under_a_rules_prefix_is_warned():
    rules = [Rule("blocks.*.attn.weight", scale={"lr": 0.5}, name="attn"), Rule("*.bias", set={"weight_decay": 0.0})]
    with pytest.warns(pg.FallThroughWarning, match=r"rule 0 'attn'.*prefix 'blocks\.'.*blocks\.0\.norm\.scale"):
        pg.plan(_params(), rules, ol.adamw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a prefix-free pattern, and params failing only a shape condition, are not warned about
        pg.plan(_params(), [Rule("*.weight", ndim=2, scale={"lr": 0.5})], ol.adamw)
        pg.plan(_params(), [Rule("blocks.*", ndim=2, scale={"lr": 0.5})], ol.adamw)


def test_dry_run_table(capsys):
    rows = pg.dry_run(_params(), RULES, ol.adamw, lr=1e-3, weight_decay=0.05)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| param | shape | group | optimizer | lr | weight_decay |"
    assert "| head.weight | (4, 3) | head | adamw | 0.01 | 0.05 |" in out
    assert "| embed.weight | (10, 4) | frozen | - | - | - |" in out
    assert {r["param"]: r["group"] for r in rows}["blocks.1.norm.scale"] == "no_decay"
    # shapes only: jax.eval_shape's output is enough
    specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _params())
    assert pg.dry_run(specs, RULES, ol.adamw, print_table=False) == pg.dry_run(_params(), RULES, ol.adamw, print_table=False)


def test_adapter_groups_carry_names_and_match_torch():
    """The adapter's groups are torch's: AdamW built from the same named groups steps alike,
    and the state_dicts load both ways (float64)."""
    torch = pytest.importorskip("torch")
    from optax_like.interop.torch import to_torch_state_dict

    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: x.astype(jnp.float64), _params())
        opt = grouping.with_rules(params, RULES, optim.AdamW, lr=1e-3, weight_decay=0.05)
        plan = pg.plan(params, RULES, optim.AdamW, lr=1e-3, weight_decay=0.05)
        tensors = {n: torch.tensor(np.asarray(p), requires_grad=True) for n, p in pg.named_leaves(params)}
        torch_groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [(n, tensors[n]) for n, _ in g["params"]]}
                        for g in plan.torch_groups()]
        ref = torch.optim.AdamW(torch_groups, lr=1e-3, weight_decay=0.05)
        assert [g["param_names"] for g in opt.state_dict()["param_groups"]] == \
               [g["param_names"] for g in ref.state_dict()["param_groups"]]
        rng = np.random.default_rng(0)
        for t in range(4):
            grads = {n: rng.standard_normal(np.shape(p)) for n, p in pg.named_leaves(params)}
            for n, x in tensors.items():
                x.grad = torch.tensor(grads[n])
            ref.step()
            opt.zero_grad()
            opt.backward(jax.tree_util.tree_map_with_path(
                lambda path, p: jnp.asarray(grads[pg._rules.param_name(path)]), params))
            opt.step()
            if t == 1:
                ref.load_state_dict(to_torch_state_dict(opt, target=list(tensors)))
            if t == 2:
                opt.load_state_dict(ref.state_dict())
        got = dict(pg.named_leaves(opt.params))
        for n, x in tensors.items():
            np.testing.assert_allclose(got[n], x.detach().numpy(), rtol=1e-12, atol=1e-15, err_msg=n)
        np.testing.assert_array_equal(got["embed.weight"], params_before_embed())


def params_before_embed():
    return np.asarray(_params()["embed"]["weight"], dtype=np.float64)


def test_lr_scale_entry_in_a_rule():
    """`set={'lr_scale': s}` is timm's entry: the adapter's group carries it (schedulers apply
    it), the functional view multiplies lr by it."""
    params = {"head": {"w": jnp.ones(2)}, "body": {"w": jnp.ones(2)}}
    rules = [Rule("head.*", set={"lr_scale": 0.25})]
    tx = pg.partition(rules, ol.sgd, lr=0.1)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["head"]["w"], 0.25 * updates["body"]["w"], rtol=1e-7)
    opt = grouping.with_rules(params, rules, optim.SGD, lr=0.1)
    head = [g for g in opt.param_groups if g["param_names"] == ["head.w"]][0]
    assert head["lr"] == 0.1 and head["lr_scale"] == 0.25
    row = [r for r in pg.dry_run(params, rules, ol.sgd, lr=0.1, print_table=False) if r["param"] == "head.w"][0]
    assert row["lr"] == pytest.approx(0.025)


def test_dry_run_of_timm_groups():
    named = [("blocks.0.w", jnp.zeros((3, 3))), ("blocks.0.b", jnp.zeros(3)), ("head.w", jnp.zeros((2, 3)))]
    groups = pg.param_groups_layer_decay(named, weight_decay=0.05, layer_decay=0.5,
                                         group_matcher=dict(blocks=r"^blocks\.(\d+)"))
    plan = pg.plan_from_groups(groups, ol.adamw, lr=1e-3)
    rows = {r["param"]: r for r in plan.rows()}
    assert rows["blocks.0.w"]["lr"] == pytest.approx(5e-4) and rows["blocks.0.w"]["weight_decay"] == 0.05
    assert rows["blocks.0.b"]["weight_decay"] == 0.0 and rows["head.w"]["lr"] == pytest.approx(1e-3)
    assert plan.table().count("\n") == 4
