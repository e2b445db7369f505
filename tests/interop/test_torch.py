"""Checkpoints move between torch.optim and optax_like.optim and training continues identically."""

import copy
import io
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like.optim as optim
from optax_like.interop.torch import from_torch_state_dict, load_torch_state_dict, to_torch_state_dict
from tests.parity.harness import assert_close, make_problem


@pytest.mark.parametrize("cls, kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.02, amsgrad=True, weight_decay=0.1)),
])
def test_torch_checkpoint_continues_in_both(cls, kwargs, parity_dtype):
    n, m = 10, 15
    params_np, grads_np = make_problem(parity_dtype, steps=n + m)
    tp = [torch.tensor(p, requires_grad=True) for p in params_np]
    topt = getattr(torch.optim, cls)(tp, foreach=False, **kwargs)
    for grads in grads_np[:n]:
        for p, g in zip(tp, grads):
            p.grad = torch.tensor(g)
        topt.step()
    buffer = io.BytesIO()
    torch.save(topt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    opt = getattr(optim, cls)([jnp.asarray(p.detach().numpy()) for p in tp], lr=123.0)
    load_torch_state_dict(opt, saved)
    assert opt.param_groups[0]["lr"] == kwargs["lr"]
    for t, grads in enumerate(grads_np[n:]):
        for p, g in zip(tp, grads):
            p.grad = torch.tensor(g)
        topt.step()
        opt.grad = [jnp.asarray(g) for g in grads]
        opt.step()
        assert_close(opt.params, tp, parity_dtype, n + t + 1)

    # ... and back: torch resumes from our checkpoint.
    tp2 = [torch.tensor(np.asarray(p), requires_grad=True) for p in opt.params]
    topt2 = getattr(torch.optim, cls)(tp2, foreach=False, lr=123.0)
    topt2.load_state_dict(to_torch_state_dict(opt))
    for o, ps in ((topt, tp), (topt2, tp2)):
        for p, g in zip(ps, grads_np[0]):
            p.grad = torch.tensor(g)
        o.step()
    for a, b in zip(tp, tp2):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6 if parity_dtype == "float32" else 1e-12)


def test_bfloat16_tensors_convert_bit_for_bit_both_ways():
    """from_torch_state_dict keeps bf16/f16 buffers in their dtype (bits unchanged, copies) and
    turns 0-d hyperparameter tensors into numbers; to_torch_state_dict gives them back as torch
    tensors of the same dtype, `step` as a 0-d float32 tensor."""
    values = torch.tensor([1.0, -2.5, 3.140625, 1e-3], dtype=torch.bfloat16)
    sd = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": values.clone(),
                        "exp_avg_sq": values.to(torch.float16)}},
          "param_groups": [{"lr": torch.tensor(0.01), "betas": (0.9, 0.999), "params": [0]}]}
    ours = from_torch_state_dict(sd)
    entry = ours["state"][0]
    assert entry["exp_avg"].dtype == jnp.bfloat16 and entry["exp_avg_sq"].dtype == np.float16
    assert np.array_equal(entry["exp_avg"].view(np.int16), values.view(torch.int16).numpy())
    assert ours["param_groups"][0]["lr"] == pytest.approx(0.01) and isinstance(ours["param_groups"][0]["lr"], float)
    sd["state"][0]["exp_avg"].mul_(2)  # torch's step writes in place: the converted copy keeps its values
    assert float(entry["exp_avg"][1]) == -2.5
    back = to_torch_state_dict(ours)["state"][0]
    assert back["exp_avg"].dtype == torch.bfloat16 and torch.equal(back["exp_avg"], values)
    assert back["exp_avg_sq"].dtype == torch.float16
    assert back["step"].dtype == torch.float32 and back["step"].shape == () and float(back["step"]) == 3.0


