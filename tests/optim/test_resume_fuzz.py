"""Resuming a torch optimizer run in optax_like.optim: a load is exact or refused, never guessed.

A torch run (AdamW, Adam, SGD with momentum; float64) takes 2 steps on fixed gradients; its
`state_dict()` is saved and torch continues 2 more steps. An optax_like optimizer is built over
torch's params at save time, in one of many ways (a params dict, lists in registration or in
JAX's sorted order, `(name, param)` pairs, HF-style two groups, frozen params left out, with and
without `model=`), the saved state is loaded through one of the load paths, and then:

(a) the load succeeds and our next 2 steps equal torch's continued run for every param, matched by
    NAME (rtol 1e-12), or
(b) the load raises ValueError whose message names the fix (`source=` or `param_names`), and the
    optimizer is untouched: its state_dict() and params are those from before the load, and its
    next steps equal those of an identically built optimizer that never tried the load.

Anything else fails the case: a load that lands state on the wrong param (the continuation
differs from torch's), another exception type, a ValueError that does not name the fix, a
failed load that changed the optimizer. With `source=model` the load must succeed where our
params have names to match (a dict's key paths, `(name, param)` pairs, or `model=`) and each of
our groups holds the params of torch's group. Where our groups' membership differs from torch's
(both sides named), the load must be refused.

The model is an `nn.Sequential` of 11 `Linear(4, 4)` and a `LayerNorm(4)`: names '0.weight',
'0.bias', ..., '10.weight', '10.bias', '11.weight', '11.bias' in registration order, while JAX
orders a dict's leaves by sorted key ('10.bias' before '2.bias'; 'bias' before 'weight'). Within
the HF groups (weights (4, 4); biases and LayerNorm's params (4,)) all shapes are equal, so a
state placed on the wrong param is shape-compatible and only the continuation shows it.

One documented exception (docs/adapter.md, "torch checkpoints and param order"): a bare list of
arrays is the order its user declares, and torch's rule for it is position; the library cannot
see how the list was made, so `jax.tree.leaves(params)` (JAX's sorted order, not torch's) loads
by position too. For that spelling the case checks (c): the load is positional, exactly as torch
loads the same list (saved position j's state on our j-th param), or refused as in (b).

The default run holds a seeded sample that covers every value of every dimension; the whole
product is marked slow (`pytest -m ''` or `-m slow`).
"""

from __future__ import annotations

import copy
import functools
import itertools
import random
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

import optax_like.optim as optim
from optax_like.interop.torch import from_torch_state_dict, load_torch_state_dict

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),  # tests/conftest.py
    # Groups from optim.named_parameters without model= warn (tested in test_names.py).
    pytest.mark.filterwarnings("ignore:.*the param groups list arrays from optim.named_parameters"),
]

WIDTH = 4
LAYERS = 11  # Linear(4, 4) layers '0'..'10', then LayerNorm '11'
SAVED_AT, MORE = 2, 2  # torch steps before the save, steps compared after it
RTOL = 1e-12


# ---------------------------------------------------------------------------------- the torch model
def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)], nn.LayerNorm(WIDTH)).double()
    rng = np.random.default_rng(7)  # LayerNorm starts at ones/zeros: make every param distinct
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape))))
    return model


NAMES = tuple(n for n, _ in _model().named_parameters())  # registration order
SHAPES = {n: tuple(p.shape) for n, p in _model().named_parameters()}
LAYER_NORM = {f"{LAYERS}.weight", f"{LAYERS}.bias"}
NO_DECAY = frozenset(n for n in NAMES if n.endswith(".bias") or n in LAYER_NORM)  # HF: biases, LayerNorm
FROZEN = frozenset({"1.weight", "1.bias", f"{LAYERS}.bias"})  # requires_grad=False, left out
# Ours only, against torch's FROZEN: as many params, other ones. Loaded by position, '10.bias''s
# and '11.weight''s states land on '11.weight' and '11.bias' (shapes fit: nothing else tells).
FROZEN_OTHER = frozenset({"1.weight", "1.bias", "10.bias"})
assert list(NAMES) != sorted(NAMES) and NAMES.index("2.weight") < NAMES.index("10.weight")

# Gradients of each step, the same arrays for torch and ours.
_rng = np.random.default_rng(1234)
GRADS = [{n: _rng.standard_normal(SHAPES[n]) for n in NAMES} for _ in range(SAVED_AT + MORE)]

OPTIMIZERS = {
    "AdamW": (torch.optim.AdamW, optim.AdamW, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)),
    "Adam": (torch.optim.Adam, optim.Adam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)),
    "SGD": (torch.optim.SGD, optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
}


