"""optax_like/optim/_state_dict.py and core/torch_layout.py: the declared converter, its checks on
load, bfloat16/float16 torch state, and what stays valid of the arrays the adapter hands out."""

from __future__ import annotations

import copy
import io
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import sparse as jsparse

import optax_like.optim as optim
from optax_like import registry
from optax_like.core import torch_layout
from optax_like.core.torch_layout import STARTED, STEP, STEPS_TAKEN, declare_torch_state
from optax_like.core.leaf_scalars import LeafScalars
from optax_like.interop.torch import load_torch_state_dict, to_torch_state_dict
from optax_like.optim import _state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

# Every class built from the registry (LBFGS, its own class: test_lbfgs_state_is_declared_global...).
RECORDS = {info.cls: info for info in registry.OPTIMIZERS.values() if not info.custom_class}
CLASSES = list(RECORDS)
SHAPES = [(4, 3), (3, 5)]


def _params(dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in SHAPES]


def _grads(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


# ---------------------------------------------------------------------------------- declarations
@pytest.mark.parametrize("name", CLASSES)
def test_every_state_of_every_class_is_declared(name):
    """The converter finds a declaration for every array of every class's state (a state type
    without one would be an error naming its field), and every declared field is a real field."""
    opt = getattr(optim, name)(_params(), **RECORDS[name].full)
    nodes = _state_dict._declared_nodes(opt._groups[0].state)
    assert nodes
    for node, layout in nodes:
        if layout.is_group:  # the group form (GroupEntries): its functions map the node's fields
            assert layout.group is not None and set(layout.group.export(node)) <= set(layout.group.keys)
            continue
        assert set(layout.fields()) == set(node._fields)
        for field in layout.scalars:
            assert isinstance(getattr(node, field), LeafScalars), (type(node).__name__, field)


def test_undeclared_state_is_an_error_naming_the_field():
    class Undeclared(NamedTuple):
        mystery: Any

    with pytest.raises(TypeError, match=re.escape("Undeclared.mystery")):
        _state_dict._declared_nodes((Undeclared(jnp.zeros(3)),))


@pytest.mark.parametrize("kwargs, message", [
    (dict(buffers=("a",), scalars={"step": STEP}), "missing ['count']"),
    (dict(buffers=("a", "nope"), scalars={"step": STEP}, internal={"count": STEPS_TAKEN}), "unknown ['nope']"),
    (dict(buffers=("a", "a"), scalars={"step": STEP}, internal={"count": STEPS_TAKEN}), "repeated ['a']"),
    (dict(buffers=("a",), scalars={"step": "float64"}, internal={"count": STEPS_TAKEN}, started="step"), "unknown kinds"),
    (dict(buffers=("a",), scalars={"step": STEP}, internal={"count": STEPS_TAKEN}), "started="),
    (dict(buffers=("a",), scalars={"step": STEP}, internal={"count": STEPS_TAKEN}, started="a"), "started='a'"),
    (dict(export=lambda state: {}), "both export and load"),
    (dict(buffers=("a",), export=lambda state: {}, load=lambda fresh, entry: fresh), "declares no buffers"),
    (dict(buffers=("a",), scalars={"step": STEP}, internal={"count": STEPS_TAKEN}, started="step",
          negated=("step",)), "negated fields ['step'] must be plain buffers"),
])
def test_declarations_are_checked_at_import(kwargs, message):
    class S(NamedTuple):
        a: Any
        step: Any
        count: Any

    with pytest.raises(TypeError, match=re.escape(message)):
        declare_torch_state(S, **kwargs)
    assert torch_layout.torch_layout_of(S((), (), ())) is None


def test_lbfgs_state_is_declared_global_and_goes_through_the_one_converter(x64):
    """LBFGS's state is one torch dict under the first param (TorchLayout's global form): the
    class has no state methods of its own; the converter exports it under the first id, loads it
    from there and refuses an entry under another param, naming it and the first."""
    for method in ("_export_group", "_import_group", "_expected_state_keys"):
        assert method not in vars(optim.LBFGS)
    params = [jnp.arange(3.0), jnp.ones((2, 2))]
    opt = optim.LBFGS(params, history_size=2)
    (node, layout), = _state_dict._declared_nodes(opt._groups[0].state)
    assert layout.is_global and not layout.fields()
    assert opt.state_dict()["state"] == {}  # torch: no entry before the first step
    opt.step(lambda ps: sum(((p - 1.0) ** 4).sum() for p in ps))
    saved = opt.state_dict()
    assert list(saved["state"]) == [0] and saved["state"][0]["d"].shape == (7,)
    assert _state_dict.expected_keys(opt._groups[0].state, opt._groups[0].treedef, opt._groups[0].leaves) is None
    moved = {"state": {1: saved["state"][0]}, "param_groups": saved["param_groups"]}
    message = "entries for params [1]: LBFGSState keeps its whole state under the first param 0"
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.load_state_dict(moved)
    twin = optim.LBFGS([jnp.asarray(p) for p in opt.params], history_size=2)
    twin.load_state_dict(saved)
    for key in ("d", "prev_flat_grad", "H_diag"):
        np.testing.assert_array_equal(np.asarray(twin.state[0][key]), np.asarray(saved["state"][0][key]))
    assert twin.state[0]["n_iter"] == saved["state"][0]["n_iter"]


def test_internal_counters_are_rebuilt_by_their_rule():
    """SGD's per-param `count` (STARTED) is 1 exactly for params with a loaded entry; the 0-d
    `schedule_count`s (STEPS_TAKEN) are the largest loaded step."""
    sgd = optim.SGD(_params(), lr=0.1, momentum=0.9)
    sgd.load_state_dict({"state": {1: {"momentum_buffer": np.ones(SHAPES[1], np.float32)}},
                         "param_groups": [dict(sgd.state_dict()["param_groups"][0])]})
    trace = [n for n, _ in _state_dict._declared_nodes(sgd._groups[0].state) if "momentum_buffer" in n._fields][0]
    assert trace.count.tolist() == [0, 1]
    assert list(sgd.state) == [1]
    adam = optim.Adam(_params())
    sd = adam.state_dict()
    sd["state"] = {i: {"step": torch.tensor(float(s)), "exp_avg": np.zeros(shape, np.float32),
                       "exp_avg_sq": np.zeros(shape, np.float32)} for i, (s, shape) in enumerate(zip((3, 7), SHAPES))}
    adam.load_state_dict(sd)
    taken = [getattr(n, f) for n, layout in _state_dict._declared_nodes(adam._groups[0].state)
             for f, rule in layout.internal.items() if rule == STEPS_TAKEN]
    assert taken and all(int(x) == 7 for x in taken)
    assert adam._groups[0].state is not None and not any(
        n.step.is_shared for n, layout in _state_dict._declared_nodes(adam._groups[0].state) if "step" in layout.scalars)
    assert STARTED in torch_layout.REBUILD_RULES


# ---------------------------------------------------------------------------------- refusals
def _stepped(name, **kwargs):
    opt = getattr(optim, name)(_params(), **kwargs)
    for seed in range(2):
        grads = [jnp.asarray(g) for g in _grads(seed)]
        opt.grad = [jsparse.BCOO.fromdense(g) for g in grads] if name == "SparseAdam" else grads
        opt.step()
    return opt


def _set(pid, key, value):
    def mutate(sd):
        sd["state"][pid][key] = value
    return mutate


def _group(key, value):
    def mutate(sd):
        sd["param_groups"][0][key] = value
    return mutate


REFUSALS = [
    # torch's next Adam step divides by 1 - beta1 ** 0 (ZeroDivisionError) after step -1.
    ("Adam", _set(1, "step", torch.tensor(-1.0)), ValueError, "param 1: 'step' must be a step count"),
    ("Adam", _set(0, "step", torch.tensor(float("nan"))), ValueError, "param 0: 'step' must be a step count"),
    ("Adam", _set(0, "step", np.float32(np.inf)), ValueError, "param 0: 'step' must be a step count"),
    ("Adam", _set(1, "step", 1.5), ValueError, "param 1: 'step' must be a step count"),
    ("Adam", _set(1, "step", 2.0 ** 31), ValueError, "param 1: 'step' must be a step count"),
    ("Adam", _set(0, "step", np.ones(2, np.float32)), ValueError, "param 0: 'step' must be a scalar"),
    ("Adam", _set(0, "step", np.complex64(1 + 1j)), ValueError, "param 0: 'step' must be real"),
    ("Adam", _set(0, "step", "three"), TypeError, "param 0: 'step' is not numeric"),
    ("SparseAdam", _set(1, "step", -1), ValueError, "param 1: 'step' must be a step count"),
    ("NAdam", _set(1, "mu_product", torch.tensor(float("nan"))), ValueError, "param 1: 'mu_product' must be finite"),
    ("ASGD", _set(0, "eta", torch.tensor(float("inf"))), ValueError, "param 0: 'eta' must be finite"),
    ("ASGD", _set(1, "mu", np.nan), ValueError, "param 1: 'mu' must be finite"),
    ("Adam", _set(1, "exp_avg", np.ones(SHAPES[1], np.complex64)), TypeError, "param 1: 'exp_avg' is complex"),
    ("Adam", lambda sd: sd["state"].__setitem__(1, [1, 2]), TypeError, "loaded state for param 1 must be a dict"),
    ("Adam", _set(0, "exp_avg", np.ones((3, 4), np.float32)), ValueError, "param 0 has 'exp_avg' of shape (3, 4)"),
    ("RMSprop", _set(1, "square_avg", torch.ones(2)), ValueError, "param 1 has 'square_avg' of shape (2,)"),
    # torch's next step: `result type ComplexFloat can't be cast` (betas), nan updates (eps < 0).
    ("Adam", _group("betas", (2.0, 3.0)), ValueError, "loaded param_groups[0]['betas'] = (2.0, 3.0): Invalid beta"),
    ("Adam", _group("eps", torch.tensor(-1.0)), ValueError, "loaded param_groups[0]['eps'] = -1.0: Invalid epsilon"),
    ("NAdam", _group("momentum_decay", -0.5), ValueError, "loaded param_groups[0]['momentum_decay'] = -0.5"),
]


@pytest.mark.parametrize("name, mutate, error, message", REFUSALS, ids=[f"{n}-{m}" for n, _, _, m in REFUSALS])
def test_refused_loads_name_param_and_key_and_change_nothing(name, mutate, error, message):
    opt = _stepped(name)
    before = jax.tree.map(np.asarray, opt.state_dict())
    states_before = [group.state for group in opt._groups]
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["lr"] = 123.0  # a valid change that must not be committed either
    mutate(sd)
    with pytest.raises(error, match=re.escape(message)):
        opt.load_state_dict(sd)
    assert all(group.state is state for group, state in zip(opt._groups, states_before))
    after = jax.tree.map(np.asarray, opt.state_dict())
    assert after["param_groups"] == before["param_groups"]
    jax.tree.map(np.testing.assert_array_equal, after["state"], before["state"])


def test_torch_raises_or_diverges_on_what_we_refuse():
    """The refusals above are states torch's next step rejects or turns into nan/inf (measured)."""
    p = torch.ones(3, requires_grad=True)
    topt = torch.optim.Adam([p])
    p.grad = torch.ones(3)
    topt.step()
    sd = copy.deepcopy(topt.state_dict())
    sd["state"][0]["step"] = torch.tensor(-1.0)
    topt.load_state_dict(sd)
    with pytest.raises(ZeroDivisionError):
        topt.step()
    sd["state"][0]["step"] = torch.tensor(float("nan"))
    topt.load_state_dict(sd)
    topt.step()
    assert torch.isnan(p).all()


def test_accepted_loads_cast_like_torch():
    """torch's load casts every buffer to the param's dtype (integers included) and takes steps
    as Python numbers or tensors of any dtype: so do we."""
    opt = _stepped("Adam")
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = torch.ones(SHAPES[0], dtype=torch.int64)
    sd["state"][0]["exp_avg_sq"] = np.ones(SHAPES[0], np.float64)
    sd["state"][0]["step"] = 2
    sd["state"][1]["step"] = torch.tensor(2, dtype=torch.int32)
    opt.load_state_dict(sd)
    entry = opt.state[0]
    assert entry["exp_avg"].dtype == jnp.float32 and float(entry["exp_avg"][0, 0]) == 1.0
    assert entry["step"].dtype == jnp.float32 and float(entry["step"]) == 2.0


# ---------------------------------------------------------------------------------- bf16 / f16 torch state
@pytest.mark.parametrize("torch_dtype, dtype", [(torch.bfloat16, jnp.bfloat16), (torch.float16, jnp.float16)])
@pytest.mark.parametrize("name, kwargs", [("Adam", dict(lr=0.01, amsgrad=True)), ("NAdam", dict(lr=0.01)),
                                          ("SGD", dict(lr=0.01, momentum=0.9))])
def test_low_precision_torch_state_loads_and_continues_on_torchs_trajectory(torch_dtype, dtype, name, kwargs):
    """`torch.optim.Adam` over bf16 params keeps bf16 buffers (and a float32 `step`): it loads,
    directly and through interop.torch after torch.save/torch.load, and both continue with torch
    (bit for bit here; the contract is bf16 tolerance). And back: torch continues from ours."""
    init = [np.asarray(p) for p in _params()]
    tp = [torch.tensor(p, dtype=torch_dtype, requires_grad=True) for p in init]
    topt = getattr(torch.optim, name)(tp, foreach=False, **kwargs)

    def torch_step(seed):
        for p, g in zip(tp, _grads(seed)):
            p.grad = torch.tensor(g, dtype=torch_dtype)
        topt.step()

    for seed in range(4):
        torch_step(seed)
    buffers = [k for k, v in topt.state[tp[0]].items() if v.shape == tp[0].shape]
    assert buffers and all(topt.state[tp[0]][k].dtype == torch_dtype for k in buffers)
    now = [jnp.asarray(p.detach().float().numpy(), dtype) for p in tp]
    direct = getattr(optim, name)(now, lr=1.0)
    direct.load_state_dict(topt.state_dict())
    buffer = io.BytesIO()
    torch.save(topt.state_dict(), buffer)
    buffer.seek(0)
    via_interop = getattr(optim, name)([jnp.copy(p) for p in now], lr=1.0)
    load_torch_state_dict(via_interop, torch.load(buffer, weights_only=True))
    for seed in range(4, 8):
        torch_step(seed)
        for opt in (direct, via_interop):
            opt.grad = [jnp.asarray(g, dtype) for g in _grads(seed)]
            opt.step()
            for ours, theirs in zip(opt.params, tp):
                assert ours.dtype == dtype
                np.testing.assert_allclose(np.asarray(ours, np.float32), theirs.detach().float().numpy(),
                                           rtol=2 ** -7, atol=2 ** -7)
    back = to_torch_state_dict(direct)
    for pid, entry in topt.state_dict()["state"].items():
        for key, value in entry.items():
            assert back["state"][pid][key].dtype == value.dtype, (pid, key)
    tp2 = [torch.tensor(np.asarray(p, np.float32), dtype=torch_dtype, requires_grad=True) for p in direct.params]
    topt2 = getattr(torch.optim, name)(tp2, foreach=False, **kwargs)
    topt2.load_state_dict(back)
    for p, g in zip(tp2, _grads(9)):
        p.grad = torch.tensor(g, dtype=torch_dtype)
    topt2.step()
    torch_step(9)
    for a, b in zip(tp2, tp):
        np.testing.assert_allclose(a.detach().float().numpy(), b.detach().float().numpy(), rtol=2 ** -7, atol=2 ** -7)


def test_host_array_keeps_bfloat16_bits_and_copies():
    t = torch.tensor([1.0, -2.5, 3.140625], dtype=torch.bfloat16)
    arr = _state_dict.host_array(t, "x")
    assert arr.dtype == jnp.bfloat16 and np.array_equal(arr.astype(np.float32), t.float().numpy())
    t.mul_(2)  # torch's next step writes in place: the loaded copy must not change
    assert float(arr[1]) == -2.5


# ---------------------------------------------------------------------------------- arrays handed out
def test_state_and_state_dict_arrays_are_snapshots_that_stay_valid():
    """`optimizer.state[...]` and `state_dict()` entries are copies taken when read: they keep
    their values and stay usable after later steps (which donate the live buffers)."""
    opt = _stepped("Adam")
    entry = opt.state[0]
    saved = opt.state_dict()
    values = {k: np.array(v) for k, v in entry.items()}
    for seed in range(2, 4):
        opt.grad = [jnp.asarray(g) for g in _grads(seed)]
        opt.step()
    for key, value in values.items():
        np.testing.assert_array_equal(np.asarray(entry[key]), value)
        np.testing.assert_array_equal(np.asarray(saved["state"][0][key]), value)
        assert not np.array_equal(np.asarray(opt.state[0][key]), value)  # the live state moved on
    assert float(entry["step"]) == 2.0 and float(opt.state[0]["step"]) == 4.0
    fresh = optim.Adam([jnp.copy(p) for p in opt.params])
    fresh.load_state_dict(saved)  # a state dict read 2 steps ago still loads
    assert float(fresh.state[0]["step"]) == 2.0


def test_params_are_valid_until_the_next_step():
    """`optimizer.params` hands out the live params (no copy per read, as the `backward(grads)`
    idiom reads them every step); the next step donates them: read again after it, copy to keep."""
    opt = _stepped("SGD", lr=0.1, momentum=0.9)
    params = opt.params
    kept = [jnp.copy(p) for p in params]
    assert opt.params[0] is params[0]  # no copy per read
    opt.grad = [jnp.asarray(g) for g in _grads(5)]
    opt.step()
    assert all(p.is_deleted() for p in params)
    assert not any(p.is_deleted() for p in kept + list(opt.params))
    sd = opt.state_dict()
    sd["state"][0]["momentum_buffer"] = params[0]  # a donated array given back: a clear error
    with pytest.raises(RuntimeError, match=re.escape("param 0: 'momentum_buffer' is an array that an optimizer step has donated")):
        opt.load_state_dict(sd)


@pytest.mark.parametrize("change", ["load", "amsgrad"])
def test_pending_none_gradient_after_a_load_or_an_option_edit_steps_like_torch(change):
    """A load (equal steps: shared counters) or an option edit (state rebuilt) between setting
    gradients with a None leaf and the step: the step skips that param, as torch does."""
    init = [np.asarray(p) for p in _params()]
    tp = [torch.tensor(p, requires_grad=True) for p in init]
    topt = torch.optim.Adam(tp, lr=0.01)
    opt = optim.Adam([jnp.asarray(p) for p in init], lr=0.01)
    for p, g in zip(tp, _grads(0)):
        p.grad = torch.tensor(g)
    topt.step()
    opt.grad = [jnp.asarray(g) for g in _grads(0)]
    opt.step()
    g1 = _grads(1)
    opt.grad = [jnp.asarray(g1[0]), None]
    if change == "load":
        opt.load_state_dict(opt.state_dict())
    else:
        opt.param_groups[0]["amsgrad"] = True
        topt.param_groups[0]["amsgrad"] = True
        for p in tp:
            topt.state[p]["max_exp_avg_sq"] = torch.zeros_like(p)  # torch needs the buffer; ours starts at 0
    tp[0].grad, tp[1].grad = torch.tensor(g1[0]), None
    topt.step()
    opt.step()
    for ours, theirs in zip(opt.params, tp):
        np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert [float(e["step"]) for e in opt.state_dict()["state"].values()] == [2.0, 1.0]


def test_equal_loaded_steps_load_shared_unequal_per_param():
    """Equal per-param scalars load into the shared form `init` makes (the compiled step is
    kept); unequal ones into the per-leaf form (torch's numbers, one more compile)."""
    opt = _stepped("NAdam")
    sd = opt.state_dict()
    fresh = optim.NAdam([jnp.copy(p) for p in opt.params])
    fresh.load_state_dict(sd)
    (node, _), = [(n, l) for n, l in _state_dict._declared_nodes(fresh._groups[0].state) if "step" in l.scalars]
    assert node.step.is_shared and node.mu_product.is_shared
    sd["state"][1]["step"] = torch.tensor(5.0)
    fresh.load_state_dict(sd)
    (node, _), = [(n, l) for n, l in _state_dict._declared_nodes(fresh._groups[0].state) if "step" in l.scalars]
    assert not node.step.is_shared and node.step.tolist() == [2, 5]
    assert node.mu_product.is_shared  # equal values stay shared, whatever the other fields' form
