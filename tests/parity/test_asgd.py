"""optax_like.asgd where the generic suites do not reach (its parity with torch.optim.ASGD, averaged
params and eta/mu included: tests/parity/test_optim_db.py, tests/test_generic.py): the averaged
params' accessor, what averaging is for, infinite gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_single_param_trajectory_is_torchs

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
