"""timm's Adafactor: the constructor check the registry's `invalid` cannot carry.

timm's only check (`warmup_init requires relative_step=True`, i.e. warmup_init with an lr) is
not a record `invalid` entry: tests/test_validation.py derives further cases from the arguments
an `invalid` names (a 3-element tensor lr, wrong lr types), and timm takes any lr, checking none.
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest
import torch

import optax_like as ol
from optax_like import optim, registry


def _timm_error(**kwargs):
    cls = registry.OPTIMIZERS["timm_adafactor"].reference_class()
    with pytest.raises(Exception) as error:
        cls([torch.zeros(2, 3, requires_grad=True)], **kwargs)
    return error.value


@pytest.mark.parametrize("lr", [1e-2, jnp.asarray(1e-2)], ids=["float", "array"])
def test_warmup_init_needs_relative_steps_like_timm(lr):
    theirs = _timm_error(lr=1e-2, warmup_init=True)
    for build in (lambda: ol.timm_adafactor(lr=lr, warmup_init=True),
                  lambda: optim.TimmAdafactor([jnp.zeros((2, 3))], lr=lr, warmup_init=True)):
        with pytest.raises(type(theirs)) as ours:
            build()
        assert str(ours.value) == str(theirs)


def test_relative_step_group_entries_come_from_the_constructor_like_timm():
    """timm's groups hold `relative_step` (lr is None) and `beta1` (betas[0]), not `betas`."""
    cls = registry.OPTIMIZERS["timm_adafactor"].reference_class()
    for kwargs in ({}, dict(lr=1e-2, betas=(0.8, 0.9))):
        theirs = cls([torch.zeros(2, 3, requires_grad=True)], **kwargs).param_groups[0]
        ours = optim.TimmAdafactor([jnp.zeros((2, 3))], **kwargs).param_groups[0]
        assert (ours["relative_step"], ours["beta1"]) == (theirs["relative_step"], theirs["beta1"])
    with pytest.raises(ValueError, match="relative_step=False needs an lr"):
        ol.timm_adafactor(relative_step=False)