def test_lbfgs_checkpoint_continues_in_torch(x64):
    """LBFGS's global state (lists of history tensors, Python numbers) converts element by
    element: torch's LBFGS loads our checkpoint and continues as it continues its own."""
    x0 = np.random.default_rng(1).uniform(-1.5, 1.5, 6)

    def rosenbrock(x, lib):
        return lib.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    opt = optim.LBFGS([jnp.asarray(x0)], history_size=3, lr=0.2)
    for _ in range(3):
        opt.step(lambda params: rosenbrock(params[0], jnp))

    def torch_from(state_dict):
        p = torch.tensor(np.asarray(opt.params[0]), requires_grad=True)
        topt = torch.optim.LBFGS([p], history_size=3, lr=0.2)
        topt.load_state_dict(state_dict)

        def closure():
            topt.zero_grad()
            loss = rosenbrock(p, torch)
            loss.backward()
            return loss

        return p, topt, closure

    saved = to_torch_state_dict(opt)
    assert isinstance(saved["state"][0]["old_dirs"], list)
    p, topt, closure = torch_from(saved)
    topt.step(closure)
    opt.step(lambda params: rosenbrock(params[0], jnp))
    np.testing.assert_allclose(p.detach().numpy(), np.asarray(opt.params[0]), rtol=1e-8, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# Param order: torch loads by position in its registration order; a params dict is numbered in
# JAX's sorted key order ('0.bias' < '0.weight' < '1.bias' < '10.bias' < ... < '2.bias').
_LAYERS, _WIDTH = 11, 3


def _sequential(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(*[torch.nn.Linear(_WIDTH, _WIDTH) for _ in range(_LAYERS)]).double()


def _data():
    rng = np.random.default_rng(3)
    return rng.normal(size=(5, _WIDTH)), rng.normal(size=(5, _WIDTH))


def _torch_loss(model):
    x, y = (torch.tensor(a) for a in _data())
    for layer in model:
        x = torch.tanh(layer(x))
    return ((x - y) ** 2).sum()


def _jax_loss(params):
    x, y = (jnp.asarray(a) for a in _data())
    for i in range(_LAYERS):
        x = jnp.tanh(x @ params[f"{i}.weight"].T + params[f"{i}.bias"])
    return ((x - y) ** 2).sum()


def _params_dict(model, insertion):
    items = [(n, jnp.asarray(p.detach().numpy())) for n, p in model.named_parameters()]
    return dict(sorted(items) if insertion == "sorted" else items)


def _torch_steps(model, topt, n):
    for _ in range(n):
        topt.zero_grad()
        _torch_loss(model).backward()
        topt.step()


def _model_with(params):
    model = _sequential(seed=1)
    model.load_state_dict({n: torch.tensor(np.asarray(params[n])) for n, _ in model.named_parameters()})
    return model


def _assert_models_close(a, b, rtol):
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_allclose(pa.detach().numpy(), pb.detach().numpy(), rtol=rtol, atol=rtol)


def test_sequential_names_sort_differently_from_registration_order():
    names = [n for n, _ in _sequential().named_parameters()]
    assert sorted(names) != names and names.index("2.weight") < names.index("10.weight")
    assert list(_params_dict(_sequential(), "torch")) == names  # the dict keeps insertion order...
    leaves = optim.Adam(_params_dict(_sequential(), "torch")).state_dict()["param_groups"][0]["param_names"]
    assert leaves == sorted(names)  # ...JAX numbers its leaves by sorted key


@pytest.mark.parametrize("target_kind, insertion", [
    ("model", "torch"), ("named_parameters", "sorted"), ("torch_optimizer", "torch"), ("names", "sorted"),
])
def test_adam_dict_state_continues_in_torch_on_the_params_of_the_same_name(target_kind, insertion, x64):
    """Ours (a params dict) -> torch (nn.Sequential of 11 layers) -> continue training in torch ==
    an uninterrupted torch run (float64, 1e-12): every state lands on the param of its name."""
    n, m, kwargs = 4, 3, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)
    reference = _sequential()
    _torch_steps(reference, torch.optim.Adam(reference.parameters(), foreach=False, **kwargs), n + m)

    opt = optim.Adam(_params_dict(_sequential(), insertion), **kwargs)
    for _ in range(n):
        opt.step(_jax_loss)
    model = _model_with(opt.params)
    named = target_kind == "torch_optimizer"
    topt = torch.optim.Adam(model.named_parameters() if named else model.parameters(), foreach=False, lr=0.5)
    target = {"model": model, "named_parameters": model.named_parameters(), "torch_optimizer": topt,
              "names": [name for name, _ in model.named_parameters()]}[target_kind]
    saved = to_torch_state_dict(opt, target=target)
    assert saved["param_groups"][0]["params"] == list(range(2 * _LAYERS))
    topt.load_state_dict(saved)
    assert topt.state[model[10].weight]["exp_avg"].shape == (_WIDTH, _WIDTH)
    assert topt.param_groups[0]["lr"] == 0.01
    _torch_steps(model, topt, m)
    _assert_models_close(model, reference, 1e-12)


def test_to_torch_state_dict_refuses_an_ambiguous_order_and_names_the_fix(x64):
    for insertion in ("torch", "sorted"):  # sorted insertion: no order issue in our dict, still not torch's
        opt = optim.Adam(_params_dict(_sequential(), insertion), lr=0.01)
        opt.step(_jax_loss)
        with pytest.raises(ValueError, match=r"sorted key.*target=model"):
            to_torch_state_dict(opt)
    opt = optim.Adam(_params_dict(_sequential(), "torch"), lr=0.01)
    opt.step(_jax_loss)
    with pytest.raises(ValueError, match="sorted key"):
        to_torch_state_dict(opt.state_dict())  # the optimizer's state_dict declares why
    with pytest.raises(ValueError, match="carries param_names"):
        to_torch_state_dict(dict(opt.state_dict()))  # a saved dict with names: its order is in question
    model = _model_with(opt.params)
    with pytest.raises(ValueError, match="carry no param_names"):
        to_torch_state_dict(opt, target=torch.optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match=r"does not name"):
        to_torch_state_dict(opt, target=[n for n, _ in model.named_parameters()][:-1])
    # The saved dict with its names converts with a target (names only: no tensors needed).
    by_name = to_torch_state_dict(opt.state_dict(), target=model)
    assert by_name["param_groups"][0]["param_names"] == [n for n, _ in model.named_parameters()]
    # A list in torch's order needs no target.
    listed = optim.Adam([jnp.asarray(p.detach().numpy()) for p in model.parameters()], lr=0.01)
    listed.step(lambda ps: sum((p ** 2).sum() for p in ps))
    assert sorted(to_torch_state_dict(listed)["state"]) == list(range(2 * _LAYERS))


def test_torch_state_loads_into_a_params_dict_by_name_with_source(x64):
    """torch (built from model.parameters(): no names saved) -> ours (a dict in sorted order) with
    source=model -> continue in ours == uninterrupted torch (float64, 1e-12)."""
    n, m, kwargs = 3, 3, dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.05)
    reference = _sequential()
    _torch_steps(reference, torch.optim.SGD(reference.parameters(), foreach=False, **kwargs), n + m)
    model = _sequential()
    topt = torch.optim.SGD(model.parameters(), foreach=False, **kwargs)
    _torch_steps(model, topt, n)
    opt = optim.SGD(_params_dict(model, "sorted"), lr=1.0)
    load_torch_state_dict(opt, topt.state_dict(), source=model)
    for _ in range(m):
        opt.step(_jax_loss)
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(np.asarray(opt.params[name]), p.detach().numpy(), rtol=1e-12, atol=1e-12)


