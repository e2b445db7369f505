"""torch's own optimizer database as the registry of parity configurations (issue 15).

Every optimizer of `optax_like.registry` is run against its reference in both of our views:

- `functional`: the factory (`optax_like.adam(**kwargs)`), one jitted `update` + `apply_updates`;
- `class`: the adapter (`optax_like.optim.Adam(params, **kwargs)`), `backward(grads)` + `step()`;

for 20 steps on a fixed gradient sequence (a record with `closure`, LBFGS and Adahessian: a fixed
smooth, separable loss, one `step(closure)` per step; its Hessian is diagonal, so Adahessian's
Hutchinson estimate is exact whatever the probes, timm's generator's or ours), in float64 (scoped x64) and float32. The reference runs each configuration once; both
views are compared with its params after every step: float64 within 1e-10 relative (floor 1:
see tests/parity/harness.py), float32 within 1e-5 (a record's `rtol32`, bf16 inner math such as
Muon's Newton-Schulz, applies to both dtypes: float64 params share that math). LBFGS also
compares `n_iter` and `func_evals`: the same iteration counts.

The configurations: for a record whose reference is a torch.optim class, every configuration
torch tests it with (`optim_db` in torch/testing/_internal/common_optimizers.py: its
`optim_inputs_func(device="cpu")`, plus the `differentiable`/`fused` variants torch's
`_get_optim_inputs_including_global_cliquey_kwargs` adds on CPU). For another reference (timm's
Lion, ...): the record's `example` and each of its `variants` over it (an `Interval` in a
variant: its midpoint); the reference then runs its single-tensor path (`foreach=False` where
it takes one). A torch record's example and variants (edge values torch's database lacks: zero
betas, RAdam never rectified, Rprop's clamps binding, ...) run after torch's configurations.

From the record: the factory, adapter class and reference, the param shapes (Muon: 2-D only;
layout "sparse": row-sparse BCOO gradients with a duplicate index, as torch's coalesced sparse
COO), `closure`, `groups`, `rtol32`; and two configurations beside the reference's: a
None-gradient run (a param without gradient on some steps, skipped as torch skips
`p.grad is None`) and a two-group run (the second group with its own lr; functionally a
`multi_transform`), on the first configuration, where the record allows several groups; and
`inject_hyperparams(factory)` on the example (every hyperparameter a traced scalar).

The default run (one representative configuration per optimizer): each optimizer's first
configuration in float64 in both views and in float32 functionally, the None-gradient and
two-group runs functionally and the injected run, in float64; the rest of the sweep is marked
`slow` (`-m slow` or `-m ''` runs it all; the class view's None-gradient and two-group runs are
also tests/optim/test_classes_parity.py's).
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like import optim, registry
from tests.parity.harness import assert_close, jax_grad

common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers", reason="needs expecttest (the `test` extra)"
)

STEPS = 20
RTOL = {"float64": 1e-10, "float32": 1e-5}

# Keyed by adapter class name (test ids: `Adam-<config>-float64-functional`).
RECORDS = {info.cls: info for info in registry.OPTIMIZERS.values()}
DB = {info.optim_cls.__name__: info for info in common_optimizers.optim_db}
TORCH = {name for name, info in RECORDS.items() if info.reference_package == "torch"}
assert {f"torch.optim.{name}" for name in DB} <= {info.reference for info in RECORDS.values()}, \
    "a new optimizer in torch's optim_db needs its registry record"
assert all(RECORDS[name].reference_class().__name__ in DB for name in TORCH), \
    "a torch-referenced record torch's optim_db does not have"


def known_failure(name, desc, dtype, view, variant="torch"):
    """The reason a case fails today (xfail, strict): a record's `known_failures` (one of its
    deviations), keyed `<config or variant>-<dtype>-<view>`."""
    return RECORDS[name].known_failures.get(f"{desc if variant == 'torch' else variant}-{dtype}-{view}")


@functools.lru_cache(maxsize=None)
def _config_list(name):
    info = RECORDS[name]
    ours = (("example", dict(info.example)),) + tuple(
        (f"variant {variant}", info.variant_kwargs(variant)) for variant in info.variants)
    if name in TORCH:  # torch's configurations on CPU, cliquey variants included; then ours
        db = DB[info.reference_class().__name__]
        inputs = common_optimizers._get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float64, db)
        return tuple((inp.desc, dict(inp.kwargs)) for inp in inputs) + ours
    return ours


def _configs(name):
    """The reference's configurations for `name`: [(desc, kwargs)] (fresh dicts)."""
    return [(desc, dict(kwargs)) for desc, kwargs in _config_list(name)]


