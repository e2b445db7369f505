"""`optax_like.optim.AdamWScheduleFree` / `SGDScheduleFree` / `RAdamScheduleFree` against live
schedulefree 1.4.1: what the generic suites (which step in train mode from construction on)
cannot say.

- `train()` / `eval()` switches mid-run (params y <-> x, each group's `train_mode`), lr and
  beta1 edits between them, group entries (`k`, `weight_sum`, `lr_max`, `scheduled_lr`) compared
  with schedulefree's after every action: float64 params within 1e-12 (relative, floor 1) and
  the entries equal; float32 params within a few ulps (the class's float32 hyperparameters);
- resuming across libraries, both ways, from a checkpoint saved in eval mode (schedulefree's
  advice) or in train mode: the other library continues with the saver's numbers;
- schedulefree's errors: a step in eval mode (before the closure runs), bad loaded entries;
- an edited group entry (`param_groups[0]['k'] = 0`) and a recompiling option edit (`r`) keep
  following schedulefree; `add_param_group` starts a group in eval mode as schedulefree does.
"""

from __future__ import annotations

import copy
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
schedulefree = pytest.importorskip("schedulefree")

from optax_like import optim  # noqa: E402
from optax_like.interop.torch import to_torch_state_dict  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = {
    "AdamWScheduleFree": (schedulefree.AdamWScheduleFree, optim.AdamWScheduleFree,
                          dict(lr=0.02, warmup_steps=4, r=0.5, weight_decay=0.01)),
    "SGDScheduleFree": (schedulefree.SGDScheduleFree, optim.SGDScheduleFree,
                        dict(lr=0.1, momentum=0.8, warmup_steps=3, r=1.0, weight_decay=1e-3)),
    "RAdamScheduleFree": (schedulefree.RAdamScheduleFree, optim.RAdamScheduleFree,
                          dict(lr=0.02, r=0.5, weight_decay=0.01, betas=(0.9, 0.99))),
}
SHAPES = (((4, 3), (5,)), ((3,),))  # two groups
ENTRIES = ("k", "weight_sum", "lr_max", "scheduled_lr", "train_mode")
ULPS32 = 8  # float32: ulps of the largest param (the class's float32 lr is rounded once more)


def _init(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in group] for group in SHAPES]


def _grads(dtype, step):
    rng = np.random.default_rng(100 + step)
    return [[rng.standard_normal(s).astype(dtype) for s in group] for group in SHAPES]


class Pair:
    """schedulefree's optimizer and ours over the same params, driven by the same actions."""

    def __init__(self, name, dtype, init=None, **kwargs):
        ref_cls, our_cls, example = CLASSES[name]
        self.name, self.dtype = name, dtype
        kwargs = {**example, **kwargs}
        init = init if init is not None else _init(dtype)
        self.tp = [[torch.tensor(p, requires_grad=True) for p in group] for group in init]
        self.ref = ref_cls([{"params": self.tp[0]}, {"params": self.tp[1], "lr": kwargs["lr"] / 2}],
                           foreach=False, **kwargs)
        self.ours = our_cls([{"params": [jnp.asarray(p) for p in init[0]]},
                             {"params": [jnp.asarray(p) for p in init[1]], "lr": kwargs["lr"] / 2}],
                            foreach=False, **kwargs)
        self.t = 0

    def step(self, none=()):
        grads = _grads(self.dtype, self.t)
        for g, (group_p, group_g) in enumerate(zip(self.tp, grads)):
            for i, (p, gr) in enumerate(zip(group_p, group_g)):
                p.grad = None if (g, i) in none else torch.tensor(gr)
        self.ref.step()
        self.ours.zero_grad()
        self.ours.backward([[None if (g, i) in none else jnp.asarray(gr) for i, gr in enumerate(group)]
                            for g, group in enumerate(grads)])
        self.ours.step()
        self.t += 1
        self.check(f"step {self.t}")

    def call(self, method):
        getattr(self.ref, method)()
        getattr(self.ours, method)()
        self.check(f"{method}() after step {self.t}")

    def set(self, g, key, value):
        for o in (self.ref, self.ours):
            o.param_groups[g][key] = value

    def check(self, where):
        ours = [np.asarray(p, np.float64) for group in self.ours.params for p in group]
        theirs = [p.detach().double().numpy() for group in self.tp for p in group]
        for a, b in zip(ours, theirs):
            if self.dtype == np.float64:
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(b).max()), err_msg=where)
            else:
                unit = float(np.spacing(np.float32(np.abs(b).max())))
                assert np.abs(a - b).max() <= ULPS32 * unit, (where, np.abs(a - b).max() / unit, "ulps")
        ours_sd, theirs_sd = self.ours.state_dict(), self.ref.state_dict()
        # the same entries (an empty one for a param train()/eval() visited before its first step)
        assert {i: sorted(e) for i, e in ours_sd["state"].items()} == \
            {i: sorted(e) for i, e in theirs_sd["state"].items()}, where
        for i, entry in theirs_sd["state"].items():
            for key, value in entry.items():
                a, b = np.asarray(ours_sd["state"][i][key], np.float64), value.double().numpy()
                tol = 1e-12 if self.dtype == np.float64 else ULPS32 * float(np.spacing(np.float32(np.abs(b).max())))
                np.testing.assert_allclose(a, b, rtol=tol if self.dtype == np.float64 else 0,
                                           atol=tol * (max(1.0, np.abs(b).max()) if self.dtype == np.float64 else 1),
                                           err_msg=f"{where}: param {i} {key!r}")
        mine = ours_sd["param_groups"]
        for g, group in enumerate(self.ref.param_groups):
            for key in ENTRIES:
                a, b = mine[g][key], group[key]
                assert type(a) is type(b), (where, g, key, a, b)
                if self.dtype == np.float64 or key in ("k", "train_mode"):
                    assert a == b, (where, g, key, a, b)
                else:
                    assert a == pytest.approx(b, rel=1e-5), (where, g, key, a, b)  # float32 betas, lr


