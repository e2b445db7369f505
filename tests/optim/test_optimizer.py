"""optax_like.optim (the stateful adapter) against live torch.optim: every method."""

import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
import optax_like.optim as optim
from optax_like import registry
from optax_like.optim import optimizer as om
from tests.optim.trace_count import clear_step_cache, step_traces
from tests.parity.harness import TOLERANCE, assert_close, make_problem

SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, dampening=0.3, maximize=True),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
]
ADAM_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.01, betas=(0.8, 0.9999), eps=1e-6, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True, maximize=True),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
]


def _torch_run(cls, kwargs, params_np, grads_np):
    tp = [torch.tensor(p, requires_grad=True) for p in params_np]
    opt = getattr(torch.optim, cls)(tp, foreach=False, **kwargs)
    return tp, opt


def _feed(tp, grads):
    for p, g in zip(tp, grads):
        p.grad = None if g is None else torch.tensor(g)


@pytest.mark.parametrize("cls, config", [("SGD", c) for c in SGD_CONFIGS] + [("Adam", c) for c in ADAM_CONFIGS], ids=str)
def test_backward_step_matches_torch(cls, config, parity_dtype):
    params_np, grads_np = make_problem(parity_dtype, steps=30)
    tp, topt = _torch_run(cls, config, params_np, grads_np)
    opt = getattr(optim, cls)([jnp.asarray(p) for p in params_np], **config)
    for t, grads in enumerate(grads_np):
        _feed(tp, grads)
        topt.step()
        opt.zero_grad()
        opt.backward([jnp.asarray(g) for g in grads])
        opt.step()
        assert_close(opt.params, tp, parity_dtype, t + 1)
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert ours["state"].keys() == theirs["state"].keys()
    for i, entry in theirs["state"].items():
        assert ours["state"][i].keys() == entry.keys()
        for key, value in entry.items():
            np.testing.assert_allclose(np.asarray(ours["state"][i][key]), value.numpy(),
                                       rtol=TOLERANCE[parity_dtype] * 10, atol=1e-30)
    drop = lambda groups: [{k: v for k, v in g.items() if k != "foreach"} for g in groups]
    assert drop(ours["param_groups"]) == drop(theirs["param_groups"])  # torch ran foreach=False


def test_float32_state_stays_within_few_ulps_of_torch():
    """Hyperparameters travel with float64 `1 - beta`: exp_avg_sq matches, not just params."""
    params_np, grads_np = make_problem("float32", steps=50)
    tp, topt = _torch_run("Adam", dict(lr=0.01, betas=(0.8, 0.9999)), params_np, grads_np)
    opt = optim.Adam([jnp.asarray(p) for p in params_np], lr=0.01, betas=(0.8, 0.9999))
    for grads in grads_np:
        _feed(tp, grads)
        topt.step()
        opt.grad = [jnp.asarray(g) for g in grads]
        opt.step()
    for i, entry in topt.state_dict()["state"].items():
        ours = np.asarray(opt.state[i]["exp_avg_sq"])
        rel = np.max(np.abs(ours - entry["exp_avg_sq"].numpy()) / np.abs(entry["exp_avg_sq"].numpy()))
        assert rel < 2e-6, rel  # without precise 1 - beta2: 1.7e-4