CASES = [(name, desc) for name in RECORDS for desc, _ in _configs(name)]
FIRST = {name: _configs(name)[0][0] for name in RECORDS}


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


def _torch_kwargs(name, kwargs):
    kwargs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    if name not in TORCH and "foreach" in inspect.signature(RECORDS[name].reference_class()).parameters:
        kwargs.setdefault("foreach", False)  # the reference's single-tensor path
    return kwargs


# ------------------------------------------------------------------------------- the problems
def _init(name, dtype):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dtype) for s in RECORDS[name].shapes]


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
        for i, s in enumerate(RECORDS[name].shapes):
            if RECORDS[name].layout == "sparse":
                idx = rng.integers(0, s[0], 4)
                idx[-1] = idx[0]  # a duplicate row (torch coalesces)
                g = (idx, rng.standard_normal((4, *s[1:])).astype(dtype))
            else:
                g = rng.standard_normal(s).astype(dtype)
            row.append(g if _present(variant, t, i) else None)
        out.append(row)
    return out


def _lbfgs_loss(params, lib, dtype, variant, name="LBFGS"):
    """A smooth, non-quadratic loss (of the record `name`'s shapes); the None-gradient run leaves
    the last param out. Separable: its Hessian is diagonal, so a Hutchinson estimate z * (H z)
    is the diagonal whatever the probes (Adahessian: the reference's own generator, no draws to
    feed)."""
    rng = np.random.default_rng(2)
    used = params[:-1] if variant == "none_grad" else params
    total = 0.0
    for i, p in enumerate(used):
        shape = RECORDS[name].shapes[i]
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
    lr = kwargs.get("lr", inspect.signature(RECORDS[name].reference_class()).parameters["lr"].default)
    return float(lr) * 0.5


# ------------------------------------------------------------------------------- torch, once
@functools.lru_cache(maxsize=None)
def torch_run(name, desc, dtype, variant):
    """torch's params after each step (and LBFGS's (n_iter, func_evals)), as NumPy arrays."""
    kwargs = _torch_kwargs(name, _kwargs(name, desc))
    record = RECORDS[name]
    params = [torch.tensor(p, requires_grad=record.closure) for p in _init(name, dtype)]
    if variant == "two_groups":
        groups = [{"params": params[:-1]}, {"params": params[-1:], "lr": _second_lr(kwargs, name)}]
        opt = record.new_reference(groups, **kwargs)
    else:
        opt = record.new_reference(params, **kwargs)
    trajectory = []
    if record.closure:
        def closure():
            opt.zero_grad()
            loss = _lbfgs_loss(params, torch, dtype, variant, name)
            loss.backward(create_graph=True)  # (Adahessian differentiates the gradients)
            return loss

        for _ in range(STEPS):
            opt.step(closure)
            state = opt.state[params[0]]
            counts = (state["n_iter"], state["func_evals"]) if "n_iter" in state else None  # LBFGS's
            trajectory.append(([p.detach().numpy().copy() for p in params], counts))
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
    factory = RECORDS[name].factory
    if variant == "injected":  # every hyperparameter a traced scalar (the adapter's path too)
        return ol.inject_hyperparams(factory)(**kwargs)
    if variant == "two_groups":
        n = len(RECORDS[name].shapes)
        index = RECORDS[name].adapter.get("group_index")  # the second group's position (timm Kron: its draws)
        second = dict(kwargs, lr=_second_lr(kwargs, name), **({index: 1} if index else {}))
        return ol.multi_transform(
            {"a": factory(**kwargs), "b": factory(**second)},
            ["a"] * (n - 1) + ["b"],
        )
    return factory(**kwargs)


