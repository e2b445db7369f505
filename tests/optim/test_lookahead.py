"""optax_like.optim.Lookahead (and timm's `lookahead_<name>`) against timm 1.0.31's Lookahead
wrapper around torch's optimizers: numbers, state_dict both ways, group entries, and the base
after wrapping (timm shares its param_groups and defaults: an LR scheduler attached to the base,
an edit of its groups, its state_dict() and its own step())."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_like import optim
from optax_like import param_groups as pg
from optax_like.interop.torch import to_torch_state_dict
from optax_like.optim import grouping
from optax_like.registry import import_reference_module
from tests.parity.harness import make_problem

torch = pytest.importorskip("torch")
TimmLookahead = import_reference_module("timm.optim.lookahead").Lookahead
RTOL = 1e-12


def _groups(tensors_or_arrays, lr2=0.02):
    """Two groups: params 0, 1 and param 2 (its own lr)."""
    return [{"params": list(tensors_or_arrays[:2])}, {"params": list(tensors_or_arrays[2:]), "lr": lr2}]


def _pair(cls_name="AdamW", alpha=0.5, k=3, **kwargs):
    kwargs = kwargs or dict(lr=0.05, weight_decay=0.01)
    p0, grads = make_problem("float64", steps=15)
    tp = [torch.tensor(x, requires_grad=True) for x in p0]
    reference = TimmLookahead(getattr(torch.optim, cls_name)(_groups(tp), **kwargs), alpha=alpha, k=k)
    ours = optim.Lookahead(getattr(optim, cls_name)(_groups([jnp.asarray(x) for x in p0]), **kwargs), alpha=alpha, k=k)
    return reference, ours, tp, grads


def _step_both(reference, ours, tp, g, none=(), stepping=None):
    """One step of both with gradients `g` (None at `none`); `stepping`: the optimizers whose
    `step()` runs instead (`(torch_base, our_base)`: the bases alone), the gradients set
    through `reference` and `ours`."""
    for i, (x, gx) in enumerate(zip(tp, g)):
        x.grad = None if i in none else torch.tensor(gx)
    grads = [jnp.asarray(x) if i not in none else None for i, x in enumerate(g)]
    ours.zero_grad()
    ours.backward([grads[:2], grads[2:]])
    for opt in stepping or (reference, ours):
        opt.step()


def _assert_params(ours, tp):
    for a, b in zip(jax.tree.leaves(ours.params), tp):
        np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=RTOL, atol=RTOL)


def _assert_state_dicts(ours, reference):
    theirs, mine = reference.state_dict(), ours.state_dict()
    assert [{k: v for k, v in g.items()} for g in mine["param_groups"]] == theirs["param_groups"]
    assert mine["state"].keys() == theirs["state"].keys()
    for pid, entry in theirs["state"].items():
        assert set(mine["state"][pid]) == set(entry), pid
        for key, value in entry.items():
            np.testing.assert_allclose(np.asarray(mine["state"][pid][key]), value.numpy(), rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("cls_name, kwargs", [("AdamW", dict(lr=0.05, weight_decay=0.01)),
                                              ("SGD", dict(lr=0.05, momentum=0.9))])
def test_lookahead_class_matches_timm_with_two_groups_and_none_gradients(cls_name, kwargs, x64):
    reference, ours, tp, grads = _pair(cls_name, **kwargs)
    assert isinstance(ours, optim.Lookahead) and isinstance(ours, getattr(optim, cls_name))
    for t, g in enumerate(grads[:10], start=1):
        # param 1 has no gradient at step 3 (its first sync: no slow copy yet) and 5
        _step_both(reference, ours, tp, g, none=(1,) if t in (3, 5) else ())
        _assert_params(ours, tp)
    _assert_state_dicts(ours, reference)


def test_group_edits_of_alpha_follow_timm(x64):
    reference, ours, tp, grads = _pair()
    for t, g in enumerate(grads[:9], start=1):
        if t == 4:
            reference.param_groups[1]["lookahead_alpha"] = 0.8
            ours.param_groups[1]["lookahead_alpha"] = 0.8
        _step_both(reference, ours, tp, g)
        _assert_params(ours, tp)


def test_sync_lookahead_follows_timm(x64):
    """`sync_lookahead()` syncs the params with a gradient now (a first sync makes the slow copy;
    a later one pulls it), leaves the step counters, and with no gradients (after `zero_grad`)
    does nothing, as timm's; steps and state dicts continue alike after it."""
    reference, ours, tp, grads = _pair(alpha=0.3, k=4)
    for t, g in enumerate(grads[:11], start=1):
        _step_both(reference, ours, tp, g, none=(1,) if t == 2 else ())
        if t in (2, 5, 9):  # before the first periodic sync (param 1 without a gradient), after it, mid-period
            reference.sync_lookahead()
            ours.sync_lookahead()
        _assert_params(ours, tp)
    _assert_state_dicts(ours, reference)
    reference.zero_grad()
    ours.zero_grad()
    before = [np.asarray(x).copy() for x in jax.tree.leaves(ours.params)]
    reference.sync_lookahead()
    ours.sync_lookahead()
    for a, b in zip(jax.tree.leaves(ours.params), before):
        np.testing.assert_array_equal(np.asarray(a), b)
    _assert_params(ours, tp)
    assert [g["lookahead_step"] for g in ours.param_groups] == [11, 11]