def test_closure_step_returns_loss_and_matches_torch():
    rng = np.random.default_rng(1)
    w0, x, y = rng.standard_normal((3, 2)), rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    tw = torch.tensor(w0, dtype=torch.float32, requires_grad=True)
    topt = torch.optim.Adam([tw], lr=0.05)
    opt = optim.Adam({"w": jnp.asarray(w0, jnp.float32)}, lr=0.05)

    def loss_fn(params, x, y):
        return jnp.mean((x @ params["w"] - y) ** 2)

    tx, ty = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(20):
        def closure():
            topt.zero_grad()
            loss = ((tx @ tw - ty) ** 2).mean()
            loss.backward()
            return loss

        tloss = topt.step(closure)
        loss = opt.step(loss_fn, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
        np.testing.assert_allclose(float(loss), float(tloss.detach()), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(opt.params["w"]), tw.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_missing_gradient_skips_leaf_and_accumulation_adds():
    params_np, grads_np = make_problem("float32", steps=6)
    tp, topt = _torch_run("Adam", dict(lr=0.1), params_np, grads_np)
    opt = optim.Adam([jnp.asarray(p) for p in params_np], lr=0.1)
    for t, grads in enumerate(grads_np):
        grads = [None if (t + i) % 3 == 0 else g for i, g in enumerate(grads)]
        _feed(tp, grads)
        if t == 2:  # a second backward accumulates
            for p, g in zip(tp, grads):
                if g is not None:
                    p.grad += torch.tensor(g)
        topt.step()
        opt.zero_grad()
        opt.backward([None if g is None else jnp.asarray(g) for g in grads])
        if t == 2:
            opt.backward([None if g is None else jnp.asarray(g) for g in grads])
        opt.step()
        assert_close(opt.params, tp, "float32", t + 1)
    ts = topt.state_dict()["state"]
    assert {i: float(e["step"]) for i, e in ts.items()} == {i: float(e["step"]) for i, e in opt.state.items()}


@pytest.mark.parametrize("cls, kwargs", [
    ("Adam", dict(lr=0.1, weight_decay=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1)),
])
def test_closure_step_skips_a_param_the_loss_does_not_reach_as_torch(cls, kwargs, x64):
    """torch's closure begins with `zero_grad()` (set_to_none): a param outside the loss's graph
    (unused, or read through `detach()`) keeps `grad is None` and is skipped: no decay, no
    momentum, no state until a step reaches it. `step(closure)` gives it no gradient either.
    Two closures alternate, one reaching `b`, one not (its `stop_gradient` is torch's detach)."""
    rng = np.random.default_rng(3)
    a0, b0, x = (rng.standard_normal(s) for s in ((3, 2), (4,), (5, 3)))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a0, b0))
    topt = getattr(torch.optim, cls)([ta, tb], foreach=False, **kwargs)
    opt = getattr(optim, cls)([jnp.asarray(a0), jnp.asarray(b0)], **kwargs)
    tx = torch.tensor(x)

    def only_a(p, x):
        return jnp.sum(jnp.tanh(x @ p[0]) ** 2) + jnp.sum(jax.lax.stop_gradient(p[1]))

    def both(p, x):
        return jnp.sum(jnp.tanh(x @ p[0]) ** 2) + jnp.sum(jnp.sin(p[1]))

    for step, reach_b in enumerate([False, False, True, False, True]):
        def closure():
            topt.zero_grad()
            value = torch.sum(torch.tanh(tx @ ta) ** 2)
            value = value + (torch.sum(torch.sin(tb)) if reach_b else torch.sum(tb.detach()))
            value.backward()
            return value

        theirs = topt.step(closure)
        ours = opt.step(both if reach_b else only_a, jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-12)
        for got, want in zip(opt.params, (ta, tb)):
            np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), rtol=1e-12, atol=1e-15)
        ts, os_ = topt.state_dict()["state"], opt.state_dict()["state"]
        assert {i for i, e in os_.items() if e} == set(ts), (step, os_.keys(), ts.keys())
        for i, entry in ts.items():
            for key, value in entry.items():
                np.testing.assert_allclose(np.asarray(os_[i][key]), np.asarray(value), rtol=1e-12, atol=1e-15,
                                           err_msg=f"step {step} param {i} {key}")
    np.testing.assert_array_equal(np.asarray(opt.params[1]) != b0, True)  # reached at steps 2 and 4


def test_zero_grad_set_to_none_false_steps_with_zero_gradient():
    params_np, grads_np = make_problem("float32", steps=2)
    tp, topt = _torch_run("SGD", dict(lr=0.1, weight_decay=0.5), params_np, grads_np)
    opt = optim.SGD([jnp.asarray(p) for p in params_np], lr=0.1, weight_decay=0.5)
    _feed(tp, grads_np[0])
    opt.backward([jnp.asarray(g) for g in grads_np[0]])
    for o in (topt, opt):
        o.step()
        o.zero_grad(set_to_none=False)
        o.step()  # zero gradient: weight decay still applies
    assert_close(opt.params, tp, "float32", 2)
    assert all(np.all(np.asarray(g) == 0) for g in opt.grad)


