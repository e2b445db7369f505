"""`optax_like.optim.ScheduleFreeWrapper` against live schedulefree 1.4.1's `ScheduleFreeWrapper`
around torch optimizers: train/eval switches, two groups, None gradients, state_dict both ways,
its errors, edits through the base (an LR scheduler on it, its param_groups) and of the wrapper's
option attributes mid-run. (The functional `schedule_free_wrapper`:
tests/transforms/test_schedule_free.py.)"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
schedulefree = pytest.importorskip("schedulefree")

from optax_like import optim  # noqa: E402
from optax_like.interop.torch import to_torch_state_dict  # noqa: E402
from tests.optim.trace_count import step_traces  # noqa: E402

# schedulefree's wrapper swaps z and p through uint8 views: 0-d params raise there
SHAPES = ((4, 3), (5,), (2,))
BASES = {
    "SGD": dict(lr=0.05, momentum=0.5),
    "AdamW": dict(lr=0.02, weight_decay=0.01),
}
WRAPPER = dict(momentum=0.9, weight_decay_at_y=0.1, r=0.5, weight_lr_power=2.0)


def _groups(xs):
    return [{"params": list(xs[:2])}, {"params": list(xs[2:]), "lr": 0.5 * BASES_LR[0]}]


BASES_LR = [0.05]


class Pair:
    def __init__(self, base, dtype, init=None, **wrapper):
        wrapper = wrapper or WRAPPER
        rng = np.random.default_rng(0)
        init = init if init is not None else [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        self.tp = [torch.tensor(x, requires_grad=True) for x in init]
        kwargs = BASES[base]
        BASES_LR[0] = kwargs["lr"]
        torch_base = getattr(torch.optim, base)(_groups(self.tp), **kwargs)
        if base == "AdamW":
            # schedulefree writes `z` into state[p] before the base's first step, which torch's
            # Adam family reads as existing state (`len(state) == 0` is False: KeyError
            # 'exp_avg'); seed what torch's first step would create
            for x in self.tp:
                torch_base.state[x] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(x),
                                       "exp_avg_sq": torch.zeros_like(x)}
        self.ref = schedulefree.ScheduleFreeWrapper(torch_base, **wrapper)
        self.base = getattr(optim, base)(_groups([jnp.asarray(x) for x in init]), **kwargs)
        self.ours = optim.ScheduleFreeWrapper(self.base, **wrapper)
        self.torch_base = torch_base
        self.rtol = 1e-12 if dtype == "float64" else 4e-6

    def step(self, t, none=()):
        rng = np.random.default_rng(100 + t)
        g = [rng.standard_normal(s).astype(self.tp[0].detach().numpy().dtype) for s in SHAPES]
        for i, (x, gx) in enumerate(zip(self.tp, g)):
            x.grad = None if i in none else torch.tensor(gx)
        grads = [jnp.asarray(x) if i not in none else None for i, x in enumerate(g)]
        self.ref.step()
        self.ours.zero_grad()
        self.ours.backward([grads[:2], grads[2:]])
        self.ours.step()

    def check(self):
        for a, b in zip(jax.tree.leaves(self.ours.params), self.tp):
            np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=self.rtol, atol=self.rtol)
        assert self.ours.train_mode == self.ref.train_mode
        for mine, theirs in zip(self.ours.state_dict()["param_groups"], self.ref.state_dict()["param_groups"]):
            for key in ("k", "lr_max", "weight_sum"):
                if key in theirs:  # schedulefree adds them at the first step
                    # float32: the class's lr is a float32 (without x64, traced scalars are)
                    assert mine[key] == pytest.approx(theirs[key], rel=1e-15 if self.rtol < 1e-6 else 1e-7), key


@pytest.mark.parametrize("base, dtype", [("SGD", "float64"), ("AdamW", "float64"), ("AdamW", "float32")])
def test_wrapper_matches_schedulefree_through_train_eval_switches(base, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    pair = Pair(base, dtype)
    pair.ref.train()
    pair.ours.train()
    for t in range(1, 12):
        pair.step(t, none=(1,) if t in (3, 7) else ())
        pair.check()
        if t in (5, 9):  # evaluate, then back to training
            pair.ref.eval()
            pair.ours.eval()
            pair.check()
            pair.ref.train()
            pair.ours.train()
            pair.check()
    pair.ref.eval()
    pair.ours.eval()
    pair.check()
    theirs, mine = pair.ref.state_dict(), pair.ours.state_dict()
    assert mine["state"].keys() == theirs["state"].keys()
    for pid, entry in theirs["state"].items():
        assert set(mine["state"][pid]) == set(entry)
        for key, value in entry.items():
            np.testing.assert_allclose(np.asarray(mine["state"][pid][key]), value.numpy(), rtol=pair.rtol, atol=pair.rtol)


def test_resume_across_libraries_both_ways(x64):
    pair = Pair("SGD", "float64")
    pair.ref.train()
    pair.ours.train()
    for t in range(1, 6):
        pair.step(t)
    pair.ref.eval()
    pair.ours.eval()  # schedulefree's advice: save in eval mode
    x = [np.asarray(p) for p in jax.tree.leaves(pair.ours.params)]
    # ours -> schedulefree, schedulefree's -> ours, each continued beside the original pair
    other = Pair("SGD", "float64", init=x)
    other.ref.load_state_dict(to_torch_state_dict(pair.ours))
    other.ours.load_state_dict(pair.ref.state_dict())
    for p in (pair, other):
        p.ref.train()
        p.ours.train()
    for t in range(6, 10):
        pair.step(t)
        other.step(t)
        for a, b in zip(jax.tree.leaves(other.ours.params), pair.tp):
            np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=1e-12, atol=1e-12)
        for a, b in zip(other.tp, pair.tp):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_errors_are_schedulefrees_and_ours():
    pair = Pair("SGD", "float32")
    with pytest.raises(Exception, match="not in train mode") as theirs:
        pair.ref.step()
    with pytest.raises(Exception, match="not in train mode") as mine:
        pair.ours.step()
    assert str(mine.value) == str(theirs.value)
    with pytest.raises(TypeError, match="cannot wrap a AdamWScheduleFree"):
        optim.ScheduleFreeWrapper(optim.AdamWScheduleFree([jnp.zeros(2)]))
    assert isinstance(pair.ours, optim.ScheduleFreeWrapper) and isinstance(pair.ours, optim.SGD)
    assert pair.ours.momentum == 0.9 and pair.ours.base is pair.base and pair.ref.base is pair.torch_base


def test_scheduler_and_group_edits_through_the_base_reach_the_wrapper(x64):
    """schedulefree's wrapper is no torch Optimizer: a loop attaches its LR scheduler to the base
    and edits the base's param_groups, which are the wrapper's (schedulefree reads
    `self.base.param_groups` at each step). The same lines on ours give the same numbers, and no
    scheduler warning (the wrapper's step is the base's step, as there)."""
    pair = Pair("SGD", "float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "lr_scheduler.step() before optimizer.step()" included
        theirs = torch.optim.lr_scheduler.StepLR(pair.torch_base, step_size=2, gamma=0.5)
        mine = optim.lr_scheduler.StepLR(pair.base, step_size=2, gamma=0.5)
        pair.ref.train()
        pair.ours.train()
        for t in range(1, 10):
            if t == 6:  # a manual edit through the base's groups, after the scheduler's
                for base in (pair.torch_base, pair.base):
                    base.param_groups[1]["lr"] = 0.003
            pair.step(t, none=(1,) if t == 3 else ())
            theirs.step()
            mine.step()
            pair.check()
            assert [g["lr"] for g in pair.ours.param_groups] == [g["lr"] for g in pair.ref.param_groups]
    assert pair.base.param_groups is pair.ours.param_groups and pair.ours.base is pair.base
    pair.ref.eval()
    pair.ours.eval()
    pair.check()


def test_the_base_after_wrapping_is_a_view_of_the_wrapper(x64):
    """schedulefree's wrapper and base share param_groups, state and state_dict(): ours reads
    and loads the wrapper's through the base; `base.step()` (schedulefree: the base alone at y)
    is refused, as is wrapping the base again."""
    pair = Pair("AdamW", "float64")
    pair.ref.train()
    pair.ours.train()
    for t in range(1, 4):
        pair.step(t)
    theirs, mine = pair.torch_base.state_dict(), pair.base.state_dict()
    assert mine["param_groups"] == pair.ours.state_dict()["param_groups"]
    for group, ref_group in zip(mine["param_groups"], theirs["param_groups"]):
        assert group["k"] == ref_group["k"] == 3
    for pid, entry in theirs["state"].items():
        assert set(mine["state"][pid]) == set(entry)
        np.testing.assert_allclose(np.asarray(mine["state"][pid]["z"]), entry["z"].numpy(), rtol=1e-12)
    pair.base.zero_grad()
    assert all(g is None for g in jax.tree.leaves(pair.ours.grad, is_leaf=lambda x: x is None))
    with pytest.raises(RuntimeError, match=r"AdamW.step\(\): this optimizer is wrapped by a ScheduleFreeWrapper"):
        pair.base.step()
    with pytest.raises(RuntimeError, match="wrapped by a ScheduleFreeWrapper"):
        optim.ScheduleFreeWrapper(pair.base)
    pair.base.load_state_dict(theirs)  # schedulefree's, through the base: the wrapper's state
    pair.step(4)
    pair.check()


@pytest.mark.parametrize("base, attr, first, second", [
    ("SGD", "momentum", 0.5, 0.8),
    ("SGD", "weight_decay_at_y", 0.0, 0.3),  # crossing zero: schedulefree's `!= 0.0` branch
    ("SGD", "r", 1.0, 0.0),
    ("SGD", "weight_lr_power", 0.0, 1.0),
    ("AdamW", "momentum", 0.7, 0.95),
])
def test_option_attributes_edited_mid_run_match_schedulefree(base, attr, first, second, x64):
    """schedulefree's step, eval() and train() read `momentum`, `weight_decay_at_y`, `r`,
    `weight_lr_power` from the wrapper at each call: an edit in train mode, and one in eval mode
    (the next train() already uses it), give its numbers."""
    pair = Pair(base, "float64")
    pair.ref.train()
    pair.ours.train()
    for t in range(1, 10):
        if t == 4:
            setattr(pair.ref, attr, first)
            setattr(pair.ours, attr, first)
        if t == 7:
            pair.ref.eval()
            pair.ours.eval()
            setattr(pair.ref, attr, second)
            setattr(pair.ours, attr, second)
            pair.ref.train()
            pair.ours.train()
            pair.check()
        pair.step(t, none=(1,) if t in (2, 5) else ())
        pair.check()
        assert getattr(pair.ours, attr) == getattr(pair.ref, attr)
    pair.ref.eval()
    pair.ours.eval()
    pair.check()


def test_option_attribute_edit_compiles_once_and_a_bad_value_is_refused():
    pair = Pair("SGD", "float32")
    pair.ref.train()
    pair.ours.train()
    pair.step(1)
    traces = step_traces()
    pair.ours.momentum = 0.5
    pair.step(2)
    pair.step(3)
    assert step_traces() == traces + 1  # the new value: one compile
    pair.ours.momentum = 0.9  # back to a value compiled before
    pair.step(4)
    assert step_traces() == traces + 1
    with pytest.raises(TypeError, match="compile-time constants and must be hashable"):
        pair.ours.momentum = jnp.array([0.5, 0.6])  # pyright: ignore[reportAttributeAccessIssue]
    assert pair.ours.momentum == 0.9 and type(pair.ours)._constant_values[1] == ("momentum", 0.9)


def test_a_second_order_base_is_refused_at_construction():
    """Adahessian's step takes the Hessian probes, which the wrapper's step does not pass on: refused
    when wrapped (it failed at the first step with a TypeError from inside the step)."""
    base = optim.Adahessian([jnp.ones(3)])
    with pytest.raises(TypeError, match="ScheduleFreeWrapper cannot wrap a Adahessian"):
        optim.ScheduleFreeWrapper(base)