@pytest.mark.parametrize("reach", ["every_param", "not_the_last"])
def test_sync_lookahead_after_closure_steps_follows_timm(reach, x64):
    """After `step(closure)` the params the closure's loss reaches have a gradient in torch (its
    backward): a sync then pulls those, as timm's, until `zero_grad()`. With `not_the_last`,
    the steps before each sync leave the last param out of the loss (torch: grad None, not
    synced, no `lookahead_slow_buff` at the first sync)."""
    p0, _ = make_problem("float64", steps=1)
    target = [np.cos(np.arange(x.size)).reshape(x.shape) for x in p0]
    tp = [torch.tensor(x, requires_grad=True) for x in p0]
    reference = TimmLookahead(torch.optim.AdamW(_groups(tp), lr=0.05), alpha=0.3, k=4)
    ours = optim.Lookahead(optim.AdamW(_groups([jnp.asarray(x) for x in p0]), lr=0.05), alpha=0.3, k=4)
    used = len(p0)

    def closure():
        reference.zero_grad()
        loss = torch.zeros((), dtype=torch.float64)
        for x, t in zip(tp[:used], target):
            loss = loss + ((x - torch.tensor(t)) ** 2).sum()
        loss.backward()
        return loss

    def all_params(groups):
        return sum(jnp.sum((x - t) ** 2) for x, t in zip([p for g in groups for p in g], target))

    def but_the_last(groups):
        return sum(jnp.sum((x - t) ** 2) for x, t in zip([p for g in groups for p in g][:-1], target))

    for t in range(1, 7):
        used = len(p0) - 1 if reach == "not_the_last" and t in (2, 5) else len(p0)
        reference.step(closure)
        ours.step(all_params if used == len(p0) else but_the_last)
        if t in (2, 5):
            reference.sync_lookahead()
            ours.sync_lookahead()
        _assert_params(ours, tp)
    _assert_state_dicts(ours, reference)