def test_per_group_hyperparameters_with_one_model_tree():
    rng = np.random.default_rng(2)
    model = {"base": {"w": jnp.asarray(rng.standard_normal((3, 3)), jnp.float32)},
             "classifier": {"w": jnp.asarray(rng.standard_normal((3, 2)), jnp.float32)},
             "frozen": jnp.asarray(rng.standard_normal((3,)), jnp.float32)}
    init = jax.tree.map(np.array, model)
    tb = torch.tensor(init["base"]["w"], requires_grad=True)
    tc = torch.tensor(init["classifier"]["w"], requires_grad=True)
    tf = torch.tensor(init["frozen"])
    topt = torch.optim.SGD([{"params": [tb]}, {"params": [tc], "lr": 1e-3}], lr=1e-2, momentum=0.9)
    opt = optim.SGD([{"params": model["base"]}, {"params": model["classifier"], "lr": 1e-3}],
                    lr=1e-2, momentum=0.9, model=model)
    x = jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)

    def loss_fn(m, x):
        return jnp.sum(jnp.tanh((x + m["frozen"]) @ m["base"]["w"]) @ m["classifier"]["w"])

    tx = torch.tensor(np.asarray(x))
    for _ in range(10):
        topt.zero_grad()
        tloss = (torch.tanh((tx + tf) @ tb) @ tc).sum()
        tloss.backward()
        topt.step()
        loss = opt.step(loss_fn, x)
        np.testing.assert_allclose(float(loss), float(tloss.detach()), rtol=1e-5)
    params = opt.params
    assert params["frozen"] is model["frozen"]
    np.testing.assert_allclose(np.asarray(params["classifier"]["w"]), tc.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(params["base"]["w"]), tb.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-3]
    assert [g["params"] for g in opt.state_dict()["param_groups"]] == [[0], [1]]
    assert opt.param_groups[0]["params"][0] is opt.params["base"]["w"]  # live params, as torch


def test_model_groups_reject_foreign_and_duplicate_leaves():
    model = {"a": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="is not a leaf of `model`"):
        optim.SGD([{"params": jnp.ones(2)}], model=model)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": model["a"]}, {"params": [model["a"]]}], model=model)


def test_lr_edits_do_not_recompile_and_match_torch():
    params_np, grads_np = make_problem("float32", steps=12)
    tp, topt = _torch_run("Adam", dict(lr=0.1), params_np, grads_np)
    opt = optim.Adam([jnp.asarray(p) for p in params_np], lr=0.1)
    traces = None
    for t, grads in enumerate(grads_np):
        for o in (topt, opt):
            for group in o.param_groups:
                group["lr"] = 0.1 * 0.9**t
                group["betas"] = (0.9 - 0.01 * t, 0.999)
                group["weight_decay"] = 0.01 * (t + 1)  # (0 -> nonzero: a compile-time switch, one recompile)
        _feed(tp, grads)
        topt.step()
        opt.grad = [jnp.asarray(g) for g in grads]
        opt.step()
        if t == 0:
            traces = step_traces()
        assert_close(opt.params, tp, "float32", t + 1)
    assert step_traces() == traces


