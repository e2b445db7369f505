"""optax_like.adafactor against torch.optim.Adafactor, every option, float32 and float64."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import run_parity

# Factored (2-D and 3-D: factored over the last two axes) and unfactored (1-D, 0-D) params.
SHAPES = ((4, 3), (2, 3, 5), (5,), ())

CONFIGS = [
    # torch's own configurations (optim_inputs_func) run in tests/parity/test_optim_db.py.
    dict(lr=0.1, eps=(1e-30, 1e-2)),
    dict(lr=0.5, eps=(0.1, 0.0)),  # eps1 large enough to clamp; eps2 = 0
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_adafactor_matches_torch(config, parity_dtype):
    params, state, torch_params, torch_opt = run_parity(
        torch.optim.Adafactor, config, ol.adafactor(**config), parity_dtype, shapes=SHAPES
    )
    inner = state[1 if config.get("maximize") else 0]
    rtol = 1e-12 if parity_dtype == "float64" else 1e-6
    for i, p in enumerate(torch_params):
        st = torch_opt.state[p]
        assert int(inner.step[i]) == int(st["step"]) == 50
        for key in ("row_var", "col_var", "variance"):
            ours = getattr(inner, key)[i]
            assert (ours is None) == (key not in st), key
            if ours is not None:
                assert ours.shape == tuple(st[key].shape)
                np.testing.assert_allclose(np.asarray(ours), st[key].numpy(), rtol=rtol, atol=0)


def test_adafactor_tensor_lr_matches_torch():
    # torch reads a tensor lr with `.item()`; a jax scalar lr is a traced hyperparameter here.
    run_parity(torch.optim.Adafactor, dict(lr=torch.tensor(0.01)), ol.adafactor(lr=jnp.asarray(0.01)), "float32",
               shapes=SHAPES)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Learning rate should be >= 0 but is: -1.0"),
        (dict(beta2_decay=0.8), "beta2_decay should be <= 0 but is: 0.8"),
        (dict(eps=(-1e-30, 1e-3)), "epsilon1 should be >= 0 but is: -1e-30"),
        (dict(eps=(None, -1.0)), "epsilon2 should be >= 0 but is: -1.0"),
        (dict(d=0.0), "Clipping threshold d should be >= 1 but is: 0.0"),
        (dict(weight_decay=-0.1), "weight_decay should be >= 0 but is: -0.1"),
        (dict(lr=torch.tensor([0.01, 0.01])), "Tensor lr must be 1-element"),
    ],
)
def test_adafactor_rejects_what_torch_rejects(kwargs, message):
    with pytest.raises(ValueError) as torch_error:
        torch.optim.Adafactor([torch.zeros(1, requires_grad=True)], **kwargs)
    ours_kwargs = {k: (jnp.asarray(v.numpy()) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    with pytest.raises(ValueError) as ours:
        ol.adafactor(**ours_kwargs)
    assert str(ours.value) == str(torch_error.value) == message