def test_state_dict_continues_in_timm_and_timms_in_ours(x64):
    reference, ours, tp, grads = _pair()
    for g in grads[:7]:
        _step_both(reference, ours, tp, g)
    # ours -> a new timm wrapper over the current params, and timm's -> a new one of ours
    tp2 = [torch.tensor(np.asarray(x), requires_grad=True) for x in jax.tree.leaves(ours.params)]
    theirs2 = TimmLookahead(torch.optim.AdamW(_groups(tp2), lr=0.05, weight_decay=0.01), alpha=0.5, k=3)
    theirs2.load_state_dict(to_torch_state_dict(ours))
    ours2 = optim.Lookahead(optim.AdamW(_groups([jnp.asarray(x.detach().numpy()) for x in tp]), lr=0.05,
                                        weight_decay=0.01), alpha=0.5, k=3)
    ours2.load_state_dict(reference.state_dict())
    for g in grads[7:13]:
        _step_both(reference, ours, tp, g)
        _step_both(theirs2, ours2, tp2, g)
        _assert_params(ours, tp)
        _assert_params(ours2, tp)
        _assert_params(ours, tp2)


def test_a_base_state_dict_without_lookahead_entries_loads_and_keeps_them(x64):
    base = torch.optim.AdamW(_groups([torch.zeros(3, requires_grad=True) for _ in range(3)]), lr=0.05)
    for x in base.param_groups[0]["params"] + base.param_groups[1]["params"]:
        x.grad = torch.ones(3)
    base.step()
    ours = optim.Lookahead(optim.AdamW(_groups([jnp.zeros(3)] * 1 + [jnp.zeros(3), jnp.zeros(3)]), lr=0.05), k=4)
    ours.load_state_dict(base.state_dict())
    assert [(g["lookahead_alpha"], g["lookahead_k"], g["lookahead_step"]) for g in ours.param_groups] == [(0.5, 4, 0)] * 2
    assert all("lookahead_slow_buff" not in e for e in ours.state_dict()["state"].values())


def test_wrapping_a_stepped_base_continues_its_run(x64):
    p0, grads = make_problem("float64", steps=8)
    tp = [torch.tensor(x, requires_grad=True) for x in p0]
    theirs = torch.optim.Adam(_groups(tp), lr=0.05)
    mine = optim.Adam(_groups([jnp.asarray(x) for x in p0]), lr=0.05)
    for g in grads[:3]:
        for x, gx in zip(tp, g):
            x.grad = torch.tensor(gx)
        theirs.step()
        mine.zero_grad()
        mine.backward([[jnp.asarray(x) for x in g[:2]], [jnp.asarray(g[2])]])
        mine.step()
    mine.param_groups[1]["lr"] = theirs.param_groups[1]["lr"] = 0.03  # an edit the wrapper must keep
    reference, ours = TimmLookahead(theirs, k=2), optim.Lookahead(mine, k=2)
    for g in grads[3:]:
        _step_both(reference, ours, tp, g)
        _assert_params(ours, tp)


def _wrapped_pair(k=3, alpha=0.5, steps=12, before=None):
    """timm's and our Lookahead over AdamW, two groups, and their bases; `before(torch_base,
    our_base)` runs before wrapping (returns what it makes)."""
    p0, grads = make_problem("float64", steps=steps)
    tp = [torch.tensor(x, requires_grad=True) for x in p0]
    torch_base = torch.optim.AdamW(_groups(tp), lr=0.05, weight_decay=0.01)
    base = optim.AdamW(_groups([jnp.asarray(x) for x in p0]), lr=0.05, weight_decay=0.01)
    made = before(torch_base, base) if before is not None else None
    reference, ours = TimmLookahead(torch_base, alpha=alpha, k=k), optim.Lookahead(base, alpha=alpha, k=k)
    return reference, ours, torch_base, base, tp, grads, made