def _cases(default, *axes):
    """Every combination of `axes` (lists of (id, value)), `slow` but those in `default` (ids)."""
    import itertools

    out = []
    for combo in itertools.product(*axes):
        ids = tuple(i for i, _ in combo)
        out.append(pytest.param(*(v for _, v in combo), id="-".join(ids),
                                marks=() if ids in default else (pytest.mark.slow,)))
    return out


NAMES = [(n, n) for n in CLASSES]
DTYPES = [("float64", np.float64), ("float32", np.float32)]


# the default run: one class per dtype (each compiles its own steps: ~5 s a case)
@pytest.mark.parametrize("name, dtype", _cases({("AdamWScheduleFree", "float64"), ("RAdamScheduleFree", "float32")},
                                               NAMES, DTYPES))
def test_train_eval_switches_edits_and_group_entries_match(name, dtype, request):
    if dtype == np.float64:
        request.getfixturevalue("x64")
    pair = Pair(name, dtype)
    pair.check("construction")
    pair.call("train")
    for _ in range(4):
        pair.step()
    pair.call("eval")  # x
    pair.call("eval")  # already there: nothing moves
    pair.call("train")
    pair.step(none={(0, 1)})  # a param without gradient: skipped, k advances
    pair.set(0, "lr", pair.ours.param_groups[0]["lr"] * 0.5)
    pair.step()
    pair.call("eval")
    beta = "momentum" if name == "SGDScheduleFree" else "betas"
    pair.set(0, beta, 0.7 if beta == "momentum" else (0.7, pair.ours.param_groups[0]["betas"][1]))
    pair.call("train")  # the new beta1 moves x back to y, as schedulefree's train() reads it
    for _ in range(3):
        pair.step()
    assert pair.ours.param_groups[0]["k"] == pair.ref.param_groups[0]["k"] == 9  # live: a device scalar


def test_step_in_eval_mode_raises_schedulefrees_error_before_the_closure():
    ref = schedulefree.AdamWScheduleFree([torch.zeros(2, requires_grad=True)])
    with pytest.raises(Exception) as theirs:
        ref.step()
    calls = []
    ours = optim.AdamWScheduleFree([jnp.zeros(2)])
    with pytest.raises(Exception) as mine:
        ours.step(lambda params: calls.append(1) or jnp.sum(params[0] ** 2))
    assert type(mine.value) is type(theirs.value) is Exception and str(mine.value) == str(theirs.value)
    assert calls == []
    ours.train()
    ours.eval()
    with pytest.raises(Exception, match="not in train mode"):
        ours.step()


def _saved(ref):
    buffer = io.BytesIO()
    torch.save(ref.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name, saved_in", _cases({("AdamWScheduleFree", "eval"), ("SGDScheduleFree", "train")},
                                                  NAMES, [("eval", "eval"), ("train", "train")]))