class Grouping(NamedTuple):
    members: tuple[tuple[str, ...], ...]  # each group's names, in registration order
    hyper: tuple[dict, ...]  # each group's own entries (besides 'params')


def _grouping(kind: str, weight_decay: float) -> Grouping:
    """'one': every param, one group; 'hf': decay / no decay; 'frozen': one group without FROZEN.
    Ours only: 'hf_swapped', HF groups with '5.weight' and '11.weight' in each other's group;
    'frozen_other', one group without FROZEN_OTHER."""
    if kind == "one":
        return Grouping((NAMES,), ({},))
    if kind in ("frozen", "frozen_other"):
        frozen = FROZEN if kind == "frozen" else FROZEN_OTHER
        return Grouping((tuple(n for n in NAMES if n not in frozen),), ({},))
    no_decay = set(NO_DECAY)
    if kind == "hf_swapped":
        no_decay = (no_decay - {f"{LAYERS}.weight"}) | {"5.weight"}
    elif kind != "hf":
        raise AssertionError(kind)
    return Grouping((tuple(n for n in NAMES if n not in no_decay), tuple(n for n in NAMES if n in no_decay)),
                    ({"weight_decay": weight_decay}, {"weight_decay": 0.0}))


def _trainable(grouping: Grouping) -> set[str]:
    return {n for group in grouping.members for n in group}


# ---------------------------------------------------------------------------------- the torch run
class TorchRun(NamedTuple):
    model: nn.Module  # at the end of the run (its names are what `source=` uses)
    saved: dict  # deep copy of torch_opt.state_dict() after SAVED_AT steps
    at_save: dict[str, np.ndarray]  # params at the save, by name
    final: dict[str, np.ndarray]  # params after MORE more steps, by name


@functools.lru_cache(maxsize=None)
def _torch_run(opt_name: str, kind: str, named: bool) -> TorchRun:
    torch_cls, _, kwargs = OPTIMIZERS[opt_name]
    grouping = _grouping(kind, kwargs["weight_decay"])
    model = _model()
    by_name = dict(model.named_parameters())
    trainable = _trainable(grouping)
    for n, p in by_name.items():
        p.requires_grad_(n in trainable)
    groups = [{"params": [(n, by_name[n]) if named else by_name[n] for n in members], **hyper}
              for members, hyper in zip(grouping.members, grouping.hyper)]
    if kind in ("one", "frozen"):  # torch's plain spellings: model.parameters() / named_parameters()
        if kind == "one":
            params = model.named_parameters() if named else model.parameters()
        else:
            params = ([(n, p) for n, p in model.named_parameters() if p.requires_grad] if named
                      else [p for p in model.parameters() if p.requires_grad])
    else:
        params = groups
    topt = torch_cls(params, foreach=False, **kwargs)
    if named:
        assert all("param_names" in g for g in topt.state_dict()["param_groups"])

    def step(s):
        for n, p in by_name.items():
            p.grad = torch.from_numpy(GRADS[s][n].copy()) if n in trainable else None
        topt.step()

    for s in range(SAVED_AT):
        step(s)
    saved = copy.deepcopy(topt.state_dict())
    at_save = {n: p.detach().numpy().copy() for n, p in by_name.items()}
    for s in range(SAVED_AT, SAVED_AT + MORE):
        step(s)
    final = {n: p.detach().numpy().copy() for n, p in by_name.items()}
    return TorchRun(model, saved, at_save, final)


# ---------------------------------------------------------------------------------- our optimizer
SPELLINGS = ("dict", "values", "sorted_list", "items", "named_parameters")


class Layout(NamedTuple):
    """How our optimizer's `params` (and gradients) are structured, to go to and from names."""
    model: bool  # params is the whole params dict (frozen leaves included)
    single: bool  # one group and no model: params is that group's tree, else a list of trees
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # per group: ('dict' | 'list', names in leaf order)


def _spell(spelling: str, params: dict, members: tuple[str, ...], use_model: bool, whole: bool):
    """One group's 'params' in the given spelling, and its (kind, leaf order)."""
    sub = params if whole else {n: params[n] for n in members}  # insertion: registration order
    if spelling == "dict":
        return sub, ("dict", tuple(sorted(members)))
    if spelling == "values":
        return list(sub.values()), ("list", tuple(members))
    if spelling == "sorted_list":
        if use_model:  # torch's `[p for n, p in model.named_parameters() if ...]` idiom, spelled over the tree
            arrays = [p for n, p in optim.named_parameters(params) if n in set(members)]
        else:
            arrays = jax.tree.leaves(sub)  # JAX's order: sorted keys
        order = tuple(sorted(members))
        assert all(a is params[n] for a, n in zip(arrays, order)) and len(arrays) == len(order)
        return arrays, ("list", order)
    if spelling == "items":
        return list(sub.items()), ("list", tuple(members))
    if spelling == "named_parameters":
        pairs = [(n, p) for n, p in optim.named_parameters(params) if n in set(members)]
        order = tuple(n for n, _ in pairs)
        assert order == tuple(sorted(members))
        return pairs, ("list", order)
    raise AssertionError(spelling)


