"""optax_like.optim.LBFGS (the stateful class) against live torch.optim.LBFGS.

Float64 runs (scoped `x64`) compare params and returned losses to 1e-8 relative (floor 1, as
tests/parity/test_lbfgs.py: L-BFGS amplifies summation-order ulps over many iterations) and the
iteration/evaluation counts exactly. Params are a two-leaf dict so that torch's layout (the whole
state under the first param id) is exercised.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like.optim as optim
from tests.optim.trace_count import step_traces
from optax_like.optimizers.lbfgs import PARAM_GROUPS_ERROR

RTOL = 1e-8
X0 = np.random.default_rng(1).uniform(-1.5, 1.5, 6)
CONFIGS = [
    dict(history_size=3, lr=0.2),
    dict(history_size=3, line_search_fn="strong_wolfe"),
]


def _rosenbrock(x, lib):
    return lib.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def loss_fn(params):
    """Ours: params {'a': x[:2], 'b': x[2:]} (leaf order a, b = torch's param order)."""
    return _rosenbrock(jnp.concatenate([params["a"], params["b"]]), jnp)


def _torch(kwargs, x=X0):
    tp = [torch.tensor(x[:2].copy(), requires_grad=True), torch.tensor(x[2:].copy(), requires_grad=True)]
    # named, as ours are (a dict's keys): both state dicts carry param_names, loads map by name
    opt = torch.optim.LBFGS([("a", tp[0]), ("b", tp[1])], **kwargs)

    def closure():
        opt.zero_grad()
        loss = _rosenbrock(torch.cat(tp), torch)
        loss.backward()
        return loss

    return tp, opt, closure


def _ours(kwargs, x=X0, **extra):
    return optim.LBFGS({"a": jnp.asarray(x[:2]), "b": jnp.asarray(x[2:])}, **kwargs, **extra)


def _flat(opt):
    return np.concatenate([np.asarray(opt.params["a"]), np.asarray(opt.params["b"])])


def _np(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _step_both(opt, topt, tp, closure, where):
    tloss = float(topt.step(closure))
    loss = opt.step(loss_fn)
    assert isinstance(loss, jax.Array) and loss.shape == () and loss.dtype == jnp.float64
    assert abs(float(loss) - tloss) <= RTOL * (abs(tloss) + 1), where
    theirs = torch.cat(tp).detach().numpy()
    err = np.max(np.abs(_flat(opt) - theirs) / (np.abs(theirs) + 1))
    assert err <= RTOL, f"{where}: params relative error {err:.2e}"
    ours_state, torch_state = opt.state[0], topt.state[tp[0]]
    assert (ours_state["n_iter"], ours_state["func_evals"]) == (torch_state["n_iter"], torch_state["func_evals"]), where
    return loss


def assert_state_dicts_match(ours, theirs, rtol=1e-6):
    assert ours["param_groups"] == theirs["param_groups"]
    assert ours["state"].keys() == theirs["state"].keys()
    for pid, entry in theirs["state"].items():
        mine = ours["state"][pid]
        assert mine.keys() == entry.keys(), (sorted(mine), sorted(entry))
        for key, value in entry.items():
            if key in ("func_evals", "n_iter"):
                assert type(mine[key]) is int and mine[key] == value, key
            elif isinstance(value, list):
                assert len(mine[key]) == len(value), key
                for a, b in zip(mine[key], value):
                    assert (a is None) == (b is None), key
                    if b is not None:
                        np.testing.assert_allclose(_np(a), _np(b), rtol=rtol, atol=rtol, err_msg=key)
            else:
                np.testing.assert_allclose(_np(mine[key]), _np(value), rtol=rtol, atol=rtol, err_msg=key)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_steps_match_torch_and_state_dict_is_torchs(config, x64):
    tp, topt, closure = _torch(config)
    opt = _ours(config)
    assert opt.state == {} and opt.state_dict()["state"] == {} == topt.state_dict()["state"]
    losses = [_step_both(opt, topt, tp, closure, f"{config} step {k + 1}") for k in range(4)]
    assert all(np.isfinite(float(x)) for x in losses)  # earlier losses survive donation
    assert opt.state[0]["n_iter"] >= 40
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert list(ours["state"]) == [0] and ours["param_groups"][0]["params"] == [0, 1]
    assert_state_dicts_match(ours, theirs)
    # state_dict returns copies: stepping does not touch (or invalidate) them.
    d = np.asarray(ours["state"][0]["d"]).copy()
    opt.step(loss_fn)
    np.testing.assert_array_equal(np.asarray(ours["state"][0]["d"]), d)


def test_early_return_and_first_step_layouts_match_torch(x64):
    """tolerance_grad reached at the first evaluation: torch keeps only the counters; a step
    that breaks in its first iteration (no descent) has `d`, ... but no `al` yet."""
    # (same compile-time options as CONFIGS[0]: only traced values differ, so no recompile)
    for extra, steps in ((dict(tolerance_grad=1e6), 2), (dict(tolerance_change=1e6), 1)):
        config = dict(CONFIGS[0], **extra)
        tp, topt, closure = _torch(config)
        opt = _ours(config)
        for k in range(steps):
            _step_both(opt, topt, tp, closure, f"{config} step {k + 1}")
        assert_state_dicts_match(opt.state_dict(), topt.state_dict())


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_loads_torch_state_dict_and_continues_like_torch(config, x64):
    tp, topt, closure = _torch(config)
    for _ in range(2):
        topt.step(closure)
    now = torch.cat(tp).detach().numpy().copy()
    opt = _ours(config, x=now)
    opt.load_state_dict(topt.state_dict())
    assert_state_dicts_match(opt.state_dict(), topt.state_dict())
    for k in range(2):
        _step_both(opt, topt, tp, closure, f"{config} after load, step {k + 1}")
    assert_state_dicts_match(opt.state_dict(), topt.state_dict())


def test_own_round_trip_continues_identically(x64):
    config = CONFIGS[1]
    opt = _ours(config)
    for _ in range(2):
        opt.step(loss_fn)
    saved, saved_params = opt.state_dict(), _flat(opt)
    twin = _ours(config, x=saved_params)
    twin.load_state_dict(saved)
    for _ in range(2):
        a, b = opt.step(loss_fn), twin.step(loss_fn)
        assert float(a) == float(b)
    np.testing.assert_array_equal(_flat(opt), _flat(twin))
    assert opt.state[0]["func_evals"] == twin.state[0]["func_evals"]


def _snapshot(opt):
    return [np.asarray(x).copy() for x in jax.tree.leaves([group.state for group in opt._groups])], repr(opt.param_groups)


@pytest.mark.parametrize("corrupt, error, match", [
    (lambda s: s["state"][0].__setitem__("d", np.zeros(5)), ValueError, "'d' has shape"),
    (lambda s: s["state"][0]["old_stps"].pop(), ValueError, "same length"),
    (lambda s: s["state"][0].pop("H_diag"), ValueError, "lacks"),
    (lambda s: s["state"][0].__setitem__("bogus", 1.0), ValueError, "unknown entries"),
    (lambda s: s["state"].__setitem__(1, {"func_evals": 3}), ValueError, "under the first param"),
    (lambda s: s["state"][0].__setitem__("n_iter", -2), ValueError, "non-negative integer"),
    (lambda s: s["state"][0]["ro"].__setitem__(0, np.zeros(3)), ValueError, "must be a scalar"),
    (lambda s: s["param_groups"][0]["params"].pop(), ValueError, "doesn't match the size"),
    (lambda s: s["param_groups"].append(dict(s["param_groups"][0])), ValueError, "different number of parameter groups"),
])
def test_load_state_dict_is_atomic(corrupt, error, match, x64):
    opt = _ours(CONFIGS[1])
    opt.step(loss_fn)
    opt.step(loss_fn)
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = 0.5  # would change if the load went through
    corrupt(sd)
    before = _snapshot(opt)
    with pytest.raises(error, match=match):
        opt.load_state_dict(sd)
    after = _snapshot(opt)
    assert before[1] == after[1]
    assert len(before[0]) == len(after[0])
    for a, b in zip(*[before[0], after[0]]):
        np.testing.assert_array_equal(a, b)


def test_history_size_shrink_keeps_newest_pairs(x64):
    opt = _ours(CONFIGS[0])
    opt.step(loss_fn)
    sd = opt.state_dict()
    assert len(sd["state"][0]["old_dirs"]) == 3
    sd["param_groups"][0]["history_size"] = 2
    twin = _ours(CONFIGS[0], x=_flat(opt))
    twin.load_state_dict(sd)
    loaded = twin.state[0]
    for key in ("old_dirs", "old_stps", "ro"):
        assert len(loaded[key]) == 2
        for a, b in zip(loaded[key], sd["state"][0][key][1:]):  # the newest two, oldest first
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(loaded["al"]), np.asarray(sd["state"][0]["al"][1:]))
    opt.param_groups[0]["history_size"] = 2  # the same through a group edit (one recompile)
    for o in (opt, twin):
        o.step(loss_fn)
    np.testing.assert_array_equal(_flat(opt), _flat(twin))
    assert len(opt.state[0]["old_dirs"]) == 2 and len(opt.state[0]["al"]) == 2


def test_lr_edit_is_traced_and_max_iter_edit_recompiles_once(x64):
    config = dict(history_size=3, lr=0.2)
    tp, topt, closure = _torch(config)
    opt = _ours(config)
    _step_both(opt, topt, tp, closure, "step 1")
    traces = step_traces()
    for k, lr in enumerate((0.1, 0.05, 0.3)):
        for o in (opt, topt):
            o.param_groups[0]["lr"] = lr
        _step_both(opt, topt, tp, closure, f"lr={lr} step {k + 2}")
    for o in (opt, topt):
        o.param_groups[0]["tolerance_change"] = 1e-7
    _step_both(opt, topt, tp, closure, "tolerance_change edit")
    assert step_traces() == traces  # traced hyperparameters: no recompile
    for o in (opt, topt):
        o.param_groups[0]["max_iter"] = 5
    _step_both(opt, topt, tp, closure, "max_iter=5")
    _step_both(opt, topt, tp, closure, "max_iter=5 again")
    assert step_traces() == traces + 1  # static: one recompile, state carried over


def test_construction_errors_match_torch():
    p = torch.zeros(3, requires_grad=True)
    cases = [dict(lr=-0.5), dict(lr=-1)]
    for kwargs in cases:
        with pytest.raises(ValueError) as theirs:
            torch.optim.LBFGS([p], **kwargs)
        with pytest.raises(ValueError) as ours:
            optim.LBFGS([jnp.zeros(3)], **kwargs)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError) as theirs:
        torch.optim.LBFGS([p], lr=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError) as ours:
        optim.LBFGS([jnp.zeros(3)], lr=jnp.asarray([1.0, 2.0]))
    assert str(ours.value) == str(theirs.value) == "Tensor lr must be 1-element"
    with pytest.raises(ValueError) as theirs:
        torch.optim.LBFGS([{"params": [p]}, {"params": [torch.zeros(2, requires_grad=True)]}])
    with pytest.raises(ValueError) as ours:
        optim.LBFGS([{"params": [jnp.zeros(3)]}, {"params": [jnp.zeros(2)]}])
    assert str(ours.value) == str(theirs.value) == PARAM_GROUPS_ERROR
    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        optim.LBFGS([jnp.zeros(3)], line_search_fn="wolfe")  # torch: at the first step
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.LBFGS([])


