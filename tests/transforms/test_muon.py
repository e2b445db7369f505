"""muon: Newton-Schulz orthogonalisation, shape rules, errors, and convergence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse as jsparse

import optax_like as ol
from tests.transforms.contract import assert_reduces_loss


@pytest.mark.parametrize("shape", [(8, 8), (16, 4), (4, 16)])
def test_newton_schulz_orthogonalises(shape):
    g = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    o = ol.zeropower_via_newtonschulz(g)
    assert o.dtype == jnp.bfloat16 and o.shape == shape
    s = np.linalg.svd(np.asarray(o.astype(jnp.float32)), compute_uv=False)
    # torch's quintic coefficients give singular values ~ U(0.5, 1.5), not exactly 1.
    assert s.min() > 0.3 and s.max() < 1.5
    u, _, vt = np.linalg.svd(np.asarray(g), full_matrices=False)
    # Same singular directions as U V^T: positive alignment.
    assert np.sum(np.asarray(o.astype(jnp.float32)) * (u @ vt)) > 0.5 * min(shape)


def test_zero_gradient_stays_finite():
    o = ol.zeropower_via_newtonschulz(jnp.zeros((3, 4)))
    assert np.array_equal(np.asarray(o.astype(jnp.float32)), np.zeros((3, 4)))


def test_adjust_lr_ratio_scales_tall_matrices():
    params = {"tall": jnp.zeros((16, 4)), "wide": jnp.zeros((4, 16))}
    grads = jax.tree.map(lambda p: jnp.asarray(np.random.default_rng(1).standard_normal(p.shape), jnp.float32), params)
    out = {}
    for fn in (None, "match_rms_adamw"):
        tx = ol.muon(lr=1.0, weight_decay=0.0, adjust_lr_fn=fn)
        updates, _ = tx.update(grads, tx.init(params), params)
        out[fn] = updates
    tall_orig, wide_orig = (np.linalg.norm(np.asarray(out[None][k])) for k in ("tall", "wide"))
    tall_rms, wide_rms = (np.linalg.norm(np.asarray(out["match_rms_adamw"][k])) for k in ("tall", "wide"))
    # "original": sqrt(max(1, A/B)) = 2 for (16, 4), 1 for (4, 16); "match_rms_adamw": 0.2*sqrt(16) = 0.8 for both.
    np.testing.assert_allclose(tall_orig / tall_rms, 2 / 0.8, rtol=1e-5)
    np.testing.assert_allclose(wide_orig / wide_rms, 1 / 0.8, rtol=1e-5)


def test_non_2d_gradient_and_sparse_gradient_are_rejected():
    params = [jnp.zeros((2, 3))]
    tx = ol.scale_by_muon()
    state = tx.init(params)
    with pytest.raises(ValueError, match="Param gradient must be a 2D matrix"):
        tx.update([jnp.zeros((6,))], state)
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        tx.update([jsparse.BCOO.fromdense(jnp.ones((2, 3)))], state)


def test_matrix_regression_converges():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((128, 16)), jnp.float32)
    w_true = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32) / 4
    y = x @ w_true
    params = {"w": jnp.zeros((16, 8))}

    def loss(p):
        return jnp.mean((x @ p["w"] - y) ** 2)

    assert_reduces_loss(ol.muon(lr=0.02, weight_decay=0.0), loss, params, 50)


def test_injected_hyperparams_match_static_ones_including_ns_steps():
    params = [jnp.ones((4, 3))]
    grads = [jnp.asarray(np.random.default_rng(2).standard_normal((4, 3)), jnp.float32)]
    static = ol.muon(lr=0.02, ns_steps=4)
    injected = ol.inject_hyperparams(ol.muon)(lr=0.02, ns_steps=4)
    u1, _ = jax.jit(static.update)(grads, static.init(params), params)
    state = injected.init(params)
    u2, state = jax.jit(injected.update)(grads, state, params)
    np.testing.assert_array_equal(np.asarray(u1[0]), np.asarray(u2[0]))
    state.hyperparams["ns_steps"] = 0  # a traced loop count: zero iterations is the scaled input
    u3, _ = jax.jit(injected.update)(grads, state, params)
    assert not np.allclose(np.asarray(u3[0]), np.asarray(u2[0]))
