"""optax_like.transforms.averaging against torch.optim.swa_utils (live torch 2.13)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import swa_utils as tsu

import optax_like
from optax_like.transforms import averaging

SHAPES = [(3, 2), (4,)]


def _trajectory(dtype, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]


def _torch_multi(fn, trajectory):
    avg = [torch.tensor(p).clone() for p in trajectory[0]]
    for n, params in enumerate(trajectory[1:], start=1):
        fn(avg, [torch.tensor(p) for p in params], torch.tensor(n))
    return [a.numpy() for a in avg]


def _torch_single(fn, trajectory):
    avg = [torch.tensor(p).clone() for p in trajectory[0]]
    for n, params in enumerate(trajectory[1:], start=1):
        avg = [fn(a, torch.tensor(p), torch.tensor(n)) for a, p in zip(avg, params)]
    return [a.numpy() for a in avg]


CASES = [
    ("ema_multi", lambda: tsu.get_ema_multi_avg_fn(0.9), lambda: averaging.ema_multi_avg(0.9), _torch_multi),
    ("swa_multi", tsu.get_swa_multi_avg_fn, averaging.swa_multi_avg, _torch_multi),
    ("ema", lambda: tsu.get_ema_avg_fn(0.7), lambda: averaging.ema_avg(0.7), _torch_single),
    ("swa", tsu.get_swa_avg_fn, averaging.swa_avg, _torch_single),
]


@pytest.mark.parametrize("name, torch_fn, our_fn, run_torch", CASES, ids=[c[0] for c in CASES])
def test_averaging_rules_match_torch_inside_jit(parity_dtype, name, torch_fn, our_fn, run_torch):
    trajectory = _trajectory(parity_dtype)
    expected = run_torch(torch_fn(), trajectory)
    multi = name.endswith("multi")
    averager = averaging.averaged_params(**({"multi_avg_fn": our_fn()} if multi else {"avg_fn": our_fn()}))
    state = averager.init([jnp.zeros(s, parity_dtype) for s in SHAPES])
    update = jax.jit(averager.update)
    for params in trajectory:
        state = update([jnp.asarray(p) for p in params], state)
    assert int(state.n_averaged) == len(trajectory)
    rtol = 1e-15 if parity_dtype == "float64" else 1e-7
    for ours, theirs in zip(state.averaged, expected):
        assert ours.dtype == jnp.dtype(parity_dtype)
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=rtol, atol=rtol)


def test_ema_and_swa_params_are_torchs_averaged_model_defaults(x64):
    trajectory = _trajectory("float64", steps=5, seed=1)
    model = torch.nn.Linear(2, 3, dtype=torch.float64)
    ema, swa = tsu.AveragedModel(model, multi_avg_fn=tsu.get_ema_multi_avg_fn(0.99)), tsu.AveragedModel(model)
    ours_ema, ours_swa = optax_like.ema_params(0.99), optax_like.swa_params()
    s_ema = ours_ema.init([jnp.zeros((3, 2)), jnp.zeros(3)])
    s_swa = ours_swa.init([jnp.zeros((3, 2)), jnp.zeros(3)])
    for w, v in trajectory:
        b = v[:3]
        with torch.no_grad():
            model.weight.copy_(torch.tensor(w))
            model.bias.copy_(torch.tensor(b))
        ema.update_parameters(model)
        swa.update_parameters(model)
        s_ema = ours_ema.update([jnp.asarray(w), jnp.asarray(b)], s_ema)
        s_swa = ours_swa.update([jnp.asarray(w), jnp.asarray(b)], s_swa)
    for ours, theirs in ((s_ema, ema), (s_swa, swa)):
        for a, p in zip(ours.averaged, theirs.module.parameters()):
            np.testing.assert_allclose(np.asarray(a), p.detach().numpy(), rtol=1e-15, atol=1e-15)
        assert int(ours.n_averaged) == int(theirs.n_averaged)


def test_errors_and_structure_checks():
    with pytest.raises(ValueError) as theirs:
        tsu.get_ema_multi_avg_fn(1.5)
    with pytest.raises(ValueError) as ours:
        averaging.ema_multi_avg(1.5)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="Only one of"):
        averaging.averaged_params(avg_fn=averaging.ema_avg(), multi_avg_fn=averaging.ema_multi_avg())
    averager = optax_like.ema_params(0.5)
    state = averager.init({"a": jnp.ones(2), "b": jnp.ones(3)})
    with pytest.raises(ValueError, match="b"):
        averager.update({"a": jnp.ones(2)}, state)
