"""`scale_by_adam`'s options beyond torch's (its torch parity runs in the generic suites)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol


def _steps(tx, grads, p):
    state, out = tx.init(p), []
    for g in grads:
        u, state = jax.jit(tx.update)(g, state, p)
        out.append(u)
    return out, state


def test_eps_root_zero_is_torchs_step_bit_for_bit():
    p = jnp.linspace(-1.0, 1.0, 7)
    grads = [jnp.sin(p * (k + 1)) for k in range(4)]
    # host numbers: the default path; traced (injected) b1, b2, eps: eps_root as a host 0 or a
    # traced 0 gives the same (torch's) denominator
    for reference, tx in ((ol.scale_by_adam(), ol.scale_by_adam(eps_root=0.0)),
                          (ol.inject_hyperparams(ol.scale_by_adam, static_args="eps_root")(),
                           ol.inject_hyperparams(ol.scale_by_adam)())):
        expected, _ = _steps(reference, grads, p)
        out, _ = _steps(tx, grads, p)
        for a, b in zip(expected, out):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("inject", [False, True])
def test_eps_root_is_added_inside_the_square_root(inject):
    b1, b2, eps, eps_root = 0.9, 0.999, 1e-8, 1e-4
    p = jnp.linspace(-1.0, 1.0, 5)
    grads = [jnp.cos(p * (k + 1)) for k in range(3)]
    factory = ol.inject_hyperparams(ol.scale_by_adam) if inject else ol.scale_by_adam
    out, state = _steps(factory(b1, b2, eps, eps_root=eps_root), grads, p)
    m = v = np.zeros(5)
    for t, g in enumerate(grads, 1):
        g = np.asarray(g, np.float64)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        expected = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t) + eps_root) + eps)
        np.testing.assert_allclose(out[t - 1], expected, rtol=2e-6)
    if inject:
        assert float(state.hyperparams["eps_root"]) == pytest.approx(eps_root)


def test_eps_root_keeps_the_gradient_through_a_zero_moment_finite():
    def loss(g):
        u, _ = ol.scale_by_adam(eps_root=1e-8).update(g, ol.scale_by_adam().init(g))
        return jnp.sum(u)

    assert bool(jnp.all(jnp.isfinite(jax.grad(loss)(jnp.zeros(3)))))
    with pytest.raises(ValueError, match="eps_root"):
        ol.scale_by_adam(differentiable_lr=0.1, eps_root=1e-8).update(jnp.ones(2), ol.scale_by_adam().init(jnp.ones(2)))