def functional_run(name, desc, dtype, variant):
    kwargs = _our_kwargs(_kwargs(name, desc))
    record = RECORDS[name]
    tx = _functional_tx(name, kwargs, variant)
    params = [jnp.asarray(p) for p in _init(name, dtype)]
    state = tx.init(params)
    if variant == "none_grad":  # (closure records: the loss leaves the last param out)
        state = ol.per_leaf_scalars(state)  # per-param counters: a leaf may miss its gradient
    if record.closure:
        loss = functools.partial(_lbfgs_loss, lib=jnp, dtype=dtype, variant=variant, name=name)

        @jax.jit
        def step(state, params):
            updates, state = tx.update(None, state, params, value_fn=loss)
            return ol.apply_updates(params, updates), state

        for _ in range(STEPS):
            params, state = step(state, params)
            yield params, ((int(state.n_iter), int(state.func_evals)) if hasattr(state, "n_iter") else None)
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
    record = RECORDS[name]
    params = [jnp.asarray(p) for p in _init(name, dtype)]
    if variant == "two_groups":
        opt = record.new_adapter([{"params": params[:-1]}, {"params": params[-1:], "lr": _second_lr(kwargs, name)}],
                                 **kwargs)
    else:
        opt = record.new_adapter(params, **kwargs)

    def flat():
        tree = opt.params
        return [p for group in tree for p in group] if variant == "two_groups" else list(tree)

    if record.closure:
        loss = functools.partial(_lbfgs_loss, lib=jnp, dtype=dtype, variant=variant, name=name)
        if variant == "two_groups":
            loss = (lambda lbfgs_loss: lambda groups: lbfgs_loss([p for group in groups for p in group]))(loss)
        for t in range(STEPS):
            opt.step(loss)
            if t < STEPS - 1:
                yield flat(), None  # the state dict exports the whole history: read it once
            else:
                entry = opt.state_dict()["state"][0]
                yield flat(), ((entry["n_iter"], entry["func_evals"]) if "n_iter" in entry else None)
        return
    for grads in _grads(name, dtype, variant):
        opt.zero_grad()
        grads = [jax_grad(g, s) for g, s in zip(grads, record.shapes)]
        opt.backward([grads[:-1], grads[-1:]] if variant == "two_groups" else grads)
        opt.step()
        yield flat(), None


VIEWS = {"functional": functional_run, "class": class_run}


def check_against_torch(name, desc, dtype, view, variant="torch"):
    theirs = torch_run(name, desc, dtype, "torch" if variant == "injected" else variant)
    rtol = RECORDS[name].rtol32 or (RECORDS[name].rtol64 if dtype == "float64" else None) or RTOL[dtype]
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
    """The default run: each optimizer's first config (one representative configuration), in
    float64 in both views and in float32 functionally; every other config, dtype and view is
    `slow`. A record marked `slow` (registry): its example in float64 only."""
    if RECORDS[name].slow:
        return not (desc == "example" and dtype == "float64")
    if desc != FIRST[name]:
        return True
    return dtype == "float32" and view == "class"


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
    slow = dtype == "float32" or RECORDS[name].slow or (view == "class" and variant != "injected")
    marks = [pytest.mark.slow] if slow else []
    reason = known_failure(name, FIRST[name], dtype, view, variant)
    if reason:
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(name, dtype, view, variant, id=f"{name}-{variant}-{dtype}-{view}", marks=marks)


VARIANT_PARAMS = [
    _variant_param(name, dtype, view, variant)
    for name in RECORDS for variant in ("none_grad", "two_groups") if variant != "two_groups" or RECORDS[name].groups
    for dtype in ("float64", "float32") for view in VIEWS
] + [
    _variant_param(name, dtype, "functional", "injected")
    for name in RECORDS if not RECORDS[name].closure for dtype in ("float64", "float32")
]


@pytest.mark.parametrize("name, dtype, view, variant", VARIANT_PARAMS)
def test_our_configs(name, dtype, view, variant):
    """Our runs of the reference's configurations: None gradients and two groups (on its first
    configuration), and `inject_hyperparams(factory)` (on the record's example)."""
    with _x64(dtype):
        check_against_torch(name, "example" if variant == "injected" else FIRST[name], dtype, view, variant)


def test_registry_covers_every_optimizer_config():
    """The sweep is torch's database, not a copy: every configuration of every record is a case,
    and so are each record's example and variants."""
    ours = sum(1 + len(info.variants) for info in RECORDS.values())
    inputs = common_optimizers._get_optim_inputs_including_global_cliquey_kwargs
    torch_configs = sum(len(inputs("cpu", torch.float64, db)) for db in DB.values())
    assert len(CASES) == torch_configs + ours
    assert len({(n, d) for n, d in CASES}) == len(CASES), "two configs of a record share a description"
    assert torch_configs >= 180


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