@pytest.mark.parametrize("attached", ["after_wrapping", "before_wrapping"])
def test_lr_scheduler_and_group_edits_through_the_base_reach_the_wrapper(attached, x64):
    """timm's Lookahead shares the base's param_groups (the same list and dicts): an LR scheduler
    attached to the base (torch's StepLR vs ours), before or after wrapping, and a manual edit of
    `base.param_groups` mid-run (an lr, a lookahead_alpha) drive the wrapper's next step; no
    scheduler warning (timm's step runs the base's patched step())."""

    def schedulers(torch_base, base):
        return (torch.optim.lr_scheduler.StepLR(torch_base, step_size=2, gamma=0.5),
                optim.lr_scheduler.StepLR(base, step_size=2, gamma=0.5))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "lr_scheduler.step() before optimizer.step()" included
        reference, ours, torch_base, base, tp, grads, made = _wrapped_pair(
            before=schedulers if attached == "before_wrapping" else None)
        theirs, mine = made if made is not None else schedulers(torch_base, base)
        for t, g in enumerate(grads[:10], start=1):
            if t == 6:
                for b in (torch_base, base):
                    b.param_groups[1]["lr"] = 0.003
                    b.param_groups[0]["lookahead_alpha"] = 0.8
            _step_both(reference, ours, tp, g, none=(1,) if t == 3 else ())
            theirs.step()
            mine.step()
            _assert_params(ours, tp)
            assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in reference.param_groups]
    assert base.param_groups is ours.param_groups and ours.param_groups[1]["lr"] == 0.003 * 0.5 ** 3
    _assert_state_dicts(ours, reference)


def test_the_base_after_wrapping_is_a_view_of_the_wrapper(x64):
    """timm's base and wrapper share param_groups, defaults and state_dict() (the lookahead's is
    the base's): ours reads, edits and loads the wrapper's through the base; wrapping the base
    again is refused, naming the wrapper."""
    reference, ours, torch_base, base, tp, grads, _ = _wrapped_pair()
    for g in grads[:4]:  # a sync at step 3
        _step_both(reference, ours, tp, g)
    assert torch_base.state_dict()["param_groups"] == reference.state_dict()["param_groups"]
    _assert_state_dicts(base, torch_base)
    assert base.state_dict()["param_groups"] == ours.state_dict()["param_groups"]
    assert base.defaults is ours.defaults and base.defaults["lookahead_k"] == 3
    assert torch_base.defaults is reference.defaults
    assert base.param_groups is ours.param_groups
    base.zero_grad()
    assert all(g is None for g in jax.tree.leaves(ours.grad, is_leaf=lambda x: x is None))
    saved = torch_base.state_dict()
    for g in grads[4:6]:
        _step_both(reference, ours, tp, g)
    for opt in (torch_base, base):  # timm's state dict of step 4, through the bases (the params stay)
        opt.load_state_dict(saved)
    for g in grads[6:9]:
        _step_both(reference, ours, tp, g)
        _assert_params(ours, tp)
    _assert_state_dicts(ours, reference)
    for wrapper in (optim.Lookahead, optim.ScheduleFreeWrapper):
        with pytest.raises(RuntimeError, match="wrapped by a Lookahead"):
            wrapper(base)


def test_base_step_steps_the_base_alone_as_timms(x64):
    """timm's `base.step()` after wrapping steps the base alone (the fast weights): no
    `lookahead_step` count, no sync, the slow buffers kept; the wrapper's steps go on from there.
    Ours, step by step (a None gradient included), and the state dicts at the end."""
    reference, ours, torch_base, base, tp, grads, _ = _wrapped_pair(k=3)
    for t, g in enumerate(grads[:11], start=1):
        alone = t in (4, 5, 9)
        _step_both(reference, ours, tp, g, none=(1,) if t == 9 else (),
                   stepping=(torch_base, base) if alone else None)
        _assert_params(ours, tp)
        assert ([g["lookahead_step"] for g in ours.param_groups]
                == [g["lookahead_step"] for g in reference.param_groups])
    assert ours.param_groups[0]["lookahead_step"] == 8
    _assert_state_dicts(ours, reference)
    _assert_state_dicts(base, torch_base)


