"""optax_like.adam against torch.optim.Adam, every option, float32 and float64."""

import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_rejects_like_torch, run_parity

CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(lr=0.01, betas=(0.8, 0.9999), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, amsgrad=True, weight_decay=0.1),
    dict(lr=0.01, maximize=True),
    dict(lr=0.01, maximize=True, amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.01, betas=(0.0, 0.0)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_adam_matches_torch(config, parity_dtype):
    run_parity(torch.optim.Adam, config, ol.adam(**config), parity_dtype)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
        (dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    ],
)
def test_adam_rejects_what_torch_rejects(kwargs, message):
    assert_rejects_like_torch(torch.optim.Adam, ol.adam, message, kwargs)
