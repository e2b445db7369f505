"""optax_like.sgd against torch.optim.SGD, every option, float32 and float64."""

import pytest
import torch

import optax_like as ol
from tests.parity.harness import assert_rejects_like_torch, run_parity

CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, weight_decay=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.5),
    dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(lr=0.05, momentum=0.9, maximize=True),
    dict(lr=0.05, momentum=0.5, dampening=0.2, weight_decay=0.05, maximize=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_sgd_matches_torch(config, parity_dtype):
    run_parity(torch.optim.SGD, config, ol.sgd(**config), parity_dtype)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
        (dict(lr=0.1, weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        (dict(lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
        (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    ],
)
def test_sgd_rejects_what_torch_rejects(kwargs, message):
    assert_rejects_like_torch(torch.optim.SGD, ol.sgd, message, kwargs)
