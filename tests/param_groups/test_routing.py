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
        if t == 1:  # ours -> torch, both optimizers
            muon.load_state_dict(to_torch_state_dict(opts["muon"]))
            adamw.load_state_dict(to_torch_state_dict(opts["default"]))
        if t == 3:  # torch -> ours
            opts["muon"].load_state_dict(muon.state_dict())
            opts["default"].load_state_dict(adamw.state_dict())
    for key, opt in opts.items():
        for group, arrays in zip(opt.param_groups, opt.params):
            by_name.update(zip(group["param_names"], arrays))
    for n, x in tensors.items():
        _check(n, np.asarray(by_name[n]), x.detach().numpy(), hidden)
    sd = to_torch_state_dict(opts["muon"])
    theirs = muon.state_dict()
    assert [g["param_names"] for g in sd["param_groups"]] == [g["param_names"] for g in theirs["param_groups"]]
    assert {i: sorted(s) for i, s in sd["state"].items()} == {i: sorted(s) for i, s in theirs["state"].items()}
