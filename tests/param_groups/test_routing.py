"""Routing by rule: Muon for 2-D hidden matrices, AdamW for the rest (timm's `fallback_list`
patterns keep named matrices on AdamW), against torch.optim.Muon + torch.optim.AdamW side by side."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like import optim
from optax_like import param_groups as pg
from optax_like.optim import grouping
from optax_like.registry import import_reference_module

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

MUON_RTOL = 1e-3  # bf16 Newton-Schulz on both sides (tests/parity/test_muon.py)
STEPS = 5
FALLBACK = ("embed.*", "head.*")  # timm's fallback_list: matrices that stay on AdamW
RULES = pg.muon_rules(fallback_list=FALLBACK)
ADAMW = dict(lr=1e-3, weight_decay=0.05)
MUON = dict(lr=0.02, weight_decay=0.1)


def _problem():
    rng = np.random.default_rng(0)
    shapes = {"embed.weight": (12, 8), "blocks.0.fc1.weight": (16, 8), "blocks.0.fc1.bias": (16,),
              "blocks.0.fc2.weight": (8, 16), "blocks.0.norm.weight": (8,), "head.weight": (3, 8), "head.bias": (3,)}
    params = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    grads = [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()} for _ in range(STEPS)]
    return params, grads


def _torch_side_by_side(params):
    tensors = {n: torch.tensor(p, requires_grad=True) for n, p in params.items()}
    hidden = [n for n in params if params[n].ndim == 2 and not n.startswith(("embed.", "head."))]
    muon = torch.optim.Muon([(n, tensors[n]) for n in hidden], **MUON)
    adamw = torch.optim.AdamW([(n, t) for n, t in tensors.items() if n not in hidden], **ADAMW)
    return tensors, hidden, muon, adamw


def _check(name, got, want, hidden):
    rtol = MUON_RTOL if name in hidden else 1e-6
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=name)


def test_rules_route_hidden_matrices():
    params, _ = _problem()
    plan = pg.plan(params, RULES, ol.adamw, routes={"muon": (ol.muon, MUON)}, **ADAMW)
    where = {n: g.optimizer for g in plan.groups for n in g.names}
    assert where == {"embed.weight": "default", "head.weight": "default", "head.bias": "default",
                     "blocks.0.fc1.weight": "muon", "blocks.0.fc2.weight": "muon",
                     "blocks.0.fc1.bias": "default", "blocks.0.norm.weight": "default"}


def test_functional_routing_matches_torch_muon_and_adamw():
    params, grads = _problem()
    tensors, hidden, muon, adamw = _torch_side_by_side(params)
    tx = pg.partition(RULES, ol.adamw, routes={"muon": (ol.muon, MUON)}, **ADAMW)
    ours = {n: jnp.asarray(p) for n, p in params.items()}
    state = tx.init(ours)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))
    for g in grads:
        for n, t in tensors.items():
            t.grad = torch.tensor(g[n])
        muon.step()
        adamw.step()
        updates, state = step({n: jnp.asarray(x) for n, x in g.items()}, state, ours)
        ours = ol.apply_updates(ours, updates)
        for n, t in tensors.items():
            _check(n, np.asarray(ours[n]), t.detach().numpy(), hidden)
    # Muon's state holds exactly the routed params, with torch's momentum buffers
    muon_state = [s for label, s in state.inner_states.items() if pg.plan(params, RULES, ol.adamw, routes={
        "muon": (ol.muon, MUON)}, **ADAMW).group(label).optimizer == "muon"]
    assert len(muon_state) == 1
    buffers = {n: b for n, b in muon_state[0][0].momentum_buffer.items() if b is not None}
    assert sorted(buffers) == sorted(hidden)
    for n in hidden:
        np.testing.assert_allclose(buffers[n], muon.state[tensors[n]]["momentum_buffer"].numpy(), rtol=MUON_RTOL)


def test_adapter_routing_exports_each_optimizers_torch_state():
    """`with_rules(..., routes=)` gives one optimizer per algorithm; each one's state_dict is
    the torch optimizer's (names, ids, keys, values) and loads into it, and back."""
    from optax_like.interop.torch import to_torch_state_dict

    params, grads = _problem()
    tensors, hidden, _, _ = _torch_side_by_side(params)
    # torch's optimizers built from the same groups (the plan's, names carried)
    groups = pg.plan(params, RULES, optim.AdamW, routes={"muon": (optim.Muon, MUON)}, **ADAMW).torch_groups()
    as_torch = lambda gs: [{**g, "params": [(n, tensors[n]) for n, _ in g["params"]]} for g in gs]
    muon, adamw = torch.optim.Muon(as_torch(groups["muon"]), **MUON), torch.optim.AdamW(as_torch(groups["default"]), **ADAMW)
    assert len(adamw.param_groups) == 2  # the fallback rule's group and the default group
    opts = grouping.with_rules({n: jnp.asarray(p) for n, p in params.items()}, RULES, optim.AdamW,
                               routes={"muon": (optim.Muon, MUON)}, **ADAMW)
    assert sorted(opts) == ["default", "muon"]
    by_name = {}
    for t, g in enumerate(grads):
        for n, x in tensors.items():
            x.grad = torch.tensor(g[n])
        muon.step()
        adamw.step()
        for key, opt in opts.items():
            opt.zero_grad()
            opt.backward([[jnp.asarray(g[n]) for n in group["param_names"]] for group in opt.param_groups])
            opt.step()
        if t == 1:  # ours -> torch, both optimizers; by name: the params dict's order is JAX's
            muon.load_state_dict(to_torch_state_dict(opts["muon"], target=muon))
            adamw.load_state_dict(to_torch_state_dict(opts["default"], target=adamw))
        if t == 3:  # torch -> ours
            opts["muon"].load_state_dict(muon.state_dict())
            opts["default"].load_state_dict(adamw.state_dict())
    for key, opt in opts.items():
        for group, arrays in zip(opt.param_groups, opt.params):
            by_name.update(zip(group["param_names"], arrays))
    for n, x in tensors.items():
        _check(n, np.asarray(by_name[n]), x.detach().numpy(), hidden)
    with pytest.raises(ValueError, match=r"param group 0: its params were listed by param_groups.plan in JAX's order"):
        to_torch_state_dict(opts["muon"])  # a positional export would guess
    sd = to_torch_state_dict(opts["muon"], target=muon)
    theirs = muon.state_dict()
    assert [g["param_names"] for g in sd["param_groups"]] == [g["param_names"] for g in theirs["param_groups"]]
    assert {i: sorted(s) for i, s in sd["state"].items()} == {i: sorted(s) for i, s in theirs["state"].items()}