def test_add_param_group_recompiles_once_and_matches_torch():
    params_np, grads_np = make_problem("float32", steps=8)
    tp, topt = _torch_run("SGD", dict(lr=0.1, momentum=0.9), params_np[:2], None)
    opt = optim.SGD([jnp.asarray(p) for p in params_np[:2]], lr=0.1, momentum=0.9)
    extra = torch.tensor(params_np[2], requires_grad=True)
    for t, grads in enumerate(grads_np):
        if t == 3:
            topt.add_param_group({"params": extra, "lr": 0.01, "momentum": 0.8})
            opt.add_param_group({"params": jnp.asarray(params_np[2]), "lr": 0.01, "momentum": 0.8})
            before = step_traces()
        _feed(tp, grads[:2])
        if t >= 3:
            extra.grad = torch.tensor(grads[2])
        topt.step()
        if t < 3:
            opt.grad = [jnp.asarray(g) for g in grads[:2]]
        else:
            opt.grad = [[jnp.asarray(g) for g in grads[:2]], jnp.asarray(grads[2])]
        opt.step()
    assert step_traces() == before + 1
    assert_close([*opt.params[0], opt.params[1]], [*tp, extra], "float32", 8)
    drop = lambda groups: [{k: v for k, v in g.items() if k != "foreach"} for g in groups]
    assert drop(opt.state_dict()["param_groups"]) == drop(topt.state_dict()["param_groups"])


def test_momentum_crossing_zero_matches_torch():
    params_np, grads_np = make_problem("float32", steps=6)
    tp, topt = _torch_run("SGD", dict(lr=0.1), params_np, None)
    opt = optim.SGD([jnp.asarray(p) for p in params_np], lr=0.1)
    assert opt.state == {}  # momentum 0: no buffer, as torch
    for t, grads in enumerate(grads_np):
        if t == 2:
            for o in (topt, opt):
                o.param_groups[0]["momentum"] = 0.9
        _feed(tp, grads)
        topt.step()
        opt.grad = [jnp.asarray(g) for g in grads]
        opt.step()
        assert_close(opt.params, tp, "float32", t + 1)


@pytest.mark.parametrize("cls", ["Adam", "AdamW", "SGD"])
def test_weight_decay_crossing_zero_recompiles_once_and_matches_torch(cls):
    """weight_decay == 0 drops the decay pass from the compiled step; setting it later compiles
    once more and then follows torch."""
    params_np, grads_np = make_problem("float32", steps=6)
    tp, topt = _torch_run(cls, dict(lr=0.1, weight_decay=0.0), params_np, None)
    opt = getattr(optim, cls)([jnp.asarray(p) for p in params_np], lr=0.1, weight_decay=0.0)
    traces = []
    assert "weight_decay" in opt._groups[0].spec.zero_structural  # the decay block is compiled out
    for t, grads in enumerate(grads_np):
        if t == 3:
            for o in (topt, opt):
                o.param_groups[0]["weight_decay"] = 0.05
        if t == 5:
            opt.param_groups[0]["weight_decay"] = topt.param_groups[0]["weight_decay"] = 0.07
        _feed(tp, grads)
        topt.step()
        opt.grad = [jnp.asarray(g) for g in grads]
        opt.step()
        traces.append(step_traces())
        assert_close(opt.params, tp, "float32", t + 1)
    assert "weight_decay" not in opt._groups[0].spec.zero_structural
    # At most one compilation when crossing zero (none if an identical step was compiled
    # before in this process: jit's cache is global), none for edits on either side of it.
    assert traces[2] == traces[0] and traces[3] - traces[2] <= 1 and traces[5] == traces[3]


def test_hooks_run_in_torch_order_and_remove():
    def record(log, name, fn=None):
        def hook(*args):
            log.append(name)
            return fn(*args) if fn else None
        return hook

    def drive(module, opt, log, step):
        handles = [
            module.register_optimizer_step_pre_hook(record(log, "global_pre")),
            module.register_optimizer_step_post_hook(record(log, "global_post")),
            opt.register_step_pre_hook(record(log, "pre")),
            opt.register_step_post_hook(record(log, "post")),
            opt.register_state_dict_pre_hook(record(log, "sd_pre")),
            opt.register_state_dict_pre_hook(record(log, "sd_pre_first"), prepend=True),
            opt.register_state_dict_post_hook(record(log, "sd_post")),
            opt.register_load_state_dict_pre_hook(record(log, "load_pre")),
            opt.register_load_state_dict_post_hook(record(log, "load_post")),
        ]
        step()
        opt.load_state_dict(opt.state_dict())
        for h in handles:
            h.remove()
        step()
        opt.state_dict()

    tlog, log = [], []
    tp = [torch.zeros(2, requires_grad=True)]
    topt = torch.optim.SGD(tp, lr=0.1)
    drive(importlib.import_module("torch.optim.optimizer"), topt, tlog, topt.step)
    opt = optim.SGD([jnp.zeros(2)], lr=0.1)
    drive(om, opt, log, opt.step)
    assert log == tlog


