"""Every optax_like.optim class against its live reference: numbers, state_dicts, checkpoints (issue #5).

For every record of `optax_like.registry` with param groups and a plain `step()` (LBFGS:
tests/optim/test_lbfgs_class.py), against its reference (`info.reference_class()`: torch.optim,
or timm for Lion/ADOPT), in float64 (scoped), on the record's configurations (`_configs`: its
`example`, `flags` (the example and its `full` options with every flag at its last listed value:
maximize, amsgrad, ...), each variant, and a per-group one where its adapter options make group
structure: RMSprop's and SGD's momentum buffer in one group only, Muon's `ns_steps` per group):

1. two param groups, the second with half the lr and one other hyperparameter (the record's
   first `valid` argument after lr, at the midpoint of its range), stepped with
   `backward(grads)` + `step()` on the gradients the reference gets: params within 1e-12
   (relative, floor 1; a record's `rtol32` where bf16 inner math sets it) of the reference's
   after every step;
2. `state_dict()` against the reference's: same param ids and keys, every state tensor within
   1e-12 (float32 per-param scalars such as `eta`, `mu_product` within float32 rounding), the
   same dtype and shape (`step`: a 0-d float32), and every `param_groups` entry it has;
3. reference -> ours: its checkpoint loaded into a fresh instance (tensors directly, and through
   `optax_like.interop.torch` after `torch.save`/`torch.load`), both continue identically; and
   ours -> reference through `to_torch_state_dict`, the reference continuing as if uninterrupted;
4. ours -> ours: `state_dict` -> fresh instance -> `load_state_dict` continues bit for bit;
5. edges: a group holding one param of shape (1,) (per-param scalars such as NAdam's
   `mu_product`, ASGD's `eta`/`mu` must not be mistaken for a (1,)-shaped buffer), and params
   without a gradient in some steps (skipped as torch skips `p.grad is None`).

Params: the record's shapes, the first two in group 0 and the rest (or the first again) in
group 1; layout "sparse" gets BCOO gradients (torch: sparse COO tensors with duplicate indices).
"""

from __future__ import annotations

import copy
import functools
import inspect
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
import optax_like.optim as optim
from optax_like import registry
from optax_like.interop import torchao as torchao_interop
from optax_like.core.torch_layout import host_array
from optax_like.interop.torch import load_torch_state_dict, to_torch_state_dict
from tests.parity.harness import assert_close, jax_grad

RTOL = 1e-12  # float64 params and float64 state tensors
RTOL_F32_SCALARS = 1e-6  # torch keeps `eta`, `mu`, `mu_product` as float32 0-d tensors
STEPS = 10

RECORDS = {info.cls: info for info in registry.OPTIMIZERS.values() if info.groups and not info.closure}


def _configs(info):
    """(label, constructor kwargs, group-1 overrides): the example, `flags` and each variant with
    group 1 at half the lr and one more hyperparameter; and where the record has per-group
    structure options (`adapter`: `structural_zero` arguments whose 0 drops a buffer, `static`
    ones that shape the program), group 0 without the buffer or at the default and group 1 with
    the buffer (its `full` value) or the next static value."""
    signature = inspect.signature(info.factory).parameters
    lr = info.example.get("lr", signature["lr"].default)
    other = next(k for k in info.valid if k != "lr")
    group1 = {"lr": lr / 2, other: registry.fixed(info.valid[other])}
    flags = {**info.example, **info.full, **{k: values[-1] for k, values in info.flags.items()}}
    configs = [("example", dict(info.example), group1), ("flags", flags, group1)]
    configs += [(name, info.variant_kwargs(name), group1) for name in info.variants]
    zero, static = info.adapter.get("structural_zero", ()), info.adapter.get("static", ())
    if zero or static:
        kwargs = {**info.example, **{k: 0.0 for k in zero}}
        overrides = {**{k: info.full[k] if k in info.full else registry.fixed(info.valid[k]) for k in zero},
                     **{k: signature[k].default + 1 for k in static}}
        configs.append(("per-group", kwargs, {"lr": lr / 2, **overrides}))
    return configs


