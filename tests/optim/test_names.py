"""Param names, ids and groups of the optim adapter against torch 2.13 (optim/_names.py and the
Optimizer's group handling): named params, param_names, duplicates, live group params, loading
a state by name, and `step`'s (loss, aux)."""

import copy
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like
from optax_like import optim


def test_named_parameters_spells_torch_names():
    tree = {"layer": [{"weight": jnp.ones(2), "bias": None}], "10.weight": jnp.zeros(1)}
    assert [n for n, _ in optim.named_parameters(tree)] == ["10.weight", "layer.0.weight"]
    assert [n for n, _ in optim.named_parameters(tree["layer"], prefix="layer")] == ["layer.0.weight"]


def _torch_and_ours(named: bool):
    rng = np.random.default_rng(0)
    values = {"fc.weight": rng.standard_normal((3, 2)), "fc.bias": rng.standard_normal(3)}
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
    params = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
    if named:
        return list(tparams.items()), list(params.items())
    return list(tparams.values()), list(params.values())


def test_named_params_state_dict_is_torchs():
    tnamed, named = _torch_and_ours(True)
    topt = torch.optim.SGD(tnamed, lr=0.1, momentum=0.9)
    opt = optim.SGD(named, lr=0.1, momentum=0.9)
    ours, theirs = opt.state_dict()["param_groups"], topt.state_dict()["param_groups"]
    assert [list(g) for g in ours] == [list(g) for g in theirs]  # torch's key order
    assert ours == theirs
    assert opt.param_groups[0]["param_names"] == ["fc.weight", "fc.bias"]
    assert repr(opt) == repr(topt)


def test_named_groups_and_torchs_errors_for_mixing():
    (tw, tb), (w, b) = [[p for _, p in pairs] for pairs in (_torch_and_ours(True)[0], _torch_and_ours(True)[1])]
    cases = [
        (lambda P, Q: [("w", P), Q]),  # some names missing
        (lambda P, Q: [{"params": [("w", P)]}, {"params": [Q]}]),  # a group without names
        (lambda P, Q: [{"params": [P]}, {"params": [("b", Q)]}]),  # a group with names
    ]
    for make in cases:
        with pytest.raises(ValueError) as theirs:
            torch.optim.SGD(make(tw, tb), lr=0.1)
        with pytest.raises(ValueError) as ours:
            optim.SGD(make(w, b), lr=0.1)
        assert str(ours.value) == str(theirs.value)
    topt, opt = torch.optim.SGD([("w", tw)], lr=0.1), optim.SGD([("w", w)], lr=0.1)
    with pytest.raises(ValueError) as theirs:
        topt.add_param_group({"params": [tb]})
    with pytest.raises(ValueError) as ours:
        opt.add_param_group({"params": [b]})
    assert str(ours.value) == str(theirs.value)
    opt.add_param_group({"params": [("b", b)], "lr": 0.5})
    topt.add_param_group({"params": [("b", tb)], "lr": 0.5})
    assert opt.state_dict()["param_groups"] == topt.state_dict()["param_groups"]


