"""optax_like.adamax against torch.optim.Adamax: every option, float32 and float64, errors, state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import run_parity

CONFIGS = [
    dict(),
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, maximize=True),
    dict(lr=0.1, maximize=True, weight_decay=0.1),
    dict(lr=0.1, betas=(0.5, 0.9), eps=1e-3),  # eps large enough to win the max
    dict(lr=0.1, betas=(0.0, 0.0)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_adamax_matches_torch(config, parity_dtype):
    run_parity(torch.optim.Adamax, config, ol.adamax(**config), parity_dtype)


@pytest.mark.parametrize("config", [dict(lr=0.1), dict(lr=0.1, weight_decay=0.3, maximize=True)], ids=str)
def test_adamax_complex_params_match_torch(config, x64):
    run_parity(torch.optim.Adamax, config, ol.adamax(**config), "float64", complex_params=True)


def test_adamax_with_traced_hyperparams_matches_torch(parity_dtype):
    config = dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    run_parity(torch.optim.Adamax, config, ol.inject_hyperparams(ol.adamax)(**config), parity_dtype)


def test_adamax_matches_torch_foreach_path():
    config = dict(lr=0.1, weight_decay=0.1, foreach=True)
    run_parity(torch.optim.Adamax, config, ol.adamax(**config), "float32")


def test_adamax_state_maps_to_torch_state(x64):
    config = dict(lr=0.1, weight_decay=0.1)
    _, state, torch_params, torch_opt = run_parity(
        torch.optim.Adamax, config, ol.adamax(**config), "float64", steps=7
    )
    inner = next(s for s in state if isinstance(s, ol.ScaleByAdamaxState))
    for i, p in enumerate(torch_params):
        torch_state = torch_opt.state[p]
        assert set(torch_state) == {"step", "exp_avg", "exp_inf"}
        for key in ("exp_avg", "exp_inf"):
            np.testing.assert_allclose(getattr(inner, key)[i], torch_state[key].numpy(), rtol=1e-12)
        assert int(inner.step[i]) == int(torch_state["step"].item()) == 7


def test_adamax_kernel_switches_are_accepted_and_ignored():
    # torch's kernel selectors change nothing here: same numbers as torch's reference path.
    config = dict(lr=0.1)
    run_parity(torch.optim.Adamax, config, ol.adamax(**config, foreach=True, capturable=True, differentiable=True), "float32", steps=10)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=-1.0),
        dict(eps=-1e-8),
        dict(betas=(1.0, 0.999)),
        dict(lr=1e-2, betas=(0.0, 1.0)),
        dict(betas=(0.9, -0.1)),
        dict(weight_decay=-0.1),
        dict(lr=np.array([0.001, 0.001])),
    ],
    ids=str,
)
def test_adamax_rejects_what_torch_rejects(kwargs):
    torch_kwargs = {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    with pytest.raises(ValueError) as torch_error:
        torch.optim.Adamax([torch.zeros(1, requires_grad=True)], **torch_kwargs)
    ours_kwargs = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    with pytest.raises(ValueError) as ours:
        ol.adamax(**ours_kwargs)
    assert str(ours.value) == str(torch_error.value)


def test_adamax_converges_on_least_squares():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 8)), jnp.float32)
    y = x @ jnp.asarray(rng.standard_normal(8), jnp.float32)
    loss = lambda w: jnp.mean((x @ w - y) ** 2)
    tx = ol.adamax(lr=0.05)
    w = jnp.zeros(8)
    state = tx.init(w)

    @jax.jit
    def step(w, state):
        updates, state = tx.update(jax.grad(loss)(w), state, w)
        return ol.apply_updates(w, updates), state

    start = float(loss(w))
    for _ in range(300):
        w, state = step(w, state)
    assert float(loss(w)) < start / 1000