# (class, label, constructor kwargs, group-1 overrides). The example of each class is also used
# for the checkpoint and edge tests.
CASES = [(name, label, kwargs, group1) for name, info in RECORDS.items() for label, kwargs, group1 in _configs(info)]
CLASSES = list(RECORDS)
FIRST = {name: (kwargs, group1) for name, label, kwargs, group1 in CASES if label == "example"}


def _case_id(case):
    name, label, kwargs, group1 = case
    return f"{name}-{label}"


# By default each class runs one two-group configuration: its per-group structure one (the second
# group with its own options) where it has one, else its example; the example, all-flags (every
# state entry) and the variants run under `slow` (tests/parity/test_optim_db.py steps every variant
# in the class view). A record marked `slow` (registry) runs its example's steps, state_dict and
# checkpoints both ways by default; its other configurations and the remaining tests per class
# are `slow`.
_PER_GROUP = {name for name, label, _, _ in CASES if label == "per-group" and not RECORDS[name].slow}


def _default_two_groups(case) -> bool:
    name, label = case[0], case[1]
    return label == "per-group" if name in _PER_GROUP else label == "example"


CASE_PARAMS = [pytest.param(case, id=_case_id(case), marks=() if _default_two_groups(case) else (pytest.mark.slow,))
               for case in CASES]
SLOW_CLASSES = [pytest.param(name, marks=(pytest.mark.slow,) if RECORDS[name].slow else ()) for name in CLASSES]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------------- helpers
def _reference(name):
    return RECORDS[name].reference_class()


def _torch_kwargs(name, kwargs):
    if "foreach" in inspect.signature(_reference(name)).parameters:
        return dict(kwargs, foreach=False)  # the reference's single-tensor path
    return dict(kwargs)


def _shapes(name, shapes=None):
    if shapes is not None:
        return shapes
    record = RECORDS[name].shapes
    return (record[:2], record[2:] or record[:1])


def _rtol(name):
    return RECORDS[name].rtol32 or RECORDS[name].rtol64 or RTOL


def _init(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in group] for group in shapes]


def _problem(name, steps, shapes=None, none=()):
    """(shapes, initial params, gradients for `steps` steps) of the class's test problem."""
    shapes = _shapes(name, shapes)
    return shapes, _init(shapes), _grads(name, shapes, steps, none=none)


def _grads(name, shapes, steps, seed=1, none=()):
    """grads[t][g][i]: a NumPy array, (indices, values) for SparseAdam, or None if (t, g, i) in `none`."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        step = []
        for g, group in enumerate(shapes):
            row = []
            for i, s in enumerate(group):
                if (t, g, i) in none:
                    row.append(None)
                elif RECORDS[name].layout == "sparse":
                    idx = rng.integers(0, s[0], 4)
                    idx[-1] = idx[0]  # a duplicate entry every step (torch coalesces)
                    row.append((idx, rng.standard_normal((4, *s[1:]))))
                else:
                    row.append(rng.standard_normal(s))
            step.append(row)
        out.append(step)
    return out


def _make_torch(name, kwargs, group1, init):
    tp = [[torch.tensor(p, requires_grad=True) for p in group] for group in init]
    opt = RECORDS[name].new_reference([{"params": tp[0]}, {"params": tp[1], **group1}], **_torch_kwargs(name, kwargs))
    return tp, opt


def _make_ours(name, kwargs, group1, init):
    groups = [{"params": [jnp.asarray(p) for p in init[0]]}, {"params": [jnp.asarray(p) for p in init[1]], **group1}]
    return RECORDS[name].new_adapter(groups, **_torch_kwargs(name, kwargs))


def _torch_step(opt, tp, grads):
    for group_p, group_g in zip(tp, grads):
        for p, g in zip(group_p, group_g):
            if g is None:
                p.grad = None
            elif isinstance(g, tuple):
                p.grad = torch.sparse_coo_tensor(torch.tensor(g[0][None]), torch.tensor(g[1]), p.shape)
            else:
                p.grad = torch.tensor(g)
    opt.step()


def _ours_step(opt, grads, shapes):
    opt.zero_grad()
    opt.backward([[jax_grad(g, s) for g, s in zip(gg, ss)] for gg, ss in zip(grads, shapes)])
    opt.step()


def _flat_params(opt):
    return [np.asarray(p) for group in opt.params for p in group]


def _check_params(name, opt, tp, step):
    assert_close(_flat_params(opt), [p for group in tp for p in group], "float64", step, _rtol(name))


def _np(x):
    if torchao_interop.is_torchao_state(x):  # torchao's quantized moments: their values (dequantize())
        return np.asarray(torchao_interop.from_torchao(x))
    if isinstance(x, torch.Tensor):
        return host_array(x, "state entry")  # (bfloat16 included: AdafactorBigVision's exp_avg)
    return np.asarray(x)  # ours: arrays, QuantizedTensor (np.asarray: its dequantized values)


def _saved_copy(state_dict):
    """A copy of a reference's state dict through torch.save / torch.load (deepcopy cannot copy
    tensor subclasses such as torchao's quantized states)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@functools.cache