# ------------------------------------------------ timm's create_optimizer_v2: Muon's flags, Lamb's one clip
def _timm_model():
    torch.manual_seed(0)
    block = torch.nn.Module()
    block.fc1, block.norm, block.fc2 = torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 8)
    model = torch.nn.Module()
    model.embed, model.blocks, model.head = torch.nn.Embedding(12, 8), torch.nn.ModuleList([block]), torch.nn.Linear(8, 3)
    return model.double()


def _timm_run(timm_models, kwargs, steps=5, scale=1.0):
    """timm's `create_optimizer_v2(model, **kwargs)` and ours in both views (the functional
    `param_groups.create_optimizer`, the class `optim.create_optimizer_v2`) on one model's named
    params and the same float64 gradients (times `scale`); the three params after each step."""
    _, _, factory = timm_models
    model = _timm_model()
    theirs = factory.create_optimizer_v2(model, **kwargs)
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        named = [(n, jnp.asarray(p.detach().numpy())) for n, p in model.named_parameters()]
        tx = pg.create_optimizer(named, **kwargs)
        opt = grouping.create_optimizer_v2(named, **kwargs)
        ours = dict(named)
        state = tx.init(ours)
        step = jax.jit(tx.update)
        for _ in range(steps):
            grads = {n: scale * rng.standard_normal(p.shape) for n, p in named}
            for n, p in model.named_parameters():
                p.grad = torch.tensor(grads[n])
            theirs.step()
            updates, state = step({n: jnp.asarray(g) for n, g in grads.items()}, state, ours)
            ours = ol.apply_updates(ours, updates)
            opt.zero_grad()
            opt.backward([[jnp.asarray(grads[n]) for n in group["param_names"]] for group in opt.param_groups])
            opt.step()
            by_name = {n: a for group, arrays in zip(opt.param_groups, opt.params)
                       for n, a in zip(group["param_names"], arrays)}
            for n, p in model.named_parameters():
                want = p.detach().numpy()
                np.testing.assert_allclose(np.asarray(ours[n]), want, rtol=1e-12, atol=1e-15, err_msg=f"functional {n}")
                np.testing.assert_allclose(np.asarray(by_name[n]), want, rtol=1e-12, atol=1e-15, err_msg=f"class {n}")
    return theirs, opt


@pytest.mark.parametrize("algo", ["muon", "adamuon"])
def test_timm_muon_fallback_list_routes_as_timm(timm_models, algo):
    """timm's `fallback_list` marks groups `use_fallback`: timm's Muon trains their matrices
    (here the embedding and the head) with its AdamW fallback, in both views, as timm does."""
    kwargs = dict(opt=algo, lr=0.02, weight_decay=0.1, fallback_list=["embed.*", "head.*"])
    theirs, opt = _timm_run(timm_models, kwargs)
    assert any(g.get("use_fallback") for g in opt.param_groups)
    assert [bool(g.get("use_fallback")) for g in opt.param_groups] == [bool(g.get("use_fallback"))
                                                                      for g in theirs.param_groups]
    sd = opt.state_dict()
    names = [n for g in sd["param_groups"] for n in g["param_names"]]
    ids = [i for g in sd["param_groups"] for i in g["params"]]
    muon = {names[ids.index(i)] for i, s in sd["state"].items() if s["use_muon"]}
    assert muon == {"blocks.0.fc1.weight", "blocks.0.fc2.weight"}  # not embed/head, matrices that fall back