def test_no_decay_groups_by_name_with_model():
    params = {"encoder": {"weight": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "norm": {"weight": jnp.ones(2)}}
    no_decay = ("bias", "norm.weight")
    named = list(optim.named_parameters(params))
    groups = [
        {"params": [(n, p) for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": 0.5},
        {"params": [(n, p) for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    opt = optim.AdamW(groups, lr=0.1, model=params)
    assert [g["param_names"] for g in opt.param_groups] == [["encoder.weight"], ["encoder.bias", "norm.weight"]]
    opt.step(lambda m: jnp.sum(m["encoder"]["weight"]) * 0 + jnp.sum(m["norm"]["weight"]) * 0)
    # Zero gradients: only the decayed group moved (AdamW's decoupled decay).
    assert float(opt.params["encoder"]["weight"][0, 0]) == pytest.approx(1 - 0.1 * 0.5)
    assert float(opt.params["encoder"]["bias"][0]) == 1.0


def test_one_array_twice_in_a_group_warns_as_torch_and_steps():
    z = jnp.zeros(3)
    t = torch.zeros(3, requires_grad=True)
    with pytest.warns(UserWarning) as theirs:
        torch.optim.SGD([t, t], lr=0.1)
    with pytest.warns(UserWarning) as ours:
        opt = optim.SGD({"a": z, "b": z, "c": z}, lr=0.1)
    assert [str(w.message) for w in ours] == [str(theirs[0].message)]
    opt.step(lambda p: jnp.sum(p["a"]) + 2 * jnp.sum(p["b"]) + 3 * jnp.sum(p["c"]))
    np.testing.assert_allclose(np.asarray(opt.params["c"]), -0.3 * np.ones(3), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(opt.params["a"]), -0.1 * np.ones(3), rtol=1e-6)


def test_one_array_in_two_groups_is_torchs_value_error():
    z, t = jnp.zeros(3), torch.zeros(3, requires_grad=True)
    message = "some parameters appear in more than one parameter group"
    with pytest.raises(ValueError, match=message):
        torch.optim.SGD([{"params": [t]}, {"params": [t]}], lr=0.1)
    with pytest.raises(ValueError, match=message):
        optim.SGD([{"params": [z]}, {"params": {"again": z}}], lr=0.1)
    opt = optim.SGD([z], lr=0.1)
    with pytest.raises(ValueError, match=message):
        opt.add_param_group({"params": [z]})
    opt.step(lambda p: jnp.sum(p[0]))
    current = opt.params[0]
    with pytest.raises(ValueError, match=message):
        opt.add_param_group({"params": [current]})  # the live array after a step
    with pytest.raises(ValueError, match=message):
        opt.add_param_group({"params": [z]})  # the (donated) original
    assert len(opt.param_groups) == 1


def test_live_group_params_are_the_current_arrays_in_torch_order():
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((4, 3)), rng.standard_normal(4)
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    topt = torch.optim.SGD([{"params": [tw, tb], "lr": 0.1}], momentum=0.5)
    opt = optim.SGD([{"params": [jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)], "lr": 0.1}], momentum=0.5)
    group, tgroup = opt.param_groups[0], topt.param_groups[0]
    assert list(group) == list(tgroup)  # params first, then torch's order
    assert sum(p.size for p in group["params"]) == sum(p.numel() for p in tgroup["params"]) == 16
    opt.step(lambda groups: jnp.sum(groups[0][0] ** 2) + jnp.sum(groups[0][1]))
    assert group["params"][0] is opt.params[0][0]
    assert len(group["params"]) == 2 and opt.state_dict()["param_groups"][0]["params"] == [0, 1]


def _torch_sequential():
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(2, 2, dtype=torch.float64) if i % 2 == 0 else torch.nn.Tanh()
                                 for i in range(11)])


def _torch_state(model, named: bool):
    topt = torch.optim.SGD(model.named_parameters() if named else model.parameters(), lr=0.1, momentum=0.9)
    for scale in range(1, 4):
        topt.zero_grad()
        for i, p in enumerate(model.parameters()):
            p.grad = torch.full_like(p, float(i + 1) * scale)
        topt.step()
    return topt


def test_a_torch_state_lands_on_its_params_by_name_or_is_refused(x64):
    model = _torch_sequential()
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in model.state_dict().items()}
    assert list(jax.tree.leaves(params)) and list(params)[:2] == ["0.weight", "0.bias"]
    # Without names torch's registration order and JAX's sorted order disagree: refused.
    unnamed = _torch_state(model, named=False).state_dict()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"param_names.*named_parameters"):
        opt.load_state_dict(unnamed)
    # With torch's param_names the state is matched by name.
    named = _torch_state(model, named=True).state_dict()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    opt.load_state_dict(named)
    by_name = dict(zip(named["param_groups"][0]["param_names"], named["param_groups"][0]["params"]))
    ours = opt.state_dict()
    our_names = [n for n, _ in optim.named_parameters(params)]
    for pid, name in zip(ours["param_groups"][0]["params"], our_names):
        np.testing.assert_array_equal(np.asarray(ours["state"][pid]["momentum_buffer"]),
                                      named["state"][by_name[name]]["momentum_buffer"].numpy())
    # The fix the message names: add the names, in torch's order.
    for group in unnamed["param_groups"]:
        group["param_names"] = [n for n, _ in model.named_parameters()]
    opt2 = optim.SGD(params, lr=0.1, momentum=0.9)
    opt2.load_state_dict(unnamed)
    for a, b in zip(jax.tree.leaves(opt2.state_dict()["state"]), jax.tree.leaves(ours["state"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_own_round_trip_of_an_unsorted_dict_keeps_names(x64):
    params = {"2.weight": jnp.ones(2), "10.weight": jnp.full(3, 2.0)}
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    opt.step(lambda p: jnp.sum(p["2.weight"]) + 3 * jnp.sum(p["10.weight"]))
    saved = opt.state_dict()
    assert saved["param_groups"][0]["param_names"] == ["10.weight", "2.weight"]
    fresh = optim.SGD({"2.weight": jnp.ones(2), "10.weight": jnp.full(3, 2.0)}, lr=0.1, momentum=0.9)
    fresh.load_state_dict(saved)
    np.testing.assert_array_equal(np.asarray(fresh.state[0]["momentum_buffer"]), 3 * np.ones(3))


def test_named_state_with_other_names_is_refused():
    opt = optim.SGD([("a", jnp.ones(2))], lr=0.1, momentum=0.9)
    saved = opt.state_dict()
    saved["param_groups"][0]["param_names"] = ["b"]
    with pytest.raises(ValueError, match="cannot be matched to the params by name"):
        opt.load_state_dict(saved)


def test_import_optax_like_reaches_optim():
    assert optax_like.optim.Adam is optim.Adam


def _metric_loss(params, x):
    logits = x @ params["w"]
    return jnp.mean(logits ** 2), {"logits": logits, "acc": jnp.mean(logits > 0)}


@pytest.mark.parametrize("cls, kwargs", [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(lr=0.01)),
                                         (optim.LBFGS, dict(lr=0.5, max_iter=5))])
def test_step_returns_loss_and_aux_of_the_same_evaluation(cls, kwargs):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 2)).astype(np.float32)
    x = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)
    opt = cls({"w": jnp.asarray(w)}, **kwargs)
    plain = cls({"w": jnp.asarray(w)}, **kwargs)
    for _ in range(2):
        before = jnp.copy(opt.params["w"])
        loss, aux = opt.step(_metric_loss, x)
        ref_loss, ref_aux = _metric_loss({"w": before}, x)
        np.testing.assert_allclose(np.asarray(loss), np.asarray(ref_loss), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(aux["logits"]), np.asarray(ref_aux["logits"]), rtol=1e-6)
        plain_loss = plain.step(lambda p, x: _metric_loss(p, x)[0], x)
        assert not isinstance(plain_loss, tuple)
        np.testing.assert_array_equal(np.asarray(plain_loss), np.asarray(loss))
    np.testing.assert_array_equal(np.asarray(opt.params["w"]), np.asarray(plain.params["w"]))


