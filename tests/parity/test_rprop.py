"""optax_like.rprop against torch.optim.Rprop, every option, float32 and float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_rejects_like_torch, run_parity, assert_single_param_trajectory_is_torchs

# torch's optim_inputs_func_rprop, plus configs where the clamps bind. Random gradients change
# sign every other step, so the sign-change (gradient zeroed) path runs throughout.
CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(lr=0.1, etas=(0.3, 2.0), step_sizes=(1e-2, 0.15)),
    dict(lr=1e-3, etas=(0.1, 1.9), step_sizes=(5e-4, 50), maximize=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_rprop_matches_torch(config, parity_dtype):
    _, state, torch_params, torch_opt = run_parity(torch.optim.Rprop, config, ol.rprop(**config), parity_dtype)
    rprop_state = state[-1]
    for i, p in enumerate(torch_params):
        np.testing.assert_array_equal(rprop_state.step_size[i], torch_opt.state[p]["step_size"].numpy())
        np.testing.assert_array_equal(rprop_state.prev[i], torch_opt.state[p]["prev"].numpy())


def test_rprop_tensor_lr_matches_torch(parity_dtype):
    run_parity(torch.optim.Rprop, dict(lr=torch.tensor(0.001)), ol.rprop(lr=jnp.asarray(0.001, jnp.float32)), parity_dtype)


def test_rprop_injected_hyperparams_match_torch(x64):
    config = dict(lr=0.1, etas=(0.3, 2.0), step_sizes=(1e-2, 0.15))
    run_parity(torch.optim.Rprop, config, ol.inject_hyperparams(ol.rprop)(**config), "float64")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(lr=1e-2, etas=(1.0, 0.5)), "Invalid eta values: 1.0, 0.5"),
        (dict(etas=(0.0, 1.2)), "Invalid eta values: 0.0, 1.2"),
        (dict(etas=(0.5, 1.0)), "Invalid eta values: 0.5, 1.0"),
        (dict(lr=(torch.tensor([0.001, 0.001]), jnp.asarray([0.001, 0.001]))), "Tensor lr must be 1-element"),
    ],
)
def test_rprop_rejects_what_torch_rejects(kwargs, message):
    torch_kwargs = {k: (v[0] if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], torch.Tensor) else v) for k, v in kwargs.items()}
    our_kwargs = {k: (v[1] if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], torch.Tensor) else v) for k, v in kwargs.items()}
    assert_rejects_like_torch(torch.optim.Rprop, ol.rprop, message, torch_kwargs, our_kwargs)


def test_rprop_rejects_malformed_pairs():
    with pytest.raises(TypeError, match="etas must be a pair"):
        ol.rprop(etas=0.5)
    with pytest.raises(TypeError, match="step_sizes must be a pair"):
        ol.rprop(step_sizes=(1e-6, 50, 3))


def test_rprop_fits_least_squares():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((32, 4)), jnp.float32)
    b = a @ jnp.asarray(rng.standard_normal(4), jnp.float32)
    loss = lambda p: jnp.mean((a @ p["x"] - b) ** 2)
    tx = ol.rprop(lr=0.01)
    params = {"x": jnp.zeros(4, jnp.float32)}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return ol.apply_updates(params, updates), state

    first = loss(params)
    for _ in range(200):
        params, state = step(params, state)
    assert float(loss(params)) < float(first) * 1e-4


def test_rprop_nan_gradient_keeps_going_like_torch(x64):
    """torch.sign(nan) == 0: an element whose gradient is NaN does not move and keeps its step
    size; its NaN `prev` gives factor 1 at the next step (jnp.sign(nan) would poison it)."""
    p0 = np.array([1.0, -2.0, 0.5, 3.0])
    grads = [[1.0, 1.0, 1.0, -1.0], [np.nan, 1.0, -1.0, np.nan], [1.0, 1.0, 1.0, -1.0], [1.0, np.nan, 1.0, -1.0], [1.0, 1.0, 1.0, -1.0]]
    torch_p = torch.tensor(p0, requires_grad=True)
    torch_opt = torch.optim.Rprop([torch_p], lr=0.01, foreach=False)

    def check(state):
        (rprop_state,) = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, ol.ScaleByRpropState))
                          if isinstance(s, ol.ScaleByRpropState)]
        np.testing.assert_array_equal(np.asarray(rprop_state.step_size), torch_opt.state[torch_p]["step_size"].numpy())

    assert_single_param_trajectory_is_torchs(torch_opt, torch_p, ol.rprop(0.01), p0, grads, check)
    assert np.isfinite(torch_p.detach().numpy()).all()
