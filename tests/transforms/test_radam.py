import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import optax_like as ol
from optax_like.transforms.radam import radam_first_rectified_step, radam_rho


def test_momentum_steps_before_the_switch_then_rectified():
    tx = ol.scale_by_radam(0.9, 0.999, eps=0.0)
    state = tx.init([jnp.zeros(2)])
    g = jnp.asarray([2.0, -0.5])
    update = jax.jit(tx.update)
    for t in range(1, 7):
        u, state = update([g], state)
        if t <= 5:  # rho_t <= 5: the bias-corrected momentum itself (here = g)
            np.testing.assert_allclose(u[0], g, rtol=1e-5)
        else:  # rectified: m^ * sqrt(bc2) / sqrt(v) * r = sign(g) * r
            rho_inf, rho_t = 2 / 0.001 - 1, 2 / 0.001 - 1 - 2 * 6 * 0.999**6 / (1 - 0.999**6)
            r = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            np.testing.assert_allclose(u[0], np.sign(g) * r, rtol=1e-5)


@pytest.mark.parametrize("beta2", [0.999, 0.9999, 0.99, 0.7])
def test_rho_t_is_accurate_in_float32(beta2):
    # torch's formula in float32 would keep ~4 digits at small t; radam_rho keeps ~all.
    mpmath.mp.dps = 40
    steps = np.array([1, 2, 5, 6, 10, 100, 499, 500, 5000, 10**6], np.int32)
    _, rho = radam_rho(beta2, jnp.asarray(steps), jnp.float32)
    b = mpmath.mpf(beta2)
    for t, value in zip(steps, np.asarray(rho)):
        exact = (2 / (1 - b) - 1) - 2 * int(t) * b ** int(t) / (1 - b ** int(t))
        assert abs(float((mpmath.mpf(float(value)) - exact) / exact)) < 1e-6, (t, value, exact)



@pytest.mark.parametrize("beta2", [0.999, 0.9999, 0.99, 0.9, 0.75, 0.7, 2 / 3, 0.5, 0.0])
def test_radam_switch_step_is_torchs(beta2):
    def torch_rho(step):
        rho_inf = 2 / (1 - beta2) - 1
        return rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)

    expected = next((t for t in range(1, 10_000) if torch_rho(float(t)) > 5), None)
    assert radam_first_rectified_step(beta2) == expected