def test_add_param_group_and_missing_closure_errors():
    p = torch.zeros(3, requires_grad=True)
    topt = torch.optim.LBFGS([p])
    opt = optim.LBFGS([jnp.ones(3)])
    groups = repr(opt.param_groups)
    with pytest.raises(ValueError, match=r"LBFGS doesn't support per-parameter options \(parameter groups\)"):
        opt.add_param_group({"params": [jnp.zeros(2)]})
    assert repr(opt.param_groups) == groups and len(opt.params) == 1
    for args in ((None,), ()):
        with pytest.raises(TypeError) as theirs:
            topt.step(*args)
        with pytest.raises(TypeError) as ours:
            opt.step(*args)
        assert str(ours.value) == str(theirs.value)
    assert opt.state == {}
    loss = opt.step(lambda ps: jnp.sum((ps[0] - 2.0) ** 2))
    assert float(loss) == 3.0 and np.allclose(np.asarray(opt.params[0]), 2.0, atol=1e-5)


def test_hooks_fire_in_torchs_order_and_may_replace_args():
    calls = []
    opt = optim.LBFGS({"w": jnp.zeros(2)}, max_iter=5)
    scale = jnp.asarray([1.0, 3.0])

    def closure(params, target):
        return jnp.sum(scale * (params["w"] - target) ** 2)

    def pre(o, args, kwargs):
        calls.append("pre")
        assert o is opt
        return (args[0], jnp.asarray(1.0)), kwargs  # replaces the target

    handles = [
        optim.register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global_pre")),
        opt.register_step_pre_hook(pre),
        opt.register_step_post_hook(lambda o, a, k: calls.append("post")),
        optim.register_optimizer_step_post_hook(lambda o, a, k: calls.append("global_post")),
    ]
    try:
        loss = opt.step(closure, jnp.asarray(-1.0))
    finally:
        for h in handles:
            h.remove()
    assert calls == ["global_pre", "pre", "post", "global_post"]
    assert float(loss) == pytest.approx(4.0)  # the loss at the start, with the hook's target
    np.testing.assert_allclose(np.asarray(opt.params["w"]), 1.0, atol=1e-3)  # target 1, not -1
    opt.step(closure, jnp.asarray(-1.0))
    assert len(calls) == 4  # removed