def _outside_groups(name):
    """Constructor arguments the reference keeps as attributes, not in its param groups
    (torchao's `block_size`, `bf16_stochastic_round`): our groups hold them (per group)."""
    arguments = set(inspect.signature(_reference(name)).parameters) - {"params"}
    reference = RECORDS[name].new_reference([torch.zeros(2, 2, requires_grad=True)])  # 2-D: Muon; SGDP's lr: the example's
    return frozenset(arguments - set(reference.defaults))


def _flat_lists(mine: dict, theirs: dict, what: str) -> tuple[dict, dict]:
    """Both entries with each list-valued key (timm Kron's `Q`: a list of tensors) as one key per
    element, `key[j]`, after checking that both lists have the same length."""
    flat_mine, flat_theirs = {}, {}
    for key, value in theirs.items():
        if isinstance(value, (list, tuple)):
            other = mine[key]
            assert isinstance(other, (list, tuple)) and len(other) == len(value), \
                f"{what} {key!r}: {type(other).__name__} of {len(other)}, the reference's a list of {len(value)}"
            flat_mine.update({f"{key}[{j}]": x for j, x in enumerate(other)})
            flat_theirs.update({f"{key}[{j}]": x for j, x in enumerate(value)})
        else:
            flat_mine[key], flat_theirs[key] = mine[key], value
    return flat_mine, flat_theirs


def _check_state(ours, theirs, *, step_repr=True, where="", rtol64=RTOL):
    """ours['state'] == theirs['state']: ids, keys, dtypes, shapes, values (float64 ones within
    `rtol64`: a record's rtol32 where its math is float32's)."""
    assert sorted(ours["state"]) == sorted(theirs["state"]), where
    for pid, entry in theirs["state"].items():
        mine = ours["state"][pid]
        assert sorted(mine) == sorted(entry), f"{where} param {pid}"
        mine, entry = _flat_lists(mine, entry, f"{where} param {pid}")
        for key, value in entry.items():
            what = f"{where} param {pid} {key!r}"
            if value is None:  # a declared `none_keys` entry (timm's SGDW without momentum)
                assert mine[key] is None, f"{what}: {mine[key]!r}, the reference's is None"
                continue
            a, b = _np(mine[key]), _np(value)
            assert a.shape == b.shape, f"{what}: shape {a.shape} != torch's {b.shape}"
            if key == "step":
                if step_repr and isinstance(value, int):  # SparseAdam: a Python int
                    assert type(mine[key]) is int, f"{what}: {type(mine[key])}, torch's is an int"
                elif step_repr:
                    assert isinstance(value, torch.Tensor) and b.dtype == np.float32 and b.shape == ()
                    assert a.dtype == np.float32, f"{what}: dtype {a.dtype}, torch's is a 0-d float32"
                assert float(a) == float(b), f"{what}: {a} != {b}"
                continue
            if isinstance(value, bool):  # a declared BOOL scalar (timm Muon's `use_muon`): the same Python bool
                assert mine[key] is value, f"{what}: {mine[key]!r} != the reference's {value!r}"
                continue
            assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != torch's {b.dtype}"
            rtol = rtol64 if b.dtype == np.float64 else RTOL_F32_SCALARS
            scale = float(np.max(np.abs(b))) if b.size else 0.0
            err = float(np.max(np.abs(a - b))) if b.size else 0.0
            assert err <= rtol * max(scale, 1e-300), f"{what}: error {err:.3e} (scale {scale:.3e})"


