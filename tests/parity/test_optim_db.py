"""torch's own optimizer database as the registry of parity configurations (issue 15).

Every configuration torch tests its optimizers with (`optim_db` in
torch/testing/_internal/common_optimizers.py: each record's `optim_inputs_func(device="cpu")`,
plus the `differentiable`/`fused` variants torch's `_get_optim_inputs_including_global_cliquey_kwargs`
adds on CPU) is run against both of our views:

- `functional`: the factory (`optax_like.adam(**kwargs)`), one jitted `update` + `apply_updates`;
- `class`: the adapter (`optax_like.optim.Adam(params, **kwargs)`), `backward(grads)` + `step()`;

for 20 steps on a fixed gradient sequence (LBFGS: a fixed smooth loss, one `step(closure)` per
step), in float64 (scoped x64) and float32. torch runs each configuration once; both views are
compared with its params after every step: float64 within 1e-10 relative (floor 1: see
tests/parity/harness.py), float32 within 1e-5 (Muon: 1e-3, its Newton-Schulz runs in bfloat16
on both sides). LBFGS also compares `n_iter` and `func_evals`: the same iteration counts.

Our own additions live in one record per optimizer beside torch's (`OURS`): the factory, the
param shapes (Muon: 2-D only; SparseAdam: row-sparse BCOO gradients with a duplicate index, as
torch's coalesced sparse COO), and two configurations torch's inputs do not have: a
None-gradient run (a param without gradient on some steps, skipped as torch skips
`p.grad is None`) and a two-group run (the second group with its own lr; functionally a
`multi_transform`). LBFGS takes one group in torch (no two-group run).

The default run covers every configuration in float64 (the functional view without torch's
`differentiable`/`fused` variants) and each optimizer's first configuration in float32, plus
the None-gradient and two-group runs in float64; the rest of the sweep is marked `slow`
(`-m slow` or `-m ''` runs it all).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import sparse as jsparse

import optax_like as ol
from optax_like import optim
from tests.parity.harness import assert_close, jax_grad

common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers", reason="needs expecttest (the `test` extra)"
)

STEPS = 20
RTOL = {"float64": 1e-10, "float32": 1e-5}
MUON_RTOL = 1e-3  # bf16 Newton-Schulz on both sides, gemm accumulation order (test_muon.py)


@dataclasses.dataclass(frozen=True)
class Ours:
    """Our record for one torch optimizer: what torch's `OptimizerInfo` does not say."""

    factory: Callable
    shapes: tuple = ((4, 3), (5,), ())
    sparse: bool = False  # gradients are row-sparse (SparseAdam)
    closure: bool = False  # a step evaluates a loss (LBFGS)
    rtol: float | None = None  # overrides RTOL (both dtypes)
    groups: bool = True  # torch accepts several param groups


OURS = {
    "Adadelta": Ours(ol.adadelta),
    "Adafactor": Ours(ol.adafactor, shapes=((4, 3), (5,), (2, 3, 4), ())),
    "Adagrad": Ours(ol.adagrad),
    "Adam": Ours(ol.adam),
    "Adamax": Ours(ol.adamax),
    "AdamW": Ours(ol.adamw),
    "ASGD": Ours(ol.asgd),
    "LBFGS": Ours(ol.lbfgs, shapes=((4, 3), (5,)), closure=True, groups=False),
    "Muon": Ours(ol.muon, shapes=((4, 3), (3, 5)), rtol=MUON_RTOL),
    "NAdam": Ours(ol.nadam),
    "RAdam": Ours(ol.radam),
    "RMSprop": Ours(ol.rmsprop),
    "Rprop": Ours(ol.rprop),
    "SGD": Ours(ol.sgd),
    "SparseAdam": Ours(ol.sparse_adam, shapes=((6, 3), (5,)), sparse=True),
}
DB = {info.optim_cls.__name__: info for info in common_optimizers.optim_db}
assert sorted(DB) == sorted(OURS), "a new optimizer in torch's optim_db needs its record here"



def known_failure(name, desc, dtype, view, variant="torch"):
    """The reason a case fails today, for failures owned by other work items (xfail, strict)."""
    return None


def _configs(name):
    """torch's configurations for `name` on CPU, cliquey variants included: [(desc, kwargs)]."""
    inputs = common_optimizers._get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float64, DB[name])
    return [(inp.desc, dict(inp.kwargs)) for inp in inputs]


CASES = [(name, desc) for name in OURS for desc, _ in _configs(name)]
FIRST = {name: _configs(name)[0][0] for name in OURS}