def test_wrapping_refuses_what_it_cannot_wrap():
    with pytest.raises(TypeError, match="wraps an optax_like.optim optimizer instance"):
        optim.Lookahead(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    with pytest.raises(TypeError, match="cannot wrap a LBFGS"):
        optim.Lookahead(optim.LBFGS([jnp.zeros(2)]))
    with pytest.raises(ValueError, match="Invalid slow update rate: 2"):
        optim.Lookahead(optim.SGD([jnp.zeros(2)], lr=0.1), alpha=2)


def test_timm_lookahead_names_in_both_views_match_timm(x64):
    """`lookahead_adamw` through create_optimizer_v2 (adapter) and create_optimizer
    (functional): timm's AdamW groups (no decay on 1-D params) wrapped in Lookahead(k=6)."""
    names = ["w", "b"]
    p0, grads = make_problem("float64", shapes=((4, 3), (3,)), steps=14)
    tp = [torch.tensor(x, requires_grad=True) for x in p0]
    torch_groups = [{"params": [tp[0]], "weight_decay": 0.05}, {"params": [tp[1]], "weight_decay": 0.0}]
    reference = TimmLookahead(torch.optim.AdamW(torch_groups, lr=0.01, weight_decay=0.0))
    params = {n: jnp.asarray(x) for n, x in zip(names, p0)}
    ours = grouping.create_optimizer_v2(params, "lookahead_adamw", lr=0.01, weight_decay=0.05)
    assert isinstance(ours, optim.Lookahead)
    tx = pg.create_optimizer(params, "lookahead_adamw", lr=0.01, weight_decay=0.05)
    fparams = jax.tree.map(jnp.array, {n: jnp.asarray(x) for n, x in zip(names, p0)})
    state = tx.init(fparams)
    for g in grads:
        for x, gx in zip(tp, g):
            x.grad = torch.tensor(gx)
        reference.step()
        gtree = {n: jnp.asarray(x) for n, x in zip(names, g)}
        ours.zero_grad()
        ours.backward(gtree)
        ours.step()
        updates, state = tx.update(gtree, state, fparams)
        fparams = jax.tree.map(lambda p, u: p + u, fparams, updates)
        for n, x in zip(names, tp):
            np.testing.assert_allclose(np.asarray(ours.params[n]), x.detach().numpy(), rtol=RTOL, atol=RTOL)
            np.testing.assert_allclose(np.asarray(fparams[n]), x.detach().numpy(), rtol=RTOL, atol=RTOL)


def _wrappable():
    from optax_like import registry

    out = []
    for info in registry.OPTIMIZERS.values():
        if info.closure or info.layout == "sparse" or info.before_step:
            continue  # LBFGS (refused), SparseAdam's row-sparse gradients, schedule-free's train()
        default = info.name in ("adamw", "lamb", "timm_muon", "adafactor_big_vision")
        out.append(pytest.param(info, id=info.cls, marks=() if default else (pytest.mark.slow,)))
    return out


@pytest.mark.parametrize("info", _wrappable())
def test_lookahead_over_every_class_steps_as_its_base_and_resumes_exactly(info):
    """Lookahead(k=1000) steps as its base class (no sync yet: float32 within an ulp or two, as
    the wrapper reads the base's update twice, which keeps XLA from contracting `p + (-lr) * m`
    into one FMA as it may in the base's own step); with k=2 its state_dict (the base's
    entries, lookahead_slow_buff, lookahead_step) loads into a fresh wrapper that then
    continues with the original's bits."""
    rng = np.random.default_rng(0)
    shapes = info.shapes if info.layout != "matrix" else ((4, 3), (3, 2))
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(6)]

    def new(k=None):
        base = info.new_adapter([jnp.asarray(x) for x in init], **info.example)
        return base if k is None else optim.Lookahead(base, alpha=0.5, k=k)

    def run(opt, gs):
        for g in gs:
            opt.zero_grad()
            opt.backward([jnp.asarray(x) for x in g])
            opt.step()
        return [np.asarray(p) for p in opt.params]

    for mine, base in zip(run(new(1000), grads[:3]), run(new(), grads[:3])):
        np.testing.assert_allclose(mine, base, rtol=1e-6, atol=1e-6)
    a = new(2)
    run(a, grads[:3])
    b = optim.Lookahead(info.new_adapter([jnp.asarray(np.asarray(p)) for p in a.params], **info.example), k=2)
    b.load_state_dict(a.state_dict())
    assert b.state_dict()["param_groups"] == a.state_dict()["param_groups"]
    jax.tree.map(np.testing.assert_array_equal, run(b, grads[3:]), run(a, grads[3:]))