def test_group_list_and_model_spellings_match_the_tree_spelling():
    rng = np.random.default_rng(0)
    w, b, c = rng.standard_normal(3), rng.standard_normal(2), rng.standard_normal(2)

    def tree_loss(tree, c):
        return jnp.sum((tree["w"] - 0.5) ** 2 * (1 + tree["w"] ** 2)) + jnp.sum((tree["b"] - c) ** 2)

    def groups_loss(groups, c):
        return tree_loss(groups[0], c)

    def model_loss(model):
        return tree_loss(model, model["c"])

    kwargs = dict(lr=0.5, max_iter=8, history_size=4)
    plain = optim.LBFGS({"b": jnp.asarray(b), "w": jnp.asarray(w)}, **kwargs)
    listed = optim.LBFGS([{"params": {"b": jnp.asarray(b), "w": jnp.asarray(w)}, "lr": 0.5}], **kwargs)
    model = {"b": jnp.asarray(b), "w": jnp.asarray(w), "c": jnp.asarray(c)}
    with_model = optim.LBFGS({"b": model["b"], "w": model["w"]}, model=model, **kwargs)
    for _ in range(2):
        l1 = plain.step(tree_loss, jnp.asarray(c))
        l2 = listed.step(groups_loss, jnp.asarray(c))
        l3 = with_model.step(model_loss)
        np.testing.assert_allclose([float(l2), float(l3)], float(l1), rtol=1e-6)
    for got in (listed.params[0], with_model.params):
        for k in ("b", "w"):
            np.testing.assert_allclose(np.asarray(got[k]), np.asarray(plain.params[k]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(with_model.params["c"]), c.astype(np.float32))  # frozen
    assert with_model.state[0]["n_iter"] == plain.state[0]["n_iter"] == 16
    assert list(with_model.state_dict()["state"]) == [0]