def _check_groups(ours, theirs, outside=frozenset(), rewritten=frozenset()):
    """Every param_groups entry torch has and ours has is equal; ours has nothing extra but the
    constructor arguments the reference keeps `outside` its groups. A 0-d tensor entry of the
    reference's (torchao keeps lr as a float32 tensor) equals ours in its dtype; a torch dtype
    (timm's AdafactorBigVision `momentum_dtype`) names ours. Entries the reference's step
    `rewritten` (the record's `rewritten_group_entries`, a deviation) are not compared."""
    assert len(ours["param_groups"]) == len(theirs["param_groups"])
    for g, (o, t) in enumerate(zip(ours["param_groups"], theirs["param_groups"])):
        assert set(o) - outside <= set(t), f"group {g}: keys torch lacks: {set(o) - outside - set(t)}"
        for key in (set(o) & set(t)) - set(rewritten):
            a, b = o[key], t[key]
            if isinstance(b, torch.dtype):
                assert str(a).removeprefix("torch.") == str(b).removeprefix("torch."), f"group {g} {key!r}: {a!r} != {b!r}"
                continue
            if isinstance(b, torch.Tensor) and b.ndim == 0 and not isinstance(a, torch.Tensor):
                assert np.asarray(a, b.numpy().dtype) == b.numpy(), f"group {g} {key!r}: {a!r} != {b!r}"
                continue
            assert a == b and type(a) is type(b), f"group {g} {key!r}: {a!r} != {b!r}"


def _train_pair(name, kwargs, group1, steps, shapes=None, none=()):
    """Both optimizers from the same params, `steps` steps on the same gradients, checked each step."""
    shapes, init, grads = _problem(name, steps, shapes, none=none)
    tp, topt = _make_torch(name, kwargs, group1, init)
    opt = _make_ours(name, kwargs, group1, init)
    for t in range(steps):
        _torch_step(topt, tp, grads[t])
        _ours_step(opt, grads[t], shapes)
        _check_params(name, opt, tp, t + 1)
    return tp, topt, opt, shapes


# ------------------------------------------------------------------ 1 + 2: steps and state_dict
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_two_groups_match_torch_params_and_state_dict(case, x64):
    name, _, kwargs, group1 = case
    tp, topt, opt, _ = _train_pair(name, kwargs, group1, STEPS)
    ours, theirs = opt.state_dict(), topt.state_dict()
    # torch's SparseAdam keeps `step` as a Python int: see test_step_representation_matches_torch.
    _check_state(ours, theirs, step_repr=name != "SparseAdam", rtol64=_rtol(name))
    _check_groups(ours, theirs, _outside_groups(name), RECORDS[name].rewritten_group_entries)
    assert [g["params"] for g in ours["param_groups"]] == [[0, 1], list(range(2, 2 + len(tp[1])))]




