import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_first_step_is_sign_like_and_eps_sits_inside_the_max():
    tx = ol.scale_by_adamax(0.9, 0.999, eps=1e-8)
    g = jnp.asarray([2.0, -0.5, 0.0])
    u, state = tx.update([g], tx.init([jnp.zeros(3)]))
    # m_1 = 0.1 g, bias-corrected: g; u_1 = max(0, |g| + eps) = |g| + eps.
    np.testing.assert_allclose(u[0], g / (jnp.abs(g) + 1e-8), rtol=1e-6)
    np.testing.assert_allclose(state.exp_inf[0], jnp.abs(g) + 1e-8, rtol=1e-6)
    # A zero gradient leaves exp_inf at eps, never 0: no division by zero.
    assert float(state.exp_inf[0][2]) > 0


def test_exp_inf_decays_then_takes_the_max():
    tx = ol.scale_by_adamax(0.9, 0.5, eps=0.0)
    state = tx.init([jnp.zeros(2)])
    _, state = tx.update([jnp.asarray([4.0, 1.0])], state)
    _, state = tx.update([jnp.asarray([1.0, 3.0])], state)
    np.testing.assert_allclose(state.exp_inf[0], [2.0, 3.0])  # max(0.5*4, 1), max(0.5*1, 3)
    np.testing.assert_array_equal(state.step, [2])