def _build(opt_name: str, kind: str, spelling: str, use_model: bool, at_save: dict[str, np.ndarray]):
    """Our optimizer over torch's params at the save (fresh arrays: ours own and donate them)."""
    _, cls, kwargs = OPTIMIZERS[opt_name]
    grouping = _grouping(kind, kwargs["weight_decay"])
    trainable = _trainable(grouping)
    names = NAMES if use_model else tuple(n for n in NAMES if n in trainable)
    params = {n: jnp.asarray(at_save[n]) for n in names}  # insertion order: torch's registration order
    spelled, layout = [], []
    for members in grouping.members:
        tree, where = _spell(spelling, params, members, use_model, whole=members == names)
        spelled.append(tree)
        layout.append(where)
    single = len(grouping.members) == 1
    if single and not grouping.hyper[0]:
        arg = spelled[0]
    else:
        arg = [{"params": tree, **hyper} for tree, hyper in zip(spelled, grouping.hyper)]
    opt = cls(arg, **kwargs, model=params if use_model else None)
    return opt, Layout(use_model, single and not use_model, tuple(layout)), trainable


def _to_tree(layout: Layout, values: dict[str, Any]):
    """Values by name -> our params' structure (None where `values` has no entry: no gradient)."""
    if layout.model:
        return {n: values.get(n) for n in NAMES}
    trees = [{n: values[n] for n in order} if kind == "dict" else [values[n] for n in order]
             for kind, order in layout.groups]
    return trees[0] if layout.single else trees


def _by_name(layout: Layout, tree) -> dict[str, np.ndarray]:
    """Our params' structure -> host copies by name."""
    if layout.model:
        return {n: np.array(tree[n], copy=True) for n in NAMES}
    trees = [tree] if layout.single else list(tree)
    assert len(trees) == len(layout.groups)
    out = {}
    for (kind, order), t in zip(layout.groups, trees):
        assert len(t) == len(order)
        for i, n in enumerate(order):
            out[n] = np.array(t[n] if kind == "dict" else t[i], copy=True)
    return out


def _step(opt, layout: Layout, trainable: set[str], s: int) -> None:
    opt.zero_grad()
    opt.backward(_to_tree(layout, {n: jnp.asarray(GRADS[s][n]) for n in trainable}))
    opt.step()