@pytest.mark.parametrize("name", CLASSES)
def test_param_group_keys_match_torch(name):
    kwargs, group1 = FIRST[name]
    init = _init(_shapes(name))
    _, topt = _make_torch(name, kwargs, group1, init)
    opt = _make_ours(name, kwargs, group1, init)
    for o, t in zip(opt.state_dict()["param_groups"], topt.state_dict()["param_groups"]):
        assert sorted(set(o) - _outside_groups(name)) == sorted(t), f"missing {set(t) - set(o)}, extra {set(o) - set(t)}"




@pytest.mark.parametrize("name", SLOW_CLASSES)
def test_step_representation_matches_torch(name, x64):
    kwargs, group1 = FIRST[name]
    _, topt, opt, _ = _train_pair(name, kwargs, group1, 2)
    theirs = topt.state_dict()["state"]
    if all("step" not in e for e in theirs.values()):  # SGD, Muon, Lion
        assert all("step" not in e for e in opt.state.values())
        return
    for pid, entry in theirs.items():
        if "step" not in entry:  # a param without one (timm Muon's Muon params beside its AdamW fallback's)
            assert "step" not in opt.state_dict()["state"][pid]
            continue
        ours = opt.state_dict()["state"][pid]["step"]
        t = entry["step"]
        if isinstance(t, torch.Tensor):
            assert isinstance(ours, jax.Array) and ours.dtype == jnp.float32 and ours.shape == ()
            assert t.dtype == torch.float32 and t.shape == ()
        else:
            assert type(ours) is type(t), f"step is {type(ours).__name__}, torch's is {type(t).__name__}"
        assert float(ours) == float(t) == 2


# ------------------------------------------------------------------ 3: torch -> ours (and back)


@pytest.mark.parametrize("name", CLASSES)
def test_torch_checkpoint_continues_in_ours(name, x64):
    kwargs, group1 = FIRST[name]
    n, m = 4, 4
    shapes, init, grads = _problem(name, n + m)
    tp, topt = _make_torch(name, kwargs, group1, init)
    for t in range(n):
        _torch_step(topt, tp, grads[t])
    saved = topt.state_dict()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    reloaded = torch.load(buffer, weights_only=True)

    now = [[p.detach().numpy().copy() for p in group] for group in tp]
    # Fresh instances with default hyperparameters: every group entry must come from the checkpoint.
    # torch's live state (torch keeps stepping in place below: the load must copy).
    direct = _make_ours(name, {}, {}, now)
    direct.load_state_dict(topt.state_dict())
    via_interop = _make_ours(name, {}, {}, now)
    load_torch_state_dict(via_interop, reloaded)
    for opt in (direct, via_interop):
        _check_state(opt.state_dict(), saved, step_repr=name != "SparseAdam", where="after load", rtol64=_rtol(name))
        _check_groups(opt.state_dict(), saved, _outside_groups(name))
    for t in range(n, n + m):
        _torch_step(topt, tp, grads[t])
        for opt in (direct, via_interop):
            _ours_step(opt, grads[t], shapes)
            _check_params(name, opt, tp, t + 1)
    _check_state(direct.state_dict(), topt.state_dict(), step_repr=name != "SparseAdam", rtol64=_rtol(name))



@pytest.mark.parametrize("name", CLASSES)
def test_our_checkpoint_continues_in_torch(name, x64):
    """ours -> torch (to_torch_state_dict): torch resumed from our checkpoint = torch resumed from its own.

    (Not = uninterrupted torch: torch's load_state_dict casts NAdam's float32 `mu_product` to the
    param dtype, so even torch -> torch resumption drifts by ~3e-12 there.)
    """
    kwargs, group1 = FIRST[name]
    n, m = 4, 3
    shapes, init, grads = _problem(name, n + m)
    tp, topt = _make_torch(name, kwargs, group1, init)
    opt = _make_ours(name, kwargs, group1, init)
    for t in range(n):
        _torch_step(topt, tp, grads[t])
        _ours_step(opt, grads[t], shapes)

    def resumed(params, state_dict):
        tps = [[torch.tensor(np.asarray(p), requires_grad=True) for p in group] for group in params]
        o = RECORDS[name].new_reference([{"params": tps[0]}, {"params": tps[1]}], **_torch_kwargs(name, {}))
        o.load_state_dict(state_dict)
        return tps, o

    tp2, topt2 = resumed(opt.params, to_torch_state_dict(opt))
    tp_ref, topt_ref = resumed([[p.detach().numpy() for p in g] for g in tp], _saved_copy(topt.state_dict()))
    assert topt2.state_dict()["param_groups"] == topt_ref.state_dict()["param_groups"]
    _check_state(topt2.state_dict(), topt_ref.state_dict(), where="torch after loading ours", rtol64=_rtol(name))
    rtol = _rtol(name)
    for t in range(n, n + m):
        _torch_step(topt_ref, tp_ref, grads[t])
        _torch_step(topt2, tp2, grads[t])
        assert_close([p.detach().numpy() for g in tp2 for p in g], [p for g in tp_ref for p in g], "float64", t + 1, rtol)


