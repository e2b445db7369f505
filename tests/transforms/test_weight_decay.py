import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_coupled_weight_decay_adds_wd_times_param():
    tx = ol.add_decayed_weights(0.1)
    p = {"w": jnp.asarray([1.0, -2.0])}
    u, _ = tx.update({"w": jnp.zeros(2)}, tx.init(p), p)
    np.testing.assert_allclose(u["w"], [0.1, -0.2])


def test_decoupled_weight_decay_scales_params_by_one_minus_lr_wd():
    tx = ol.chain(ol.scale_by_learning_rate(0.5), ol.add_decoupled_weight_decay(0.5, 0.1))
    p = {"w": jnp.asarray([1.0, -2.0])}
    u, _ = tx.update({"w": jnp.zeros(2)}, tx.init(p), p)
    np.testing.assert_allclose(ol.apply_updates(p, u)["w"], np.asarray([1.0, -2.0]) * (1 - 0.05), rtol=1e-7)


def test_weight_decay_needs_params():
    import pytest

    tx = ol.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="needs the params"):
        tx.update({"w": jnp.zeros(2)}, tx.init(None))


def test_weight_decay_mask():
    tx = ol.add_decayed_weights(1.0, mask={"w": True, "b": False})
    p = {"w": jnp.ones(2), "b": jnp.ones(2)}
    u, _ = tx.update({"w": jnp.zeros(2), "b": jnp.zeros(2)}, tx.init(p), p)
    np.testing.assert_array_equal(u["w"], [1, 1])
    np.testing.assert_array_equal(u["b"], [0, 0])


def test_coupled_weight_decay_passes_none_updates_through():
    """A None update, for a leaf, a subtree or the whole tree, is no gradient (torch's `grad is
    None`): it stays None; with no gradient at all the state is returned as it is (optax's test
    calls `update(None, 0, params)`)."""
    tx = ol.add_decayed_weights(0.1)
    p = (jnp.ones(2), {"a": jnp.ones(2), "b": jnp.ones(2)})
    state = tx.init(p)
    assert tx.update(None, state, p) == (None, state)
    assert tx.update(None, 0, p) == (None, 0)
    u, _ = tx.update((jnp.zeros(2), None), state, p)
    np.testing.assert_allclose(u[0], [0.1, 0.1])
    assert u[1] == {"a": None, "b": None}