def test_interop_loading_has_the_same_guarantees(x64):
    from optax_like.interop.torch import load_torch_state_dict, to_torch_state_dict

    model = _torch_sequential()
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in model.state_dict().items()}
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="param_names"):
        load_torch_state_dict(opt, _torch_state(model, named=False).state_dict())
    named = _torch_state(model, named=True)
    load_torch_state_dict(opt, named.state_dict())
    # Back to torch: our ids follow JAX's order and torch loads positionally; without a target the
    # conversion refuses (the order is ambiguous), with one it renumbers by name.
    with pytest.raises(ValueError):
        to_torch_state_dict(opt)
    back = to_torch_state_dict(opt, target=model)
    index = dict(zip(back["param_groups"][0]["param_names"], back["param_groups"][0]["params"]))
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(back["state"][index[name]]["momentum_buffer"].numpy(),
                                      named.state[p]["momentum_buffer"].numpy())


def test_model_leaf_listed_twice_in_a_group_warns_and_is_optimized_once():
    model = {"a": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = optim.SGD([{"params": [model["a"], model["a"]]}], lr=0.5, model=model)
    assert len(opt.param_groups[0]["params"]) == 1
    opt.step(lambda m: jnp.sum(m["a"]) + jnp.sum(m["b"]))
    np.testing.assert_array_equal(np.asarray(opt.params["a"]), [0.5, 0.5])
    np.testing.assert_array_equal(np.asarray(opt.params["b"]), [1.0, 1.0, 1.0])  # frozen


def test_deepcopy_of_an_optimizer_keeps_its_own_live_groups():
    import copy

    opt = optim.SGD({"w": jnp.ones(2)}, lr=0.1, momentum=0.9)
    opt.step(lambda p: jnp.sum(p["w"]))
    clone = copy.deepcopy(opt)
    clone.step(lambda p: jnp.sum(p["w"]))
    np.testing.assert_allclose(np.asarray(opt.params["w"]), [0.9, 0.9], rtol=1e-6)
    assert clone.param_groups[0]["params"][0] is clone.params["w"]
    assert isinstance(copy.deepcopy(opt.param_groups)[0]["params"], list)  # copies of the arrays, as torch


class _TinyEncoder(torch.nn.Module):
    """A BERT-like stack: 12 layers (`encoder.layer.10` sorts before `encoder.layer.2`), equal
    shapes across layers (a misplaced state would fit), LayerNorms, frozen embeddings."""

    def __init__(self, layers=12, width=4):
        super().__init__()
        torch.manual_seed(0)
        self.embeddings = torch.nn.Embedding(7, width)
        self.layer = torch.nn.ModuleList(
            torch.nn.ModuleDict({"dense": torch.nn.Linear(width, width), "LayerNorm": torch.nn.LayerNorm(width)})
            for _ in range(layers))
        self.embeddings.weight.requires_grad_(False)
        self.double()


_NO_DECAY = ("bias", "LayerNorm.weight")


def _hf_groups(pairs, named):
    """Hugging Face Trainer's two AdamW groups from (name, param) pairs: bare params or named."""
    item = (lambda n, p: (n, p)) if named else (lambda n, p: p)
    return [
        {"params": [item(n, p) for n, p in pairs if not any(nd in n for nd in _NO_DECAY)], "weight_decay": 0.01},
        {"params": [item(n, p) for n, p in pairs if any(nd in n for nd in _NO_DECAY)], "weight_decay": 0.0},
    ]


def _torch_hf_run(model, steps):
    pairs = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    topt = torch.optim.AdamW(_hf_groups(pairs, named=False), lr=0.01)
    rng = np.random.default_rng(3)
    grads = [{n: rng.standard_normal(tuple(p.shape)) for n, p in pairs} for _ in range(steps)]
    return topt, pairs, grads


def _torch_hf_step(pairs, topt, grads):
    for n, p in pairs:
        p.grad = torch.from_numpy(grads[n].copy())
    topt.step()


@pytest.mark.parametrize("spelling", ["bare", "named"])
def test_hf_fine_tune_resumes_from_an_unnamed_torch_state_exactly_or_not_at_all(spelling, x64):
    # The silent wrong resume: HF's groups built from bare params save no param_names;
    # ours, built the README's way (optim.named_parameters over the params dict, model=), list
    # the params in JAX's sorted order. By position, 22 of 36 params took another's moments.
    from optax_like.interop.torch import load_torch_state_dict

    model = _TinyEncoder()
    topt, pairs, grads = _torch_hf_run(model, 3)
    _torch_hf_step(pairs, topt, grads[0])
    saved = copy.deepcopy(topt.state_dict())
    assert all("param_names" not in g for g in saved["param_groups"])
    params = {n: jnp.asarray(p.detach().numpy()) for n, p in model.named_parameters()}
    trainable = {n: params[n] for n, _ in pairs}
    groups = _hf_groups(list(optim.named_parameters(trainable)), named=spelling == "named")
    opt = optim.AdamW(groups, lr=0.01, model=params)
    before = opt.state_dict()
    for load in (opt.load_state_dict, lambda sd: load_torch_state_dict(opt, sd)):
        with pytest.raises(ValueError, match=r"group 0.*JAX's order.*source=model"):
            load(saved)
        after = opt.state_dict()
        assert after["state"] == {} and after["param_groups"] == before["param_groups"]
    load_torch_state_dict(opt, saved, source=model)
    for g in grads[1:]:
        _torch_hf_step(pairs, topt, g)
        opt.zero_grad()
        opt.backward({n: (jnp.asarray(g[n]) if n in g else None) for n in params})
        opt.step()
    for n, p in pairs:
        np.testing.assert_allclose(np.asarray(opt.params[n]), p.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_params_listed_by_the_user_load_by_position_as_torch(x64):
    # torch's contract for unnamed states: the order the params were listed in. A list in the
    # model's registration order (dict insertion order here) loads and continues exactly.
    model = _TinyEncoder(layers=3)
    topt, pairs, grads = _torch_hf_run(model, 2)
    _torch_hf_step(pairs, topt, grads[0])
    saved = copy.deepcopy(topt.state_dict())
    params = {n: jnp.asarray(p.detach().numpy()) for n, p in model.named_parameters() if p.requires_grad}
    opt = optim.AdamW(_hf_groups(list(params.items()), named=False), lr=0.01)
    from optax_like.interop.torch import load_torch_state_dict

    load_torch_state_dict(opt, saved)
    _torch_hf_step(pairs, topt, grads[1])
    groups = _hf_groups(list(params.items()), named=True)
    opt.backward([[jnp.asarray(grads[1][n]) for n, _ in group["params"]] for group in groups])
    opt.step()
    ours = [leaf for group in opt.params for leaf in group]
    theirs = [p for group in topt.param_groups for p in group["params"]]
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(a), t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_loading_names_into_an_unnamed_optimizer_keeps_them_as_torch():
    # torch keeps a loaded group's param_names (and then counts the optimizer as named).
    opt = optim.SGD([jnp.ones(2), jnp.ones(3)], lr=0.1, momentum=0.9)
    t = [torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)]
    topt = torch.optim.SGD([("w", t[0]), ("b", t[1])], lr=0.1, momentum=0.9)
    opt.load_state_dict(topt.state_dict())
    assert opt.param_groups[0]["param_names"] == ["w", "b"]
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["w", "b"]


def test_adamw_loading_adams_state_keeps_decoupled_weight_decay():
    t = torch.ones(2, requires_grad=True)
    adam = torch.optim.Adam([t], lr=0.1)
    opt = optim.AdamW([jnp.ones(2)], lr=0.1)
    opt.load_state_dict(adam.state_dict())
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


def test_complex_params_get_torchs_numbers_in_every_path(x64):
    # torch's z.grad is dL/dx + i dL/dy; jax.grad returns its conjugate. step(loss_fn) and
    # backward(optax_like.grad(...)) give torch's numbers; the functional core takes torch's.
    z0 = np.array([1 + 1j, -0.5 + 2j])
    loss = lambda ps: jnp.sum(jnp.abs(ps[0] - 0.3j) ** 2 + jnp.real(ps[0]) ** 3)
    t = torch.tensor(z0, requires_grad=True)
    topt = torch.optim.Adam([t], lr=0.1)
    ours_step = optim.Adam([jnp.asarray(z0)], lr=0.1)
    ours_backward = optim.Adam([jnp.asarray(z0)], lr=0.1)
    tx = optax_like.adam(lr=0.1)
    params = [jnp.asarray(z0)]
    state = tx.init(params)
    for _ in range(3):
        topt.zero_grad()
        (torch.sum(torch.abs(t - 0.3j) ** 2 + t.real ** 3)).backward()
        topt.step()
        ours_step.step(loss)
        ours_backward.zero_grad()
        ours_backward.backward(optax_like.grad(loss)(ours_backward.params))
        ours_backward.step()
        updates, state = tx.update(optax_like.grad(loss)(params), state, params)
        params = optax_like.apply_updates(params, updates)
    for ours in (ours_step.params[0], ours_backward.params[0], params[0]):
        np.testing.assert_allclose(np.asarray(ours), t.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(optax_like.grad(loss)(params)[0]),
                                  np.conj(np.asarray(jax.grad(loss)(params)[0])))


def test_a_reused_donated_array_names_the_optimizer_and_the_fix():
    params = {"w": jnp.ones(3)}
    opt = optim.Adam(params, lr=0.1)
    opt.step(lambda p: jnp.sum(p["w"] ** 2))
    with pytest.raises(ValueError, match=r"leaf \['w'\] was donated to a step of the Adam optimizer.*optimizer.params"):
        optim.SGD(params, lr=0.1)
    with pytest.raises(ValueError, match=r"donated to a step of the Adam optimizer"):
        opt.params = params
    other = optim.SGD({"w": jnp.ones(3)}, lr=0.1)
    stale = other.params["w"]
    other.step(lambda p: jnp.sum(p["w"]))
    with pytest.raises(RuntimeError, match=r"Adam.step\(\): Array has been deleted.*donated to an earlier step"):
        opt.step(lambda p, x: jnp.sum(p["w"] * x), stale)
    opt.step(lambda p, x: jnp.sum(p["w"] * x), jnp.ones(3))  # the optimizer is still usable


def test_groups_from_named_parameters_without_model_warn_that_params_is_a_list():
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
    groups = [{"params": [(n, p) for n, p in optim.named_parameters(params) if n.endswith("kernel")]},
              {"params": [(n, p) for n, p in optim.named_parameters(params) if n.endswith("bias")],
               "weight_decay": 0.0}]
    with pytest.warns(UserWarning, match="Pass model=tree"):
        opt = optim.AdamW(groups, lr=0.1)
    assert isinstance(opt.params, list)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = optim.AdamW(groups, lr=0.1, model=params)
    assert set(opt.params["dense"]) == {"kernel", "bias"}
