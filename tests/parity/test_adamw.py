"""optax_like.adamw is optax_like.adam with decoupled weight decay (its parity with torch:
tests/parity/test_optim_db.py)."""

import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_adamw_is_adam_with_decoupled_weight_decay():
    params = {"w": jnp.linspace(-1.0, 1.0, 6)}
    grads = {"w": jnp.linspace(0.5, -0.3, 6)}
    for kwargs in (dict(), dict(lr=0.02, weight_decay=0.3, amsgrad=True, maximize=True)):
        a = ol.adamw(**kwargs)
        b = ol.adam(**{"weight_decay": 1e-2, **kwargs}, decoupled_weight_decay=True)
        ua, _ = a.update(grads, a.init(params), params)
        ub, _ = b.update(grads, b.init(params), params)
        np.testing.assert_array_equal(ua["w"], ub["w"])