def _snapshot(x):
    """A host copy of a state dict (arrays as NumPy) to compare before/after."""
    if isinstance(x, dict):
        return {k: _snapshot(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_snapshot(v) for v in x)
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return np.array(x, copy=True)
    return copy.deepcopy(x)


def _same(a, b, path="state_dict") -> str | None:
    """Where two snapshots differ (exactly, dtypes included), or None."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.dtype != b.dtype \
                or a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            return path
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path} keys {list(a)} != {list(b)}"
        return next((d for k in a if (d := _same(a[k], b[k], f"{path}[{k!r}]"))), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return path
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _same(x, y, f"{path}[{i}]"))), None)
    return None if a == b and type(a) is type(b) else f"{path}: {a!r} != {b!r}"


def _mismatch(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> tuple[list[str], float]:
    """Names whose values differ beyond RTOL, and the largest relative error over all names."""
    bad, worst = [], 0.0
    for n in want:
        g, w = np.asarray(got[n], np.float64), want[n]
        err = float(np.max(np.abs(g - w) / np.maximum(np.abs(w), 1e-300)))
        worst = max(worst, err)
        if not np.allclose(g, w, rtol=RTOL, atol=1e-15):
            bad.append(n)
    return bad, worst


# ---------------------------------------------------------------------------------- the load paths
LOADS = {
    "from_torch": lambda opt, sd, model: opt.load_state_dict(from_torch_state_dict(sd)),
    "tensors": lambda opt, sd, model: opt.load_state_dict(sd),
    "load_torch": lambda opt, sd, model: load_torch_state_dict(opt, sd),
    "load_torch_source": lambda opt, sd, model: load_torch_state_dict(opt, sd, source=model),
}


# ---------------------------------------------------------------------------------- the cases
def _ours_named(spelling: str, use_model: bool) -> bool:
    """Whether our params have torch's names: dict key paths, given names, or paths in `model`.
    A bare list without `model=` has none (its names are list positions)."""
    return use_model or spelling in ("dict", "items", "named_parameters")


class Case(NamedTuple):
    opt: str
    torch_kind: str  # 'one' | 'hf' | 'frozen'
    torch_named: bool
    ours_kind: str  # torch_kind, or 'hf_swapped' / 'frozen_other' (other members) against 'hf' / 'frozen'
    spelling: str
    use_model: bool
    load: str

    @property
    def id(self) -> str:
        return (f"{self.opt}-torch_{self.torch_kind}_{'named' if self.torch_named else 'bare'}-"
                f"ours_{self.ours_kind}_{self.spelling}{'_model' if self.use_model else ''}-{self.load}")


def _all_cases() -> list[Case]:
    cases = []
    for opt_name, kind, named, spelling, use_model, load in itertools.product(
            OPTIMIZERS, ("one", "hf", "frozen"), (False, True), SPELLINGS, (False, True), LOADS):
        cases.append(Case(opt_name, kind, named, kind, spelling, use_model, load))
    # Our groups' membership differs from torch's: must be refused (AdamW only: it is about the
    # groups). Only where both sides name their params (torch's saved `param_names`; ours: key
    # paths, given names or model=): without names on one side nothing can tell the groups apart.
    for (torch_kind, ours_kind), spelling, use_model, load in itertools.product(
            (("hf", "hf_swapped"), ("frozen", "frozen_other")), SPELLINGS, (False, True), LOADS):
        if _ours_named(spelling, use_model):
            cases.append(Case("AdamW", torch_kind, True, ours_kind, spelling, use_model, load))
    return cases


def _default_sample(cases: list[Case]) -> set[Case]:
    """A seeded sample for the default run: every (our grouping, spelling, model=) way against
    both torch spellings (named or not), each with a drawn optimizer and load path, plus enough
    cases that every load path meets every (spelling, model=) at least once."""
    rng = random.Random(20240601)
    chosen: set[Case] = set()
    by_way: dict[tuple, list[Case]] = {}
    for case in cases:
        by_way.setdefault((case.torch_kind, case.ours_kind, case.spelling, case.use_model, case.torch_named),
                          []).append(case)
    for key in sorted(by_way, key=str):
        chosen.add(rng.choice(by_way[key]))
    by_load_way: dict[tuple, list[Case]] = {}
    for case in cases:
        by_load_way.setdefault((case.spelling, case.use_model, case.load), []).append(case)
    for key in sorted(by_load_way, key=str):
        if not any(c in chosen for c in by_load_way[key]):
            chosen.add(rng.choice(by_load_way[key]))
    return chosen


ALL_CASES = _all_cases()
DEFAULT = _default_sample(ALL_CASES)


def _param(case: Case):
    return pytest.param(case, id=case.id, marks=() if case in DEFAULT else pytest.mark.slow)


def _names_the_fix(message: str) -> bool:
    return "source=" in message or "param_names" in message or "(name, param) pairs" in message


def _assert_positional(opt, saved) -> None:
    """(c): each saved group's j-th state is on our group's j-th param, as torch loads a list."""
    ours = opt.state_dict()
    for saved_group, group in zip(saved["param_groups"], ours["param_groups"]):
        for saved_id, our_id in zip(saved_group["params"], group["params"]):
            for key, value in saved["state"].get(saved_id, {}).items():
                np.testing.assert_array_equal(np.asarray(ours["state"][our_id][key]), np.asarray(value),
                                              err_msg=f"saved id {saved_id} -> our id {our_id}, {key!r}")


@pytest.mark.parametrize("case", [_param(c) for c in ALL_CASES])
def test_a_torch_resume_is_exact_or_refused(case: Case, x64):
    run = _torch_run(case.opt, case.torch_kind, case.torch_named)
    membership_matches = case.ours_kind == case.torch_kind
    # source= names torch's params; where ours have names too, the load must succeed. A bare list
    # without model= has no names to match (its order may be registration order or JAX's, as
    # jax.tree.leaves gives): exact or refused, as without source=.
    must_load = membership_matches and case.load == "load_torch_source" and _ours_named(case.spelling, case.use_model)

    opt, layout, trainable = _build(case.opt, case.ours_kind, case.spelling, case.use_model, run.at_save)
    sd_before = _snapshot(opt.state_dict())
    params_before = _by_name(layout, opt.params)
    saved = copy.deepcopy(run.saved)
    try:
        LOADS[case.load](opt, saved, run.model)
    except ValueError as e:
        refusal = str(e)
    except Exception as e:  # noqa: BLE001 - any other type is a failure of the contract
        pytest.fail(f"neither outcome: the load raised {type(e).__name__} (not ValueError): {e}")
    else:
        refusal = None

    if refusal is None and case.spelling == "sorted_list" and not case.use_model:
        _assert_positional(opt, run.saved)  # (c): the documented exception, torch's rule for a list
        return
    if refusal is None:  # (a): our continuation must be torch's, param by param, by name
        for s in range(SAVED_AT, SAVED_AT + MORE):
            _step(opt, layout, trainable, s)
        got = _by_name(layout, opt.params)
        bad, worst = _mismatch(got, {n: run.final[n] for n in got})
        if not membership_matches:
            pytest.fail(f"loaded a state whose param groups hold other params than ours (must be refused); "
                        f"the continuation then differs from torch's on {bad} (max relative error {worst:.3g})")
        assert not bad, (f"silent wrong state: the load succeeded but the continuation differs from torch's "
                         f"on {len(bad)} params {bad} (max relative error {worst:.3g})")
        return

    # (b): a refusal that names the fix, and the optimizer untouched. Every problem is reported.
    problems = []
    if must_load:
        problems.append(f"source= names every param, the load must succeed; refused with: {refusal}")
    elif not _names_the_fix(refusal):
        problems.append(f"refused with a ValueError that names no fix (source= / param_names): {refusal}")
    where = _same(sd_before, _snapshot(opt.state_dict()))
    if where is not None:
        problems.append(f"the refused load changed the optimizer's state_dict() at {where}")
    after = _by_name(layout, opt.params)
    changed = [n for n in params_before if not np.array_equal(after[n], params_before[n])]
    if changed:
        problems.append(f"the refused load changed the params {changed}")
    fresh, fresh_layout, _ = _build(case.opt, case.ours_kind, case.spelling, case.use_model, run.at_save)
    for s in range(SAVED_AT, SAVED_AT + MORE):
        _step(opt, layout, trainable, s)
        _step(fresh, fresh_layout, trainable, s)
    bad, worst = _mismatch(_by_name(layout, opt.params), _by_name(fresh_layout, fresh.params))
    if bad:
        problems.append(f"after the refused load, steps differ from a freshly built optimizer's on {bad} "
                        f"(max relative error {worst:.3g})")
    where = _same(_snapshot(fresh.state_dict()), _snapshot(opt.state_dict()))
    if where is not None:
        problems.append(f"after the refused load, the state differs from a fresh optimizer's at {where}")
    assert not problems, "; ".join(problems)


def test_the_default_sample_covers_every_dimension():
    """The default run meets every value of every dimension, every way against both torch
    spellings, and every (spelling, model=) x load path."""
    assert len(DEFAULT) < len(ALL_CASES)
    for field in Case._fields:
        assert {getattr(c, field) for c in DEFAULT} == {getattr(c, field) for c in ALL_CASES}, field
    ways = lambda cs: {(c.torch_kind, c.ours_kind, c.spelling, c.use_model, c.torch_named) for c in cs}  # noqa: E731
    assert ways(DEFAULT) == ways(ALL_CASES)
    loads = lambda cs: {(c.spelling, c.use_model, c.load) for c in cs}  # noqa: E731
    assert loads(DEFAULT) == loads(ALL_CASES)


def test_the_harness_sees_a_wrong_placement(x64):
    """The comparison is sharp: swapping the saved state of two equal-shaped params (by hand, in
    our own state dict) makes the continuation differ from torch's, so an exact continuation in
    the test above is evidence that every state landed on its own param."""
    run = _torch_run("AdamW", "one", True)
    opt, layout, trainable = _build("AdamW", "one", "dict", False, run.at_save)
    load_torch_state_dict(opt, copy.deepcopy(run.saved))  # named: loads by name
    sd = opt.state_dict()
    ids = dict(zip(sd["param_groups"][0]["param_names"], sd["param_groups"][0]["params"]))
    a, b = ids["2.weight"], ids["10.weight"]
    sd["state"][a], sd["state"][b] = sd["state"][b], sd["state"][a]
    swapped, _, _ = _build("AdamW", "one", "dict", False, run.at_save)
    swapped.load_state_dict(sd)
    for s in range(SAVED_AT, SAVED_AT + MORE):
        _step(opt, layout, trainable, s)
        _step(swapped, layout, trainable, s)
    assert _mismatch(_by_name(layout, opt.params), run.final)[0] == []
    assert set(_mismatch(_by_name(layout, swapped.params), run.final)[0]) == {"2.weight", "10.weight"}
