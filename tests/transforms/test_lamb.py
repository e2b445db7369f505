"""timm Lamb's class-level behaviour the generic suites do not reach: its one gradient clip
reads the optimizer's `defaults['max_grad_norm']` at each step (a group's own entry is never
read), and its group `step` entry (none before the first step, counted in a group without
gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like.optim as optim
from optax_like import registry
from tests.parity.harness import assert_close

Lamb = registry.import_reference_module("timm.optim.lamb").Lamb
SHAPES = (((4, 3), (5,)), ((3,),))


def _pair(kwargs, group1):
    rng = np.random.default_rng(0)
    init = [[rng.standard_normal(s) for s in group] for group in SHAPES]
    tp = [[torch.tensor(p, requires_grad=True) for p in group] for group in init]
    theirs = Lamb([{"params": tp[0]}, {"params": tp[1], **group1}], foreach=False, **kwargs)
    ours = optim.Lamb([{"params": [jnp.asarray(p) for p in init[0]]},
                       {"params": [jnp.asarray(p) for p in init[1]], **group1}], **kwargs)
    return tp, theirs, ours


def _step(tp, theirs, ours, grads):
    for group_p, group_g in zip(tp, grads):
        for p, g in zip(group_p, group_g):
            p.grad = None if g is None else torch.tensor(g)
    theirs.step()
    ours.zero_grad()
    ours.backward([[None if g is None else jnp.asarray(g) for g in group] for group in grads])
    ours.step()


def _grads(rng, missing=()):
    return [[None if (g, i) in missing else 3 * rng.standard_normal(s) for i, s in enumerate(group)]
            for g, group in enumerate(SHAPES)]


def test_the_clip_reads_the_optimizers_defaults_not_the_groups(x64):
    # group 1's own max_grad_norm is stored and never read (timm reads self.defaults)
    tp, theirs, ours = _pair(dict(lr=1e-2, weight_decay=0.1, max_grad_norm=1.0), dict(max_grad_norm=None))
    rng = np.random.default_rng(1)
    for t, limit in enumerate([1.0, 1.0, 0.5, None, 2.0, 2.0]):
        theirs.defaults["max_grad_norm"] = ours.defaults["max_grad_norm"] = limit
        _step(tp, theirs, ours, _grads(rng))
        assert_close([np.asarray(p) for group in ours.params for p in group],
                     [p.detach().numpy() for group in tp for p in group], "float64", t + 1, 1e-12)
    assert ours.param_groups[1]["max_grad_norm"] is None


def test_group_step_entry_is_timms(x64):
    tp, theirs, ours = _pair(dict(lr=1e-2), {})
    assert "step" not in ours.param_groups[0] and "step" not in ours.state_dict()["param_groups"][0]
    assert "step" not in theirs.param_groups[0]
    rng = np.random.default_rng(2)
    # group 1 has no gradient in the first two steps: timm counts its step anyway
    for t in range(4):
        _step(tp, theirs, ours, _grads(rng, missing={(1, 0)} if t < 2 else ()))
        for ours_group, their_group in zip(ours.state_dict()["param_groups"], theirs.state_dict()["param_groups"]):
            assert type(ours_group["step"]) is float and ours_group["step"] == float(their_group["step"]) == t + 1
        assert int(ours.param_groups[1]["step"]) == t + 1  # the live entry: a device scalar
        assert isinstance(ours.param_groups[1]["step"], jax.Array)
    assert_close([np.asarray(p) for group in ours.params for p in group],
                 [p.detach().numpy() for group in tp for p in group], "float64", 4, 1e-12)


@pytest.mark.parametrize("bad", [1.5, -1, "3", float("nan")])
def test_a_loaded_group_step_must_be_a_whole_number(bad):
    ours = optim.Lamb([jnp.ones(3)], lr=1e-2)
    state_dict = ours.state_dict()
    state_dict["param_groups"][0]["step"] = bad
    with pytest.raises(ValueError, match="'step' must be a whole number"):
        ours.load_state_dict(state_dict)