def _closure_of(model, topt):
    """torch's LBFGS closure over `model`'s loss."""
    def closure():
        topt.zero_grad()
        loss = _torch_loss(model)
        loss.backward()
        return loss
    return closure


def test_lbfgs_dict_state_is_permuted_to_torch_order_and_continues_in_torch(x64):
    """LBFGS's flat vectors and history follow our leaf order (sorted names): converted with a
    target they are permuted to torch's param order and the entry moves to torch's first param."""
    kwargs = dict(lr=0.5, max_iter=4, history_size=3)
    reference = _sequential()
    ropt = torch.optim.LBFGS(reference.parameters(), **kwargs)


    for _ in range(4):
        ropt.step(_closure_of(reference, ropt))
    opt = optim.LBFGS(_params_dict(_sequential(), "torch"), **kwargs)
    for _ in range(2):
        opt.step(_jax_loss)
    model = _model_with(opt.params)
    topt = torch.optim.LBFGS(model.parameters(), **kwargs)
    saved = to_torch_state_dict(opt, target=model)
    assert list(saved["state"]) == [0]
    topt.load_state_dict(saved)
    for _ in range(2):
        topt.step(_closure_of(model, topt))
    _assert_models_close(model, reference, 1e-10)


def test_torch_save_of_a_state_dict_writes_torchs_format_or_names_the_fix(tmp_path):
    # torch.save(opt.state_dict()) (how 3 of 3 ported scripts save) reads back with
    # torch.load(weights_only=True), loads into torch's optimizer and back into ours.
    opt = optim.Adam([jnp.ones(3), jnp.full(2, 2.0)], lr=0.1)
    opt.step(lambda p: jnp.sum(p[0] ** 2) + jnp.sum(p[1]))
    torch.save({"optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    saved = checkpoint["optimizer"]
    assert isinstance(saved["state"][0]["exp_avg"], torch.Tensor) and saved["state"][0]["step"].dtype == torch.float32
    tparams = [torch.ones(3, requires_grad=True), torch.full((2,), 2.0, requires_grad=True)]
    topt = torch.optim.Adam(tparams, lr=0.1)
    topt.load_state_dict(saved)
    np.testing.assert_array_equal(topt.state[tparams[0]]["exp_avg"].numpy(), np.asarray(opt.state[0]["exp_avg"]))
    opt.load_state_dict(saved)
    # Other pickling keeps the arrays (JAX checkpoints, deepcopy).
    assert isinstance(pickle.loads(pickle.dumps(opt.state_dict()))["state"][0]["exp_avg"], jax.Array)
    # A params dict: torch's order is unknown without a target; torch.save says so and how.
    named = optim.Adam({"b": jnp.ones(2), "a": jnp.ones(3)}, lr=0.1)
    with pytest.raises(ValueError, match=r"torch.save\(optimizer.state_dict\(\)\).*to_torch_state_dict\(optimizer, target=model\)"):
        torch.save(named.state_dict(), tmp_path / "named.pt")


def test_a_torch_lbfgs_state_loads_into_a_params_dict_by_name_with_its_flat_vectors_permuted(x64):
    """torch's LBFGS keeps one dict under its first param, flat vectors in registration order.
    Loaded by name into a params dict (JAX's sorted order), the entry moves to our first param
    and the declared flat vectors (LBFGSState's flat_keys) are permuted: the run continues as
    torch's; without names it is refused."""
    kwargs = dict(lr=0.5, max_iter=4, history_size=3)


    model = _sequential()
    topt = torch.optim.LBFGS(model.named_parameters(), **kwargs)
    for _ in range(2):
        topt.step(_closure_of(model, topt))
    saved = copy.deepcopy(topt.state_dict())
    params = _params_dict(model, "torch")
    for load in (lambda o: o.load_state_dict(saved), lambda o: load_torch_state_dict(o, saved, source=model)):
        opt = optim.LBFGS(_params_dict(model, "torch"), **kwargs)
        load(opt)
        for _ in range(2):
            opt.step(_jax_loss)
        reference = copy.deepcopy(model)
        ropt = torch.optim.LBFGS(reference.parameters(), **kwargs)
        ropt.load_state_dict(saved)
        for _ in range(2):
            ropt.step(_closure_of(reference, ropt))
        _assert_models_close(_model_with(opt.params), reference, 1e-10)
    unnamed = copy.deepcopy(saved)
    del unnamed["param_groups"][0]["param_names"]
    with pytest.raises(ValueError, match="source=model"):
        optim.LBFGS(params, **kwargs).load_state_dict(unnamed)
