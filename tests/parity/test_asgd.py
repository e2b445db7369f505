"""optax_like.asgd against torch.optim.ASGD (params and averaged params), float32 and float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_close, assert_rejects_like_torch, run_parity, split_torch_ours, assert_single_param_trajectory_is_torchs

# torch's optim_inputs_func_asgd, plus combinations (small t0 so the averaging is exercised).
# float32: XLA:CPU contracts `p * (1 - lambd*eta) - eta * g` into one FMA inside its fusion
# (torch rounds both products; measured: ~25% of elements differ by 1 ulp per step), so float32
# drift reaches 4.7e-7 over 50 steps, inside the 1e-6 target.
CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(t0=10),
    dict(lr=0.05, lambd=0.01, alpha=0.5, t0=5, weight_decay=0.05, maximize=True),
]


def check_averages(state, torch_params, torch_opt, dtype):
    ax = ol.asgd_averaged_params(state)
    torch_ax = [torch_opt.state[p]["ax"] for p in torch_params]
    assert_close(ax, torch_ax, dtype, step=-1)
    # eta/mu are float32 in both. Under x64 ours are computed in float64 and rounded once, as
    # torch does (bit-equal); without x64 the recurrence runs in float32 (measured: 1 ulp off).
    rtol = 0 if dtype == "float64" else 3e-7
    for p, eta, mu in zip(torch_params, np.asarray(state[-1].eta), np.asarray(state[-1].mu)):
        np.testing.assert_allclose(eta, torch_opt.state[p]["eta"].item(), rtol=rtol, atol=0)
        np.testing.assert_allclose(mu, torch_opt.state[p]["mu"].item(), rtol=rtol, atol=0)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_asgd_matches_torch(config, parity_dtype):
    _, state, torch_params, torch_opt = run_parity(torch.optim.ASGD, config, ol.asgd(**config), parity_dtype)
    check_averages(state, torch_params, torch_opt, parity_dtype)


def test_asgd_tensor_lr_matches_torch(parity_dtype):
    # torch keeps a Tensor lr a float32 tensor, so its eta recurrence runs in float32.
    _, state, torch_params, torch_opt = run_parity(
        torch.optim.ASGD, dict(lr=torch.tensor(0.001), t0=10),
        ol.asgd(lr=jnp.asarray(0.001, jnp.float32), t0=10), parity_dtype)
    check_averages(state, torch_params, torch_opt, parity_dtype)


def test_asgd_injected_hyperparams_match_torch(x64):
    config = dict(lr=0.05, lambd=0.01, alpha=0.5, t0=5, weight_decay=0.05)
    _, state, torch_params, torch_opt = run_parity(
        torch.optim.ASGD, config, ol.inject_hyperparams(ol.asgd)(**config), "float64")
    assert_close(ol.asgd_averaged_params(state), [torch_opt.state[p]["ax"] for p in torch_params], "float64", -1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(lr=1e-2, weight_decay=-0.5), "Invalid weight_decay value: -0.5"),
        (dict(lr=(torch.tensor([0.001, 0.001]), jnp.asarray([0.001, 0.001]))), "Tensor lr must be 1-element"),
    ],
)
def test_asgd_rejects_what_torch_rejects(kwargs, message):
    assert_rejects_like_torch(torch.optim.ASGD, ol.asgd, message, *split_torch_ours(kwargs))


def test_asgd_averaged_params_needs_one_asgd_state():
    params = {"w": jnp.ones(3), "frozen": None}
    state = ol.asgd().init(params)
    assert ol.asgd_averaged_params(state)["frozen"] is None
    with pytest.raises(ValueError, match="exactly one ASGD state"):
        ol.asgd_averaged_params(ol.sgd(lr=0.1).init(params))


def test_asgd_averages_a_noisy_least_squares_fit():
    """SGD on a noisy least-squares problem: the loss drops 20x, and the average (t0=100 of
    300 steps) has a lower loss than the last iterate, which is what ASGD is for."""
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((64, 4)), jnp.float32)
    b = a @ jnp.asarray(rng.standard_normal(4), jnp.float32)
    loss = lambda p: jnp.mean((a @ p["x"] - b) ** 2)
    tx = ol.asgd(lr=0.05, t0=100)
    params = {"x": jnp.zeros(4, jnp.float32)}
    state = tx.init(params)

    @jax.jit
    def step(params, state, key):
        rows = jax.random.choice(key, 64, (8,))
        g = jax.grad(lambda p: jnp.mean((a[rows] @ p["x"] - b[rows]) ** 2))(params)
        g = {"x": g["x"] + 0.5 * jax.random.normal(jax.random.fold_in(key, 1), (4,))}
        updates, state = tx.update(g, state, params)
        return ol.apply_updates(params, updates), state

    first = loss(params)
    for i in range(300):
        params, state = step(params, state, jax.random.key(i))
    assert float(loss(params)) < float(first) / 20
    assert float(loss(ol.asgd_averaged_params(state))) < float(loss(params))


def test_asgd_infinite_gradient_gives_torchs_infinite_param(x64):
    """An infinite gradient sends the param to -inf/+inf, and it stays there in torch
    (`param.add_(grad, alpha=-eta)`); the emitted step is 0 there, not inf - inf = NaN."""
    p0 = np.array([1.0, -2.0, 0.5])
    grads = [[np.inf, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, np.inf, -np.inf], [1.0, 1.0, 1.0]]
    torch_p = torch.tensor(p0, requires_grad=True)
    torch_opt = torch.optim.ASGD([torch_p], lr=0.01, t0=1, foreach=False)

    def check(state):
        np.testing.assert_array_equal(np.asarray(ol.asgd_averaged_params(state)), torch_opt.state[torch_p]["ax"].numpy())

    assert_single_param_trajectory_is_torchs(torch_opt, torch_p, ol.asgd(0.01, t0=1), p0, grads, check)
    np.testing.assert_array_equal(torch_p.detach().numpy(), [-np.inf, -np.inf, np.inf])