def test_lookahead_over_adahessian_follows_timm(x64, one_torch_thread):
    """A second-order base (timm's Lookahead steps one: its `is_second_order` is the base's): the
    wrapper passes the base's extra update argument (Adahessian's Hessian estimate) on. Two
    groups, k=2 (syncs at steps 2, 4, 6), our probes fed to timm (tests/optim/test_adahessian.py),
    float64; then the base alone (`base.step(closure)`, timm's too) and the wrapper again; the
    functional view (`optax_like.lookahead(optax_like.adahessian(...))`, `value_fn=`) as well."""
    import functools

    import optax_like as ol
    from tests.optim.test_adahessian import _bits, _groups as _ah_groups
    from tests.transforms.test_adahessian import (INFO, adahessian_node, feeding, init_params, loss, probe_bits,
                                                  torch_closure, worst_error)

    kwargs = dict(INFO.example)
    p0 = init_params("float64")
    tp = [torch.tensor(p, requires_grad=True) for p in p0]
    torch_base = INFO.new_reference(_ah_groups(tp, kwargs), **kwargs)
    reference = TimmLookahead(torch_base, alpha=0.5, k=2)
    assert reference.is_second_order
    base = optim.Adahessian(_ah_groups([jnp.asarray(p) for p in p0], kwargs), **kwargs)
    ours = optim.Lookahead(base, alpha=0.5, k=2)
    value_fn = functools.partial(loss, lib=jnp, dtype="float64")
    ours_loss = lambda groups: value_fn([p for g in groups for p in g])  # noqa: E731
    for t in range(1, 9):
        theirs_opt, our_opt = (torch_base, base) if t in (5, 6) else (reference, ours)  # the bases alone
        with feeding(_bits(ours, 1, 1, "float64")):
            theirs = theirs_opt.step(torch_closure(reference, tp, "float64"))
        mine = our_opt.step(ours_loss)
        np.testing.assert_allclose(np.asarray(mine), theirs.detach().numpy(), rtol=RTOL)
        assert worst_error([p for g in ours.params for p in g], tp) <= RTOL, t
        assert ([g["lookahead_step"] for g in ours.param_groups]
                == [g["lookahead_step"] for g in reference.param_groups])
    assert ours.param_groups[0]["lookahead_step"] == 6
    theirs_sd, mine_sd = reference.state_dict(), ours.state_dict()
    assert mine_sd["state"].keys() == theirs_sd["state"].keys()
    for pid, entry in theirs_sd["state"].items():
        assert set(mine_sd["state"][pid]) == set(entry), pid
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                np.testing.assert_allclose(np.asarray(mine_sd["state"][pid][key]), value.numpy(), rtol=RTOL, atol=RTOL)
            else:
                assert mine_sd["state"][pid][key] == value, (pid, key)

    # the functional view, one group
    tp = [torch.tensor(p, requires_grad=True) for p in p0]
    reference = TimmLookahead(INFO.new_reference(tp, **kwargs), alpha=0.5, k=2)
    tx = ol.lookahead(ol.adahessian(**kwargs), alpha=0.5, k=2)
    params = [jnp.asarray(p) for p in p0]
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(value_fn)(params), state, params, value_fn=value_fn)
        return ol.apply_updates(params, updates), state

    for t in range(5):
        with feeding(probe_bits([(adahessian_node(state), jax.grad(value_fn)(params))], 1, 1)):
            reference.step(torch_closure(reference, tp, "float64"))
        params, state = step(params, state)
        assert worst_error(params, tp) <= RTOL, t