# ------------------------------------------------------------------ 4: ours -> ours round trip
@pytest.mark.parametrize("name", SLOW_CLASSES)
def test_state_dict_round_trip_is_bit_identical(name, x64):
    kwargs, group1 = FIRST[name]
    n, m = 4, 4
    shapes, init, grads = _problem(name, n + m)
    opt = _make_ours(name, kwargs, group1, init)
    for t in range(n):
        _ours_step(opt, grads[t], shapes)
    saved = opt.state_dict()
    now = [[np.asarray(p).copy() for p in group] for group in opt.params]
    fresh = _make_ours(name, {}, {}, now)
    fresh.load_state_dict(saved)
    assert fresh.state_dict()["param_groups"] == opt.state_dict()["param_groups"]  # live groups hold arrays
    for t in range(n, n + m):
        _ours_step(opt, grads[t], shapes)
        _ours_step(fresh, grads[t], shapes)
        for a, b in zip(_flat_params(fresh), _flat_params(opt)):
            np.testing.assert_array_equal(a, b)
    for pid, entry in opt.state_dict()["state"].items():
        other = fresh.state_dict()["state"][pid]
        assert sorted(other) == sorted(entry)
        other, entry = _flat_lists(other, entry, f"param {pid}")
        for key, value in entry.items():
            np.testing.assert_array_equal(np.asarray(other[key]), np.asarray(value), err_msg=f"{pid} {key}")


# ------------------------------------------------------------------ 5: edges
@pytest.mark.parametrize("name", ["ASGD", "NAdam", "Rprop", "Adam", "Adafactor"])
def test_group_with_one_single_element_param(name, x64):
    """A group holding one (1,) param: its per-param scalars stay 0-d and load back as scalars."""
    kwargs, group1 = FIRST[name]
    shapes = (((4, 3), (5,)), ((1,),))
    tp, topt, opt, _ = _train_pair(name, kwargs, group1, 8, shapes=shapes)
    _check_state(opt.state_dict(), topt.state_dict())
    if name == "NAdam":
        assert opt.state_dict()["state"][2]["mu_product"].shape == ()
    if name == "ASGD":
        assert opt.state_dict()["state"][2]["eta"].shape == opt.state_dict()["state"][2]["mu"].shape == ()
    # torch's checkpoint loads into a fresh ours and both continue together.
    now = [[p.detach().numpy().copy() for p in group] for group in tp]
    fresh = _make_ours(name, {}, {}, now)
    fresh.load_state_dict(copy.deepcopy(topt.state_dict()))  # aliasing: see test_load_state_dict_copies_torch_buffers
    _check_state(fresh.state_dict(), topt.state_dict(), where="after load")
    for grads_t in _grads(name, shapes, 4, seed=5):
        _torch_step(topt, tp, grads_t)
        _ours_step(fresh, grads_t, shapes)
        _check_params(name, fresh, tp, 0)
    _check_state(fresh.state_dict(), topt.state_dict(), where="after continuing")