def test_step_pre_hook_can_replace_arguments():
    opt = optim.SGD({"w": jnp.ones(2)}, lr=0.5)
    opt.register_step_pre_hook(lambda o, args, kwargs: ((lambda p: jnp.sum(p["w"] ** 2),), {}))
    opt.step(lambda p: 0.0)
    np.testing.assert_allclose(np.asarray(opt.params["w"]), [0.0, 0.0])


def test_state_dict_round_trip_continues_identically():
    params_np, grads_np = make_problem("float32", steps=10)
    a = optim.Adam([jnp.asarray(p) for p in params_np], lr=0.05, amsgrad=True)
    for grads in grads_np[:5]:
        a.grad = [jnp.asarray(g) for g in grads]
        a.step()
    saved = a.state_dict()
    b = optim.Adam([jnp.array(p) for p in a.params], lr=0.9)
    b.load_state_dict(saved)
    assert b.param_groups[0]["lr"] == 0.05
    for grads in grads_np[5:]:
        for o in (a, b):
            o.grad = [jnp.asarray(g) for g in grads]
            o.step()
    for x, y in zip(a.params, b.params):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("mutate, message", [
    (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])),
     "loaded state dict has a different number of parameter groups"),
    (lambda sd: sd["param_groups"][0].update(params=[0, 1]),
     "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"),
    (lambda sd: sd["state"][2].update(exp_avg=np.ones((7,), np.float32)), "has 'exp_avg' of shape"),
    (lambda sd: sd["state"][1].pop("exp_avg_sq"), "param 1 does not match Adam with these options (missing ['exp_avg_sq']"),
    # SGD-with-momentum's state given to Adam: another optimizer's state.
    (lambda sd: sd["state"].update({i: {"momentum_buffer": np.zeros(np.shape(e["exp_avg"]), np.float32)}
                                    for i, e in sd["state"].items()}),
     "param 0 does not match Adam with these options (missing ['exp_avg', 'exp_avg_sq', 'step']; unexpected ['momentum_buffer']"),
    # amsgrad's extra buffer given to a plain Adam: another configuration's state.
    (lambda sd: sd["state"][0].update(max_exp_avg_sq=sd["state"][0]["exp_avg_sq"]), "unexpected ['max_exp_avg_sq']"),
    (lambda sd: sd["state"][1].update(exp_avg="corrupt"), "has 'exp_avg' of shape ()"),
])
def test_load_errors_match_torch_and_leave_state_untouched(mutate, message):
    params_np, grads_np = make_problem("float32", steps=2)
    opt = optim.Adam([jnp.asarray(p) for p in params_np], lr=0.05)
    opt.grad = [jnp.asarray(g) for g in grads_np[0]]
    opt.step()
    before = jax.tree.map(np.asarray, opt.state_dict())
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = 123.0
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"] * 0
    mutate(sd)
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.load_state_dict(sd)
    after = jax.tree.map(np.asarray, opt.state_dict())
    assert after["param_groups"] == before["param_groups"]
    jax.tree.map(np.testing.assert_array_equal, after["state"], before["state"])
    if "different number" in message:  # torch raises the same message for the same dict
        tp = [torch.tensor(p) for p in params_np]
        topt = torch.optim.Adam(tp, lr=0.05)
        with pytest.raises(ValueError, match=message):
            topt.load_state_dict({"state": {}, "param_groups": [dict(params=[0, 1, 2]), dict(params=[])]})


