import jax
import jax.numpy as jnp
import numpy as np

import optax_like as ol


def mu(t, beta1=0.9, psi=4e-3):
    return beta1 * (1 - 0.5 * 0.96 ** (t * psi))


def test_first_step_follows_the_formula():
    tx = ol.scale_by_nadam(0.9, 0.999, eps=0.0, momentum_decay=4e-3)
    g = jnp.asarray([2.0, -0.5])
    u, state = tx.update([g], tx.init([jnp.zeros(2)]))
    m, d = 0.1 * np.asarray(g), np.abs(np.asarray(g))  # sqrt(v_1 / bc2) = |g|
    mu1, mu2 = mu(1), mu(2)
    expected = (1 - mu1) / (1 - mu1) * np.asarray(g) / d + mu2 / (1 - mu1 * mu2) * m / d
    np.testing.assert_allclose(u[0], expected, rtol=1e-6)
    np.testing.assert_allclose(state.mu_product, [mu1], rtol=1e-7)
    assert state.mu_product.dtype == jnp.float32


def test_mu_product_is_a_running_product_per_leaf():
    tx = ol.scale_by_nadam(momentum_decay=0.5)
    state = ol.per_leaf_scalars(tx.init({"a": jnp.zeros(1), "b": jnp.zeros(1)}))  # None gradients ahead
    update = jax.jit(tx.update)
    for _ in range(3):
        _, state = update({"a": jnp.ones(1), "b": jnp.ones(1)}, state)
    _, state = update({"a": jnp.ones(1), "b": None}, state)
    np.testing.assert_array_equal(state.step, [4, 3])
    np.testing.assert_allclose(state.mu_product, [np.prod([mu(t, psi=0.5) for t in range(1, 5)]),
                                                  np.prod([mu(t, psi=0.5) for t in range(1, 4)])], rtol=1e-6)
