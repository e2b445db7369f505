"""core/torch_layout.py's `none_keys` (timm's SGDW keeps `{'momentum_buffer': None}` without
momentum): exported, loaded, checked; and declared only for keys that are not fields."""

import re
from typing import Any, NamedTuple

import jax.numpy as jnp
import pytest

from optax_like import optim
from optax_like.core.torch_layout import STARTED, declare_torch_state


def _stepped_sgdw(**kwargs):
    opt = optim.SGDW([jnp.ones(3), jnp.ones(2)], lr=0.1, **kwargs)
    opt.backward([jnp.ones(3), None])
    opt.step()
    return opt


def test_a_started_param_has_its_none_entry_and_it_round_trips():
    opt = _stepped_sgdw()
    sd = opt.state_dict()
    assert sd["state"] == {0: {"momentum_buffer": None}}  # param 1 has not stepped (timm: no entry)
    fresh = optim.SGDW([jnp.ones(3), jnp.ones(2)], lr=0.1)
    fresh.load_state_dict(sd)
    assert fresh.state_dict()["state"] == {0: {"momentum_buffer": None}}


def test_a_buffer_under_a_none_key_is_refused_naming_it():
    sd = _stepped_sgdw(momentum=0.9).state_dict()
    sd["param_groups"][0]["momentum"] = 0.0  # the loaded group: no momentum, so no buffer
    fresh = optim.SGDW([jnp.ones(3), jnp.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match=re.escape("param 0: 'momentum_buffer' must be None")):
        fresh.load_state_dict(sd)


def test_a_none_value_elsewhere_is_no_entry():
    """torch's older SGD saved `momentum_buffer: None` without momentum: no state, as before."""
    opt = optim.SGD([jnp.ones(3)], lr=0.1)
    sd = opt.state_dict()
    sd["state"] = {0: {"momentum_buffer": None}}
    opt.load_state_dict(sd)
    assert opt.state_dict()["state"] == {}


def test_none_keys_cannot_be_fields():
    class S(NamedTuple):
        count: Any

    with pytest.raises(TypeError, match=re.escape("none_keys ['count'] are fields")):
        declare_torch_state(S, internal={"count": STARTED}, started="count", none_keys=("count",))
