"""optax_like.rmsprop against torch.optim.RMSprop where the generic suites do not reach: a traced
momentum of 0 (tests/parity/test_optim_db.py runs every configuration and the record's variants)."""

import torch

import optax_like as ol
from tests.parity.harness import run_parity


def test_rmsprop_traced_zero_momentum_matches_torchs_bufferless_path(x64):
    # inject_hyperparams traces momentum: the buffer path runs even at momentum 0, and must give
    # the numbers of torch's no-buffer path.
    config = dict(lr=0.01, momentum=0.0, centered=True, weight_decay=0.1)
    run_parity(torch.optim.RMSprop, config, ol.inject_hyperparams(ol.rmsprop)(**config), "float64")