def _kwargs(name, desc):
    return dict(dict(_configs(name))[desc])


def _our_value(x):
    if isinstance(x, torch.Tensor):  # torch's Tensor lr: a 0-d float32 tensor
        return jnp.asarray(x.numpy())
    if isinstance(x, tuple):
        return tuple(_our_value(y) for y in x)
    return x


def _our_kwargs(kwargs):
    return {k: _our_value(v) for k, v in kwargs.items()}


def _torch_kwargs(kwargs):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}


# ------------------------------------------------------------------------------- the problems
def _init(name, dtype):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dtype) for s in OURS[name].shapes]


def _present(variant, t, i):
    """Whether param i has a gradient at step t (the None-gradient run leaves some out)."""
    if variant != "none_grad":
        return True
    return not ((i == 1 and t % 3 == 1) or (i == 0 and t < 4))


def _grads(name, dtype, variant):
    """grads[t][i]: an array, (rows, values) for sparse records, or None."""
    rng = np.random.default_rng(1)
    out = []
    for t in range(STEPS):
        row = []
        for i, s in enumerate(OURS[name].shapes):
            if OURS[name].sparse:
                idx = rng.integers(0, s[0], 4)
                idx[-1] = idx[0]  # a duplicate row (torch coalesces)
                g = (idx, rng.standard_normal((4, *s[1:])).astype(dtype))
            else:
                g = rng.standard_normal(s).astype(dtype)
            row.append(g if _present(variant, t, i) else None)
        out.append(row)
    return out


def _lbfgs_loss(params, lib, dtype, variant):
    """A smooth, non-quadratic loss; the None-gradient run leaves the last param out."""
    rng = np.random.default_rng(2)
    used = params[:-1] if variant == "none_grad" else params
    total = 0.0
    for i, p in enumerate(used):
        shape = OURS["LBFGS"].shapes[i]
        c = rng.uniform(0.5, 2.0, shape).astype(dtype)
        t = rng.standard_normal(shape).astype(dtype)
        c, t = (jnp.asarray(c), jnp.asarray(t)) if lib is jnp else (torch.tensor(c), torch.tensor(t))
        total = total + lib.sum(c * (p - t) ** 2 + 0.25 * (p - t) ** 4)
    return total


def _torch_grad(g, p):
    if g is None:
        return None
    if isinstance(g, tuple):
        idx, vals = g
        return torch.sparse_coo_tensor(torch.tensor(idx[None]), torch.tensor(vals), p.shape)
    return torch.tensor(g)


def _second_lr(kwargs, name):
    """The second group's lr in the two-group run: half the first group's."""
    lr = kwargs.get("lr", inspect.signature(DB[name].optim_cls).parameters["lr"].default)
    return float(lr) * 0.5


# ------------------------------------------------------------------------------- torch, once
@functools.lru_cache(maxsize=None)
def torch_run(name, desc, dtype, variant):
    """torch's params after each step (and LBFGS's (n_iter, func_evals)), as NumPy arrays."""
    kwargs = _torch_kwargs(_kwargs(name, desc))
    record = OURS[name]
    params = [torch.tensor(p, requires_grad=record.closure) for p in _init(name, dtype)]
    if variant == "two_groups":
        groups = [{"params": params[:-1]}, {"params": params[-1:], "lr": _second_lr(kwargs, name)}]
        opt = DB[name].optim_cls(groups, **kwargs)
    else:
        opt = DB[name].optim_cls(params, **kwargs)
    trajectory = []
    if record.closure:
        def closure():
            opt.zero_grad()
            loss = _lbfgs_loss(params, torch, dtype, variant)
            loss.backward()
            return loss

        for _ in range(STEPS):
            opt.step(closure)
            state = opt.state[params[0]]
            trajectory.append(([p.detach().numpy().copy() for p in params], (state["n_iter"], state["func_evals"])))
        return trajectory
    grads = _grads(name, dtype, variant)
    for t in range(STEPS):
        for p, g in zip(params, grads[t]):
            p.grad = _torch_grad(g, p)
        opt.step()
        trajectory.append(([p.detach().numpy().copy() for p in params], None))
    return trajectory


# ------------------------------------------------------------------------------- our views
def _functional_tx(name, kwargs, variant):
    factory = OURS[name].factory
    if variant == "two_groups":
        n = len(OURS[name].shapes)
        return ol.multi_transform(
            {"a": factory(**kwargs), "b": factory(**dict(kwargs, lr=_second_lr(kwargs, name)))},
            ["a"] * (n - 1) + ["b"],
        )
    return factory(**kwargs)


