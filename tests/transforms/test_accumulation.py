import jax
import jax.numpy as jnp
import numpy as np

import optax_like as ol


def test_multisteps_applies_inner_to_the_mean_of_k_micro_batches():
    p = {"w": jnp.ones(3)}
    micro = [{"w": jnp.full(3, v)} for v in (1.0, 2.0, 6.0)]
    acc = ol.MultiSteps(ol.adam(0.1), every_k_schedule=3)
    state = acc.init(p)
    update = jax.jit(acc.update)
    for i, g in enumerate(micro):
        u, state = update(g, state, p)
        if i < 2:
            np.testing.assert_array_equal(u["w"], np.zeros(3))
            assert not bool(acc.has_updated(state))
    assert bool(acc.has_updated(state))
    ref = ol.adam(0.1)
    expected, ref_state = ref.update({"w": jnp.full(3, 3.0)}, ref.init(p), p)
    np.testing.assert_allclose(u["w"], expected["w"], rtol=1e-6)
    inner = state.inner_opt_state[0]
    np.testing.assert_allclose(inner.exp_avg["w"], ref_state[0].exp_avg["w"], rtol=1e-6)
    np.testing.assert_array_equal(state.acc_grads["w"], np.zeros(3))


def test_multisteps_with_a_schedule_of_k():
    acc = ol.MultiSteps(ol.sgd(1.0), every_k_schedule=lambda step: jnp.where(step == 0, 1, 2))
    p = {"w": jnp.zeros(1)}
    state = acc.init(p)
    outs = []
    for _ in range(5):
        u, state = acc.update({"w": jnp.ones(1)}, state, p)
        outs.append(float(u["w"][0]))
    assert outs == [-1.0, 0.0, -1.0, 0.0, -1.0]


def test_multisteps_rejects_k_below_one():
    import pytest

    with pytest.raises(ValueError, match="every_k_schedule"):
        ol.MultiSteps(ol.sgd(), every_k_schedule=0)
