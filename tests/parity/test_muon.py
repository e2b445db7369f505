"""optax_like.muon against torch.optim.Muon (Newton-Schulz in bfloat16 on both sides).

Parity is to bfloat16 rounding: the momentum buffers match bit for bit, but XLA's and
torch's CPU gemms accumulate in different orders, which can flip the last bit of a bf16 entry
of the orthogonalised update. Measured (50 steps, lr=0.02, these shapes): max relative param
error 1.6e-4; the tolerance below is RTOL.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim._muon import _zeropower_via_newtonschulz

import optax_like as ol
from tests.parity.harness import run_parity

SHAPES = ((4, 3), (3, 7), (16, 16), (64, 32))
RTOL = 1e-3  # relative, floor 1, after every one of 50 steps at lr = 0.02

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_muon_matches_torch_on_larger_matrices_with_exact_momentum(parity_dtype):
    # Every option's parity: tests/parity/test_optim_db.py (torch's configurations, the record's variants).
    config = dict(lr=0.02, weight_decay=0.2)
    params, state, torch_params, torch_opt = run_parity(
        torch.optim.Muon, config, ol.muon(**config), parity_dtype, shapes=SHAPES, rtol=RTOL
    )
    for i, p in enumerate(torch_params):  # the float math before Newton-Schulz is exact
        np.testing.assert_array_equal(
            np.asarray(state[0].momentum_buffer[i]), torch_opt.state[p]["momentum_buffer"].numpy()
        )


@pytest.mark.parametrize("shape", [(4, 3), (3, 7), (16, 16), (32, 64)])
def test_newton_schulz_matches_torch_bit_for_bit_on_one_call(shape):
    g = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours = np.asarray(ol.zeropower_via_newtonschulz(jnp.asarray(g)).astype(jnp.float32))
    theirs = _zeropower_via_newtonschulz(torch.tensor(g), (3.4445, -4.775, 2.0315), 5, 1e-7).float().numpy()
    assert ol.zeropower_via_newtonschulz(jnp.asarray(g)).dtype == jnp.bfloat16
    # One bf16 ulp (2**-8 relative) where accumulation order rounds differently.
    np.testing.assert_allclose(ours, theirs, rtol=2**-7, atol=2**-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ns_steps=100), "Number of steps must be less than 100 for computational efficiency"),
        (dict(ns_coefficients=(1.0, 2.0)), "Coefficients must be a tuple of exactly 3 values"),
    ],
)
def test_muon_newton_schulz_errors_match_torch(kwargs, message):
    param = torch.zeros(2, 2, requires_grad=True)
    param.grad = torch.ones(2, 2)
    opt = torch.optim.Muon([param], **kwargs)
    with pytest.raises(ValueError) as torch_error:  # torch raises at the step
        opt.step()
    with pytest.raises(ValueError) as ours:  # we raise at construction
        ol.muon(**kwargs)
    assert str(ours.value) == str(torch_error.value) == message


def test_muon_rejects_non_2d_params_like_torch():
    with pytest.raises(ValueError) as torch_error:
        torch.optim.Muon([torch.rand(2, 3, 4)])
    with pytest.raises(ValueError) as ours:
        ol.muon().init([jnp.zeros((2, 3)), jnp.zeros((2, 3, 4))])
    assert str(ours.value) == str(torch_error.value)
    assert "torch.Size([2, 3, 4])" in str(ours.value)