def functional_run(name, desc, dtype, variant):
    kwargs = _our_kwargs(_kwargs(name, desc))
    record = OURS[name]
    tx = _functional_tx(name, kwargs, variant)
    params = [jnp.asarray(p) for p in _init(name, dtype)]
    state = tx.init(params)
    if variant == "none_grad" and not record.closure:
        state = ol.per_leaf_scalars(state)  # per-param counters: a leaf may miss its gradient
    if record.closure:
        loss = functools.partial(_lbfgs_loss, lib=jnp, dtype=dtype, variant=variant)

        @jax.jit
        def step(state, params):
            updates, state = tx.update(None, state, params, value_fn=loss)
            return ol.apply_updates(params, updates), state

        for _ in range(STEPS):
            params, state = step(state, params)
            yield params, (int(state.n_iter), int(state.func_evals))
        return

    @jax.jit
    def step(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    for grads in _grads(name, dtype, variant):
        params, state = step([jax_grad(g, s) for g, s in zip(grads, record.shapes)], state, params)
        yield params, None


def class_run(name, desc, dtype, variant):
    kwargs = _our_kwargs(_kwargs(name, desc))
    record = OURS[name]
    params = [jnp.asarray(p) for p in _init(name, dtype)]
    cls = getattr(optim, name)
    if variant == "two_groups":
        opt = cls([{"params": params[:-1]}, {"params": params[-1:], "lr": _second_lr(kwargs, name)}], **kwargs)
    else:
        opt = cls(params, **kwargs)

    def flat():
        tree = opt.params
        return [p for group in tree for p in group] if variant == "two_groups" else list(tree)

    if record.closure:
        loss = functools.partial(_lbfgs_loss, lib=jnp, dtype=dtype, variant=variant)
        for t in range(STEPS):
            opt.step(loss)
            if t < STEPS - 1:
                yield flat(), None  # the state dict exports the whole history: read it once
            else:
                entry = opt.state_dict()["state"][0]
                yield flat(), (entry["n_iter"], entry["func_evals"])
        return
    for grads in _grads(name, dtype, variant):
        opt.zero_grad()
        grads = [jax_grad(g, s) for g, s in zip(grads, record.shapes)]
        opt.backward([grads[:-1], grads[-1:]] if variant == "two_groups" else grads)
        opt.step()
        yield flat(), None


VIEWS = {"functional": functional_run, "class": class_run}


def check_against_torch(name, desc, dtype, view, variant="torch"):
    theirs = torch_run(name, desc, dtype, variant)
    rtol = OURS[name].rtol or RTOL[dtype]
    for t, ((params, counts), (torch_params, torch_counts)) in enumerate(
            zip(VIEWS[view](name, desc, dtype, variant), theirs)):
        if counts is not None:  # totals so far: a differing step shows in every later total
            assert counts == torch_counts, f"step {t + 1}: (n_iter, func_evals) {counts} != torch's {torch_counts}"
        assert_close(params, torch_params, dtype, t + 1, rtol)


def _x64(dtype):
    return jax.enable_x64(dtype == "float64")


def _param(name, desc, dtype, view, slow=False):
    marks = []
    reason = known_failure(name, desc, dtype, view)
    if reason:
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    if slow:
        marks.append(pytest.mark.slow)
    return pytest.param(name, desc, dtype, view, marks=marks, id=f"{name}-{desc}-{dtype}-{view}")


def _slow(name, desc, dtype, view):
    """The default run: every config in float64 (the functional view without torch's
    differentiable/fused variants, which compile one more program each), each optimizer's first
    config in float32; the rest of the sweep is `slow`."""
    if dtype == "float32":
        return desc != FIRST[name]
    return view == "functional" and ("differentiable" in desc or "fused" in desc)


PARAMS = [
    _param(name, desc, dtype, view, slow=_slow(name, desc, dtype, view))
    for name, desc in CASES for dtype in ("float64", "float32") for view in VIEWS
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.mark.parametrize("name, desc, dtype, view", PARAMS)
def test_torch_config(name, desc, dtype, view):
    with _x64(dtype):
        check_against_torch(name, desc, dtype, view)


def _variant_param(name, dtype, view, variant):
    marks = [pytest.mark.slow] if dtype == "float32" else []
    reason = known_failure(name, FIRST[name], dtype, view, variant)
    if reason:
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(name, dtype, view, variant, id=f"{name}-{variant}-{dtype}-{view}", marks=marks)


VARIANT_PARAMS = [
    _variant_param(name, dtype, view, variant)
    for name in OURS for variant in ("none_grad", "two_groups") if variant != "two_groups" or OURS[name].groups
    for dtype in ("float64", "float32") for view in VIEWS
]


@pytest.mark.parametrize("name, dtype, view, variant", VARIANT_PARAMS)
def test_our_configs(name, dtype, view, variant):
    """The record's own configurations on torch's default kwargs: None gradients, two groups."""
    with _x64(dtype):
        check_against_torch(name, FIRST[name], dtype, view, variant)


def test_registry_covers_every_optimizer_config():
    """The sweep is torch's database, not a copy: every configuration of every record is a case."""
    assert len(CASES) == sum(len(_configs(name)) for name in DB)
    assert len({(n, d) for n, d in CASES}) == len(CASES), "two torch configs share a description"
    assert len(CASES) >= 180


# ------------------------------------------------------------------- beyond float32's range
# Issue 15: a hyperparameter is never silently inf. It must fit the traced dtype (float32 unless
# x64 is on) and the dtype its params compute in; otherwise torch's overflow error, naming it.


def _first_step(view, name, params, **hyper):
    """One update of `name` with gradients of ones: the factory's `update`, or the class's
    construction, `backward` and `step` (so an error may come from any of them)."""
    grads = [jnp.ones_like(p) for p in params]
    if view == "functional":
        tx = getattr(ol, name.lower())(**hyper)
        tx.update(grads, tx.init(params), params)
    else:
        ours = getattr(optim, name)(params, **hyper)
        ours.backward(grads)
        ours.step()


@pytest.mark.parametrize("view, x64", [("functional", False), ("class", False), ("functional", True), ("class", True)])
def test_lr_beyond_float32_range_raises_like_torch_for_float32_params(view, x64):
    """torch: `SGD(lr=1e308)` constructs, and its step on float32 params raises RuntimeError('value
    cannot be converted to type float without overflow'); ours raises the same type at the first
    update (factory) / step (adapter), x64 on or off, rather than producing inf/nan."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1e308)
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="value cannot be converted to type float without overflow"):
        opt.step()
    with jax.enable_x64(x64):
        params = [jnp.ones(3, jnp.float32)]
        with pytest.raises(RuntimeError, match="value cannot be converted to type float32 without overflow"):
            _first_step(view, "SGD", params, lr=1e308)


@pytest.mark.parametrize("view", ["functional", "class"])
def test_adagrad_lr_decay_beyond_float32_range_is_refused_for_float32_params(view):
    """A deliberate difference: torch's `Adagrad(lr_decay=1e308)` computes its decayed lr on
    Python floats and stays finite on float32 params; ours computes it in the params' float32
    (traced, one program for every lr_decay) and refuses the value, naming it, rather than
    stepping with inf/nan. float64 params (x64) match torch's trajectory (below)."""
    params = [jnp.ones(3, jnp.float32)]
    # the class names the group entry; the factory's host math names the value (1e+308)
    with pytest.raises(RuntimeError, match="without overflow: (lr_decay|hyperparameter)=1e\\+308"):
        _first_step(view, "Adagrad", params, lr_decay=1e308)


@pytest.mark.parametrize("view, dtype", [("functional", "float64"), ("class", "float64")])
def test_adagrad_lr_decay_beyond_float32_range_stays_finite_like_torch(view, dtype):
    """torch: `Adagrad(lr_decay=1e308)` computes `lr / (1 + (step - 1) * lr_decay)` on Python
    floats: finite (the first step moves, the next ones barely). Ours matches its trajectory."""
    init = np.ones(3, dtype)
    p = torch.nn.Parameter(torch.tensor(init))
    opt = torch.optim.Adagrad([p], lr_decay=1e308)
    with _x64(dtype):
        params = [jnp.asarray(init)]
        if view == "functional":
            tx = ol.adagrad(lr_decay=1e308)
            state = tx.init(params)
        else:
            ours = optim.Adagrad(params, lr_decay=1e308)
        for t in range(5):
            p.grad = torch.ones(3, dtype=p.dtype)
            opt.step()
            grads = [jnp.ones(3, dtype)]
            if view == "functional":
                updates, state = tx.update(grads, state, params)
                params = ol.apply_updates(params, updates)
            else:
                ours.backward(grads)
                ours.step()
                ours.zero_grad()
                params = list(ours.params)
            assert np.all(np.isfinite(np.asarray(params[0])))
            assert_close(params, [p.detach().numpy()], dtype, t + 1, RTOL[dtype])
