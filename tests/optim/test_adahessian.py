"""`optax_like.optim.Adahessian` against timm's Adahessian (timm 1.0.31): two param groups,
`step(loss_fn)` against timm's `loss.backward(create_graph=True); step()` with our probes fed to
timm (tests/transforms/test_adahessian.py's `feeding`), params and `state_dict()` after every
step; state dicts into timm's class and back; the closure requirement.

timm keeps the estimate on the param (`p.hess`) and its generator outside the state dict: a
timm optimizer that loads a state dict in a new process recomputes every param's estimate at its
next step (`p.hess` is the float 0.0 from `__init__`); ours does the same after
`load_state_dict` (and restarts its key from the seed). The round trips below check both
directions against a timm optimizer built fresh, as a resumed run is.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like import optim
from optax_like.optim.adahessian import NEEDS_CLOSURE, _adahessian_node
from tests.transforms.test_adahessian import (CONFIGS, INFO, RTOL, feeding, init_params, loss, probe_bits,
                                              torch_closure, worst_error)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
SPLIT = 2  # group 0: params[:2], group 1: params[2:] (its own lr)
N_LOSS = 4  # the params loss() reads (W, b, K, c): others are not in its graph


def _groups(params, kwargs):
    return [{"params": params[:SPLIT]}, {"params": params[SPLIT:], "lr": kwargs.get("lr", 0.1) * 0.5}]


def _bits(opt, n_samples, update_each, dtype):
    """The probes our next step draws (grads as the step computes them: None for a param the
    loss does not read, which neither timm nor the step draws a probe for)."""
    value_fn = functools.partial(loss, lib=jnp, dtype=dtype)
    grads = ol.grad(lambda ps: value_fn([p for g in ps for p in g][:N_LOSS]), none_if_unreached=True)(
        list(opt.params))
    return probe_bits([(_adahessian_node(g.state), list(gg)) for g, gg in zip(opt._groups, grads)],
                      n_samples, update_each)


def _state_entries_equal(ours: dict, theirs: dict, dtype):
    assert ours.keys() == theirs.keys()
    for pid, entry in theirs.items():
        assert set(ours[pid]) == set(entry), (pid, set(ours[pid]), set(entry))
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                assert worst_error([ours[pid][key]], [value]) <= RTOL[dtype], (pid, key)
            else:
                assert type(ours[pid][key]) is type(value) and ours[pid][key] == value, (pid, key)


def class_run(kwargs, dtype, steps, check_state=True):
    p0 = init_params(dtype)
    tparams = [torch.tensor(p, requires_grad=True) for p in p0]
    ref = INFO.new_reference(_groups(tparams, kwargs), **kwargs)
    opt = INFO.new_adapter(_groups([jnp.asarray(p) for p in p0], kwargs), **kwargs)
    value_fn = functools.partial(loss, lib=jnp, dtype=dtype)
    n, each = kwargs.get("n_samples", 1), kwargs.get("update_each", 1)
    _state_entries_equal(opt.state_dict()["state"], ref.state_dict()["state"], dtype)  # 'hessian step': 0
    worst = 0.0
    for _ in range(steps):
        with feeding(_bits(opt, n, each, dtype)):
            theirs = ref.step(torch_closure(ref, tparams, dtype))
        ours = opt.step(lambda groups: value_fn([p for g in groups for p in g]))
        np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=RTOL[dtype])
        worst = max(worst, worst_error([p for g in opt.params for p in g], tparams))
        if check_state:
            _state_entries_equal(opt.state_dict()["state"], ref.state_dict()["state"], dtype)
    return worst, opt, ref, tparams


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_class_matches_timm_with_two_groups(config, dtype):
    with jax.enable_x64(dtype == "float64"):
        worst, *_ = class_run(CONFIGS[config], dtype, steps=10)
        assert worst <= RTOL[dtype]


def test_class_example_float64(x64):
    worst, *_ = class_run(dict(INFO.example), "float64", steps=3)
    assert worst <= RTOL["float64"]


@pytest.mark.parametrize("config", ["example", pytest.param("all", marks=pytest.mark.slow)])
def test_state_dict_both_ways_recomputes_the_estimate_as_a_resumed_timm(config, x64):
    """Ours -> a fresh timm (a resumed run: `p.hess` recomputed at its next step) and timm -> a
    fresh ours: both continue together, on our probes, for 4 more steps."""
    kwargs = CONFIGS[config]
    n, each = kwargs.get("n_samples", 1), kwargs.get("update_each", 1)
    _, opt, ref, tparams = class_run(kwargs, "float64", steps=4, check_state=False)
    value_fn = functools.partial(loss, lib=jnp, dtype="float64")
    for source in ("ours", "timm"):
        current = [p.detach().numpy().copy() for p in tparams]
        t2 = [torch.tensor(p, requires_grad=True) for p in current]
        ref2 = INFO.new_reference(_groups(t2, kwargs), **kwargs)
        ours2 = INFO.new_adapter(_groups([jnp.asarray(p) for p in current], kwargs), **kwargs)
        saved = opt.state_dict() if source == "ours" else ref.state_dict()
        if source == "ours":
            from optax_like.interop.torch import to_torch_state_dict
            ref2.load_state_dict(to_torch_state_dict(opt))
            ours2.load_state_dict(saved)
        else:
            ref2.load_state_dict(saved)
            ours2.load_state_dict(saved)
        for _ in range(4):
            with feeding(_bits(ours2, n, each, "float64")):
                ref2.step(torch_closure(ref2, t2, "float64"))
            ours2.step(lambda groups: value_fn([p for g in groups for p in g]))
            assert worst_error([p for g in ours2.params for p in g], t2) <= RTOL["float64"]
        _state_entries_equal(ours2.state_dict()["state"], ref2.state_dict()["state"], "float64")


def test_a_param_the_loss_does_not_read_is_skipped_as_timm_skips_it(x64):
    """A param outside the loss's graph: timm's `p.grad is None` (no probe, no state but its
    'hessian step', no decay). The class's step gives it no gradient either: it stays as it was,
    and the others follow timm's (whose probes for them are drawn in the same order)."""
    kwargs = dict(INFO.example, weight_decay=0.1)
    p0 = init_params("float64") + [np.ones(3)]
    tparams = [torch.tensor(p, requires_grad=True) for p in p0]
    ref = INFO.new_reference(_groups(tparams, kwargs), **kwargs)
    opt = INFO.new_adapter(_groups([jnp.asarray(p) for p in p0], kwargs), **kwargs)
    value_fn = functools.partial(loss, lib=jnp, dtype="float64")
    for _ in range(3):
        with feeding(_bits(opt, 1, 1, "float64")):
            ref.step(torch_closure(ref, tparams[:N_LOSS], "float64"))
        opt.step(lambda groups: value_fn([p for g in groups for p in g][:N_LOSS]))
        assert worst_error([p for g in opt.params for p in g], tparams) <= RTOL["float64"]
    assert tparams[-1].grad is None
    np.testing.assert_array_equal(np.asarray(opt.params[1][-1]), np.ones(3))
    _state_entries_equal(opt.state_dict()["state"], ref.state_dict()["state"], "float64")
    assert opt.state_dict()["state"][N_LOSS] == {"hessian step": 0}


def test_step_needs_the_loss():
    opt = optim.Adahessian([jnp.ones(3)])
    opt.backward([jnp.ones(3)])
    with pytest.raises(TypeError, match="needs the loss"):
        opt.step()
    assert "create_graph=True" in NEEDS_CLOSURE


def test_fresh_state_dict_has_timms_hessian_step_for_every_param():
    p0 = init_params("float32")
    ref = INFO.new_reference([torch.tensor(p, requires_grad=True) for p in p0])
    opt = INFO.new_adapter([jnp.asarray(p) for p in p0])
    assert opt.state_dict()["state"] == ref.state_dict()["state"] == {i: {"hessian step": 0} for i in range(4)}
    groups = opt.state_dict()["param_groups"]
    assert {"update_each", "n_samples", "avg_conv_kernel"} <= set(groups[0])
    from optax_like.interop.torch import to_torch_state_dict
    # timm's optimizer attributes are left out of torch's form (the optimizer declares them)
    assert to_torch_state_dict(opt)["param_groups"][0].keys() == ref.state_dict()["param_groups"][0].keys()