def test_resume_across_libraries_both_ways(name, saved_in, x64):
    """schedulefree -> ours: its checkpoint (through torch.save/torch.load) loads into a fresh
    instance of ours (default arguments: every entry comes from the checkpoint) and both continue
    together; ours -> schedulefree: our state dict (`to_torch_state_dict`) loads into a fresh
    schedulefree, which continues as the schedulefree that saved it."""
    ref_cls, our_cls, _ = CLASSES[name]
    pair = Pair(name, np.float64)
    pair.call("train")
    for _ in range(5):
        pair.step()
    if saved_in == "eval":
        pair.call("eval")
    params_now = [[p.detach().numpy().copy() for p in group] for group in pair.tp]
    # schedulefree -> ours
    theirs_sd = _saved(pair.ref)
    fresh = our_cls([{"params": [jnp.asarray(p) for p in group]} for group in params_now])
    fresh.load_state_dict(theirs_sd)
    assert fresh.state_dict()["param_groups"] == pair.ours.state_dict()["param_groups"]
    # ours -> schedulefree
    ours_sd = to_torch_state_dict(pair.ours)
    tp2 = [[torch.tensor(p, requires_grad=True) for p in group] for group in params_now]
    ref2 = ref_cls([{"params": tp2[0]}, {"params": tp2[1]}], foreach=False)
    ref2.load_state_dict(ours_sd)
    assert ref2.state_dict()["param_groups"] == pair.ref.state_dict()["param_groups"]
    pair.ours = fresh  # ours continues from schedulefree's checkpoint
    twin = Pair.__new__(Pair)  # schedulefree continues from ours
    twin.name, twin.dtype, twin.tp, twin.ref, twin.ours, twin.t = name, np.float64, tp2, ref2, None, pair.t
    if saved_in == "eval":
        pair.call("train")
        ref2.train()
    for _ in range(4):
        pair.step()
        grads = _grads(np.float64, twin.t)
        for group_p, group_g in zip(tp2, grads):
            for p, g in zip(group_p, group_g):
                p.grad = torch.tensor(g)
        ref2.step()
        twin.t += 1
        for a, b in zip([p for g in tp2 for p in g], [p for g in pair.tp for p in g]):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert ref2.state_dict()["param_groups"] == pair.ref.state_dict()["param_groups"]


def test_edited_group_entry_and_recompiling_option_follow_schedulefree(x64):
    pair = Pair("AdamWScheduleFree", np.float64)
    pair.call("train")
    for _ in range(3):
        pair.step()
    pair.set(0, "k", 0)  # schedulefree's next step reads it: warmup and weights restart
    pair.set(1, "lr_max", 0.5)
    assert pair.ours.state_dict()["param_groups"][0]["k"] == 0  # a pending edit is the group's value
    pair.step()
    pair.set(0, "r", 1.0)  # compile-time here: the state is rebuilt, the group entries kept
    pair.step()
    pair.step()


def test_add_param_group_starts_in_eval_mode_as_schedulefree(x64):
    pair = Pair("SGDScheduleFree", np.float64)
    pair.call("train")
    pair.step()
    extra = np.linspace(-1.0, 1.0, 4)
    t = torch.tensor(extra, requires_grad=True)
    pair.ref.add_param_group({"params": [t], "lr": 0.05})
    pair.ours.add_param_group({"params": [jnp.asarray(extra)], "lr": 0.05})
    pair.tp.append([t])
    assert pair.ours.param_groups[2]["train_mode"] is False and pair.ours.param_groups[2]["k"] == 0
    for _ in range(2):  # group 0 decides: steps are allowed, the new group steps too
        grads = [_grads(np.float64, pair.t)[0], _grads(np.float64, pair.t)[1], [extra * 0.1]]
        for group_p, group_g in zip(pair.tp, grads):
            for p, g in zip(group_p, group_g):
                p.grad = torch.tensor(g)
        pair.ref.step()
        pair.ours.zero_grad()
        pair.ours.backward([[jnp.asarray(g) for g in group] for group in grads])
        pair.ours.step()
        pair.t += 1
        pair.check(f"step {pair.t}")
    pair.call("eval")  # the new group is "in eval mode" already: schedulefree leaves its params at y
    pair.call("train")


def test_loaded_group_entries_are_checked_naming_the_key():
    opt = optim.AdamWScheduleFree([jnp.ones(3)])
    sd = opt.state_dict()
    for key, value, match in (("k", -1, "'k' must be an integer"), ("weight_sum", float("inf"), "finite"),
                              ("lr_max", "x", "real number")):
        bad = copy.deepcopy(sd)
        bad["param_groups"][0][key] = value
        with pytest.raises((ValueError, TypeError), match=rf"loaded param_groups\[0\].*{match}"):
            opt.load_state_dict(bad)
    assert opt.state_dict()["param_groups"] == sd["param_groups"]  # atomic


def test_eval_train_do_not_recompile_the_step_and_keep_buffers():
    """A train/eval cycle changes no compile-time option: the next step reuses the compiled
    program; z and exp_avg_sq are untouched by the mode switches."""
    from optax_like.optim import _step

    opt = optim.AdamWScheduleFree([jnp.ones(3), jnp.ones((2, 2))], lr=0.1)
    opt.train()
    grads = [jnp.ones(3), jnp.ones((2, 2))]
    opt.backward(grads)
    opt.step()
    before = _step.jitted_step._cache_size()
    state = {k: {n: np.asarray(v) for n, v in e.items()} for k, e in opt.state_dict()["state"].items()}
    opt.eval()
    opt.train()
    after_switch = {k: {n: np.asarray(v) for n, v in e.items()} for k, e in opt.state_dict()["state"].items()}
    jax.tree.map(np.testing.assert_array_equal, state, after_switch)
    opt.step()
    assert _step.jitted_step._cache_size() == before