def test_timm_muon_group_flags(timm_models):
    """`use_muon=True` forces Muon on a matrix the shape rule would leave to the fallback (3 x 8
    has a side below 4), `use_muon=False` the fallback on one it would take; a group flag edited
    after a param's state exists is refused naming the group, and the state is kept."""
    muon_cls = import_reference_module("timm.optim.muon").Muon
    model = _timm_model()
    named = dict(model.named_parameters())
    # a present None reads as timm's `if` reads it: False, the fallback (embed.weight would take Muon)
    groups = lambda get: [{"params": [get("head.weight")], "use_muon": True},
                          {"params": [get("blocks.0.fc1.weight")], "use_muon": False},
                          {"params": [get("blocks.0.fc2.weight")]},
                          {"params": [get("embed.weight")], "use_muon": None}]
    theirs = muon_cls(groups(named.__getitem__), lr=0.02, weight_decay=0.1)
    order = ["head.weight", "blocks.0.fc1.weight", "blocks.0.fc2.weight", "embed.weight"]
    with jax.enable_x64(True):
        start = {n: jnp.asarray(p.detach().numpy()) for n, p in named.items()}
        opt = optim.TimmMuon(groups(start.__getitem__), lr=0.02, weight_decay=0.1)
        plan = pg.plan_from_groups(groups(lambda n: (n, start[n])), "timm_muon", lr=0.02, weight_decay=0.1)
        tx = pg.plan_transform(plan)  # the functional view of the same groups
        functional = {n: jnp.asarray(named[n].detach().numpy()) for n in order}  # (the class donates start's)
        state = tx.init(functional)
        rng = np.random.default_rng(2)
        for _ in range(4):
            grads = {n: rng.standard_normal(named[n].shape) for n in order}
            for n in order:
                named[n].grad = torch.tensor(grads[n])
            theirs.step()
            opt.zero_grad()
            opt.backward([[jnp.asarray(grads[n])] for n in order])
            opt.step()
            updates, state = tx.update({n: jnp.asarray(grads[n]) for n in order}, state, functional)
            functional = ol.apply_updates(functional, updates)
        for n, (got,) in zip(order, opt.params):
            want = named[n].detach().numpy()
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-15, err_msg=n)
            np.testing.assert_allclose(np.asarray(functional[n]), want, rtol=1e-12, atol=1e-15, err_msg=f"functional {n}")
        assert [bool(s["use_muon"]) for s in opt.state_dict()["state"].values()] == [True, False, True, False]
        # timm's own state holds the group's None as embed.weight's `use_muon`: it loads as the
        # fallback its `if` reads (it was refused as a missing key), and the next steps agree
        saved = theirs.state_dict()
        assert [s["use_muon"] for s in saved["state"].values()] == [True, False, True, None]
        resumed = optim.TimmMuon(groups(lambda n: jnp.asarray(named[n].detach().numpy())), lr=0.02,
                                 weight_decay=0.1)
        resumed.load_state_dict(saved)
        for _ in range(2):
            grads = {n: rng.standard_normal(named[n].shape) for n in order}
            for n in order:
                named[n].grad = torch.tensor(grads[n])
            theirs.step()
            for o in (opt, resumed):
                o.zero_grad()
                o.backward([[jnp.asarray(grads[n])] for n in order])
                o.step()
        for n, (got,), (again,) in zip(order, opt.params, resumed.params):
            for x, what in ((got, n), (again, f"resumed {n}")):
                np.testing.assert_allclose(np.asarray(x), named[n].detach().numpy(), rtol=1e-12, atol=1e-15,
                                           err_msg=what)
        before = opt.state_dict()
        opt.param_groups[1]["use_muon"] = True
        opt.backward([[jnp.asarray(grads[n])] for n in order])
        with pytest.raises(ValueError, match=r"param group 1: the edited option\(s\) \['use_muon'\]"):
            opt.step()
        after = opt.state_dict()
        for i in before["state"]:
            for k, x in before["state"][i].items():
                np.testing.assert_array_equal(np.asarray(after["state"][i][k]), np.asarray(x))
    with pytest.raises(AssertionError, match="Input must be 2D or 3D, got 1D"):
        optim.TimmMuon([{"params": [jnp.ones(5)], "use_muon": True}])


@pytest.mark.parametrize("opt", ["lamb", "lookahead_lamb"])
def test_lamb_clips_over_every_group_in_both_views(timm_models, opt):
    """timm's Lamb clips the gradients of all its param groups by one global norm: so do the
    functional `param_groups.create_optimizer` (its groups share `cross_group_transform`, also
    under timm's Lookahead) and the class, over timm's two weight-decay groups, with gradients
    large enough that the clip binds."""
    _timm_run(timm_models, dict(opt=opt, lr=1e-2, weight_decay=0.1, max_grad_norm=0.5), scale=3.0)
    plan = pg.plan_from_groups(pg.param_groups_weight_decay(
        [(n, jnp.zeros(p.shape)) for n, p in _timm_model().named_parameters()], weight_decay=0.1), "lamb")
    assert len(plan.groups) == 2 and pg.cross_group_transform(plan) is not None