# (step, group, index) without gradient: param 2 (group 1) has none at first, so it has no state
# until step 2 (torch's lazy init); param 1 misses steps 3 and 4. (Each pattern compiles once.)
NONE = {(0, 1, 0), (1, 1, 0), (3, 0, 1), (4, 0, 1)}




@pytest.mark.parametrize("name", SLOW_CLASSES)
def test_params_without_gradient_are_skipped_like_torch(name, x64):
    kwargs, group1 = FIRST[name]
    shapes, init, grads = _problem(name, 8, none=NONE)
    tp, topt = _make_torch(name, kwargs, group1, init)
    opt = _make_ours(name, kwargs, group1, init)
    for t in range(8):
        _torch_step(topt, tp, grads[t])
        _ours_step(opt, grads[t], shapes)
        _check_params(name, opt, tp, t + 1)
        _check_state(opt.state_dict(), topt.state_dict(), step_repr=name != "SparseAdam", where=f"step {t + 1}",
                     rtol64=_rtol(name))
    if any("step" in e for e in topt.state_dict()["state"].values()):  # not SGD's, Muon's, Lion's
        # (params without a step: timm Muon's Muon params beside its AdamW fallback's)
        steps = {pid: float(_np(e["step"])) for pid, e in topt.state_dict()["state"].items() if "step" in e}
        ids = [(g, i) for g, group in enumerate(shapes) for i in range(len(group))]
        assert steps == {pid: 8.0 - sum((t, *gi) in NONE for t in range(8)) for pid, gi in enumerate(ids) if pid in steps}
        assert {pid: float(e["step"]) for pid, e in opt.state_dict()["state"].items() if "step" in e} == steps




def test_sparse_adam_accepts_row_sparse_grads_like_torch_coo(x64):
    name, kwargs, group1 = "SparseAdam", *FIRST["SparseAdam"]
    shapes, init, grads = _problem(name, 4)
    tp, topt = _make_torch(name, kwargs, group1, init)
    opt = _make_ours(name, kwargs, group1, init)
    for t in range(4):
        _torch_step(topt, tp, grads[t])
        opt.zero_grad()
        opt.backward([[ol.RowSparseGrad(jnp.asarray(i.astype(np.int32)), jnp.asarray(v)) for i, v in group]
                      for group in grads[t]])
        opt.step()
        _check_params(name, opt, tp, t + 1)


@pytest.mark.parametrize("name, key", [
    ("SGD", "momentum_buffer"),
    ("NAdam", "mu_product"),
    ("ASGD", "eta"),
])
def test_load_state_dict_copies_torch_buffers(name, key):
    """Loaded state must not alias torch's tensors (torch's next step writes them in place)."""
    p = torch.zeros(1000, requires_grad=True)
    topt = getattr(torch.optim, name)([p], lr=0.1, **(dict(momentum=0.9) if name == "SGD" else {}))
    p.grad = torch.ones(1000)
    topt.step()
    ours = getattr(optim, name)([jnp.zeros(1000)], lr=0.1, **(dict(momentum=0.9) if name == "SGD" else {}))
    ours.load_state_dict(topt.state_dict())
    before = np.asarray(ours.state[0][key]).copy()
    topt.state[p][key].mul_(0.5)  # what torch's next step does in place
    np.testing.assert_array_equal(np.asarray(ours.state[0][key]), before)



def test_adagrad_state_exists_from_construction_like_torch(x64):
    init = _init(_shapes("Adagrad"))
    _, topt = _make_torch("Adagrad", dict(initial_accumulator_value=0.1), {}, init)
    opt = _make_ours("Adagrad", dict(initial_accumulator_value=0.1), {}, init)
    _check_state(opt.state_dict(), topt.state_dict())




def test_adagrad_per_group_initial_accumulator_value_like_torch(x64):
    tp, topt, opt, _ = _train_pair("Adagrad", dict(lr=0.1), dict(lr=0.05, initial_accumulator_value=0.1), 2)