@pytest.mark.parametrize("cls, kwargs", [
    ("SGD", dict(lr=-1.0)), ("SGD", dict(momentum=-0.5)), ("SGD", dict(nesterov=True)),
    ("Adam", dict(betas=(1.0, 0.999))), ("Adam", dict(eps=-1.0)), ("Adam", dict(weight_decay=-1)),
])
def test_constructor_errors_match_torch(cls, kwargs):
    with pytest.raises(Exception) as theirs:
        getattr(torch.optim, cls)([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(type(theirs.value), match=str(theirs.value).replace("(", r"\(")):
        getattr(optim, cls)([jnp.zeros(2)], **kwargs)


def test_bad_group_and_param_errors():
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        optim.SGD([])
    opt = optim.SGD([jnp.zeros(2)])
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([jnp.zeros(2)])
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.add_param_group({"params": jnp.zeros(1), "lr": -0.1})
    assert len(opt.param_groups) == 1 and opt.params[0].shape == (2,)


def test_entries_the_optimizer_does_not_take_are_stored_and_ignored_as_torch():
    # torch keeps any key in a group (Rprop with weight_decay; a user's own tag) and its step
    # never reads it: same params as without it, and the key survives state_dict round trips.
    groups = lambda: [{"params": [jnp.ones(3)], "weight_decay": 0.1, "tag": "head"}]
    opt = optim.Rprop(groups(), lr=0.1)
    plain = optim.Rprop([jnp.ones(3)], lr=0.1)
    t = torch.ones(3, requires_grad=True)
    topt = torch.optim.Rprop([{"params": [t], "weight_decay": 0.1, "tag": "head"}], lr=0.1)
    for grad in (np.array([1.0, -2.0, 3.0]), np.array([0.5, 2.0, -3.0])):
        opt.backward([[jnp.asarray(grad, jnp.float32)]])  # the list of group trees
        plain.backward([jnp.asarray(grad, jnp.float32)])
        t.grad = torch.tensor(grad, dtype=torch.float32)
        opt.step(), plain.step(), topt.step()
    np.testing.assert_array_equal(opt.params[0][0], plain.params[0])
    np.testing.assert_allclose(opt.params[0][0], t.detach().numpy(), rtol=1e-6)
    assert opt.param_groups[0]["tag"] == "head" and opt.state_dict()["param_groups"][0]["weight_decay"] == 0.1
    fresh = optim.Rprop([jnp.ones(3)], lr=0.1)
    fresh.load_state_dict(topt.state_dict())  # torch's extra keys load as torch's load keeps them
    assert fresh.param_groups[0]["tag"] == "head"


def _snapshot(opt):
    return jax.tree.map(np.array, (opt.params, [group.state for group in opt._groups]))


def test_nonfinite_gradients_propagate_like_torch_by_default():
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    opt = optim.Adam(params, lr=0.1)
    bad = {"w": jnp.array([1.0, jnp.nan, 0.0]), "b": jnp.ones(2)}
    opt.backward(bad)
    opt.step()
    tp = [torch.ones(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    topt = torch.optim.Adam(tp, lr=0.1)
    tp[0].grad, tp[1].grad = torch.tensor([1.0, float("nan"), 0.0]), torch.ones(2)
    topt.step()
    # nan where torch has nan, the same numbers elsewhere (float32: 1 ulp).
    np.testing.assert_allclose(np.asarray(opt.params["w"]), tp[0].detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(opt.params["b"]), tp[1].detach().numpy(), rtol=1e-6)
    assert np.isnan(np.asarray(opt.params["w"])[1])
    assert int(opt.skipped_steps) == 0


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_skip_nonfinite_keeps_params_and_state_and_counts(bad_value):
    params = [{"params": {"w": jnp.ones(3)}}, {"params": {"b": jnp.zeros(2)}, "lr": 0.01}]
    opt = optim.Adam(params, lr=0.1, skip_nonfinite=True)
    reference = optim.Adam([{"params": {"w": jnp.ones(3)}}, {"params": {"b": jnp.zeros(2)}, "lr": 0.01}], lr=0.1)
    good = [{"w": jnp.full(3, 0.5)}, {"b": jnp.ones(2)}]
    for o in (opt, reference):
        o.backward(good)
        o.step()
        o.zero_grad()
    before = _snapshot(opt)
    # A non-finite value in ONE group skips the whole step (all groups), like GradScaler.
    opt.backward([{"w": jnp.full(3, 0.5)}, {"b": jnp.array([1.0, bad_value])}])
    opt.step()
    opt.zero_grad()
    jax.tree.map(np.testing.assert_array_equal, _snapshot(opt), before)
    assert int(opt.skipped_steps) == 1
    assert opt.state_dict()["state"][0]["step"] == 1  # torch's per-param step not incremented
    # The next finite step continues exactly as a run that never saw the bad gradient.
    for o in (opt, reference):
        o.backward(good)
        o.step()
    jax.tree.map(np.testing.assert_array_equal, _snapshot(opt), _snapshot(reference))
    assert int(opt.skipped_steps) == 1


def test_skip_nonfinite_with_a_param_without_gradient_follows_torch():
    """A None gradient splits the per-param steps while the skipped branch keeps the old state:
    both sides of the step's cond must agree (they did not, once)."""
    params_np, grads_np = make_problem("float32", steps=4)
    tp, topt = _torch_run("Adam", dict(lr=0.1), params_np, None)
    opt = optim.Adam([jnp.asarray(p) for p in params_np], lr=0.1, skip_nonfinite=True)
    for t, grads in enumerate(grads_np):
        grads = [None, *grads[1:]]
        if t == 2:
            grads[1] = np.full_like(grads[1], np.nan)  # skipped: torch is not stepped
        else:
            _feed(tp, grads)
            topt.step()
        opt.grad = [None if g is None else jnp.asarray(g) for g in grads]
        opt.step()
    assert int(opt.skipped_steps) == 1
    assert_close(opt.params, tp, "float32", 4)
    assert [int(s["step"]) for s in opt.state_dict()["state"].values()] == [3, 3]


def test_skip_nonfinite_with_closure_and_toggle():
    opt = optim.SGD({"w": jnp.ones(2)}, lr=0.1, momentum=0.9, skip_nonfinite=True)
    loss = lambda p, scale: jnp.sum(p["w"] * scale)
    opt.step(loss, jnp.array([1.0, 2.0]))
    kept = np.array(opt.params["w"])
    opt.step(loss, jnp.array([jnp.inf, 2.0]))
    np.testing.assert_array_equal(np.asarray(opt.params["w"]), kept)
    assert int(opt.skipped_steps) == 1
    opt.skip_nonfinite = False  # recompiles once; nan now flows in as in torch
    opt.step(loss, jnp.array([jnp.nan, 2.0]))
    assert np.isnan(np.asarray(opt.params["w"])[0])
    assert int(opt.skipped_steps) == 1


def test_loaded_torch_state_does_not_alias_torch_memory():
    tp = [torch.ones(4, requires_grad=True)]
    topt = torch.optim.Adam(tp, lr=0.1)
    tp[0].grad = torch.full((4,), 0.5)
    topt.step()
    opt = optim.Adam([jnp.ones(4)], lr=0.1)
    opt.load_state_dict(topt.state_dict())
    loaded = np.array(opt.state[0]["exp_avg"])
    topt.step()  # torch updates its exp_avg in place; ours must not move
    np.testing.assert_array_equal(np.asarray(opt.state[0]["exp_avg"]), loaded)


def test_model_mode_group_with_none_leaf_keeps_model_leaves():
    model = {"a": jnp.ones(2), "b": jnp.zeros(3)}
    opt = optim.SGD({"a": model["a"], "skip": None}, lr=0.5, model=model)
    opt.step(lambda m: jnp.sum(m["a"]) + jnp.sum(m["b"]))
    np.testing.assert_allclose(np.asarray(opt.params["a"]), [0.5, 0.5])
    np.testing.assert_array_equal(np.asarray(opt.params["b"]), np.zeros(3))


_SKIP_NONFINITE_CLASSES = [n for n in optim.__all__ if n[0].isupper() and n not in (
    "Optimizer", "RemovableHandle", "LBFGS", "Lookahead", "ScheduleFreeWrapper",
    "Adahessian")]  # (wrappers: their own tests; Adahessian steps on a loss: tests/optim/test_adahessian.py)


# every third class by default (the mechanism is the adapter's, shared by all), all of them under slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if i % 3 == 0 else (pytest.mark.slow,))
                                  for i, n in enumerate(_SKIP_NONFINITE_CLASSES)])
def test_skip_nonfinite_works_for_every_class(name):
    params = {"w": jnp.ones((3, 2)), "v": jnp.full((2, 2), 0.5)}
    opt = registry.by_class(name).new_adapter(jax.tree.map(jnp.copy, params), skip_nonfinite=True)

    def grads(value):
        g = {"w": jnp.full((3, 2), value), "v": jnp.full((2, 2), 0.25)}
        if name == "SparseAdam":
            return {k: ol.RowSparseGrad(jnp.arange(x.shape[0]), x) for k, x in g.items()}
        return g

    opt.backward(grads(0.5))
    opt.step()
    opt.zero_grad()
    before = _snapshot(opt)
    opt.backward(grads(jnp.nan))
    opt.step()
    opt.zero_grad()
    jax.tree.map(np.testing.assert_array_equal, _snapshot(opt), before)
    assert int(opt.skipped_steps) == 1
    opt.backward(grads(0.5))
    opt.step()
    assert int(opt.skipped_steps) == 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(opt.params))


def test_loaded_equal_steps_keep_the_compiled_step_and_unequal_steps_follow_torch():
    """Per-param steps stay in the shared form while equal (core.leaf_scalars.LeafScalars): loading a
    torch state whose steps are all equal reuses the compiled step; unequal steps (a param
    skipped a step) use the per-param form, compiled once, and follow torch."""
    clear_step_cache()  # count this test's compiles only (other tests share shapes)
    params_np, grads_np = make_problem("float32", steps=8)
    tp, topt = _torch_run("Adam", dict(lr=0.1), params_np, None)
    for grads in grads_np[:3]:
        _feed(tp, grads)
        topt.step()
    opt = optim.Adam([jnp.asarray(p) for p in params_np], lr=0.1)
    opt.grad = [jnp.asarray(g) for g in grads_np[0]]
    opt.step()  # compiles the step for the fresh (shared) state
    traces = step_traces()
    opt.params = [jnp.asarray(p.detach().numpy()) for p in tp]
    opt.load_state_dict(topt.state_dict())  # torch's equal steps (and its `foreach: False` group)
    for grads in grads_np[3:5]:
        _feed(tp, grads)
        topt.step()
        opt.grad = [jnp.asarray(g) for g in grads]
        opt.step()
    assert step_traces() == traces
    assert_close(opt.params, tp, "float32", 5)
    # Both skip the first param once: its step lags, the steps split into the per-param form.
    skip = [None, *grads_np[5][1:]]
    _feed(tp, skip)
    topt.step()
    opt.grad = [None if g is None else jnp.asarray(g) for g in skip]
    opt.step()
    assert step_traces() == traces + 1
    assert [int(s["step"]) for s in opt.state_dict()["state"].values()] == [5, 6, 6]
    # A fresh optimizer (shared form) loads torch's unequal steps and follows torch.
    fresh = optim.Adam([jnp.asarray(p.detach().numpy()) for p in tp], lr=0.1)
    fresh.load_state_dict(topt.state_dict())
    for grads in grads_np[6:]:
        _feed(tp, grads)
        topt.step()
        for o in (opt, fresh):
            o.grad = [jnp.asarray(g) for g in grads]
            o.step()
    # one more compile: full gradients with the per-param form (`fresh` reuses it)
    assert step_traces() == traces + 2
    for o in (opt, fresh):
        assert_close(o.params, tp, "float32", 8)
        assert [int(s["step"]) for s in o.state_dict()["state"].values()] == [7, 8, 8]
