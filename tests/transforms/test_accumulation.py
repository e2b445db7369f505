import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


# ------------------------------------------------------------------- optax's options (issue 28.3)
def test_multisteps_sums_without_use_grad_mean():
    p = {"w": jnp.zeros(())}
    acc = ol.MultiSteps(ol.scale(1.0), 4, use_grad_mean=False)
    state = acc.init(p)
    for v in (1.0, 2.0, 3.0, 4.0):
        u, state = acc.update({"w": jnp.asarray(v)}, state, p)
    assert bool(acc.has_updated(state)) and float(u["w"]) == 10.0


def test_multisteps_rejects_micro_batches_the_skip_function_refuses():
    from optax_like.transforms.accumulation import skip_not_finite

    acc = ol.MultiSteps(ol.sgd(1.0), 2, should_skip_update_fn=skip_not_finite)
    p = {"w": jnp.zeros(())}
    state = jax.jit(acc.init)(p)
    assert int(state.skip_state["num_not_finite"]) == 0
    update = jax.jit(acc.update)
    outs = []
    for v in (1.0, np.inf, np.nan, 3.0, 5.0):
        u, state = update({"w": jnp.asarray(v)}, state, p)
        outs.append((float(u["w"]), int(state.mini_step), bool(state.skip_state["should_skip"])))
    # inf and nan: nothing accumulated, nothing counted, a zero update; then the mean of 1 and 3
    assert outs == [(0.0, 1, False), (0.0, 1, True), (0.0, 1, True), (-2.0, 0, False), (0.0, 1, False)]
    with pytest.raises(ValueError, match="boolean scalar"):
        bad = ol.MultiSteps(ol.sgd(1.0), 2, should_skip_update_fn=lambda u, s, p: (jnp.zeros(2, bool), ()))
        bad.update({"w": jnp.ones(())}, bad.init(p), p)


def test_skip_functions():
    from optax_like.transforms.accumulation import skip_large_updates, skip_not_finite

    step = jnp.zeros((), jnp.int32)
    skip, info = skip_not_finite([jnp.array([1.0, np.inf, np.nan]), jnp.zeros(2)], step, None)
    assert bool(skip) and int(info["num_not_finite"]) == 2
    skip, info = skip_large_updates([jnp.array(11.0), jnp.zeros(())], step, None, 100.0)
    assert bool(skip) and float(info["norm_squared"]) == 121.0
    skip, _ = skip_large_updates([jnp.array(9.0)], step, None, 100.0)
    assert not bool(skip)
    skip, _ = skip_large_updates([jnp.array(np.nan)], step, None, 100.0)
    assert bool(skip)


def test_multisteps_accumulator_dtype_is_kept_under_scan():
    acc = ol.MultiSteps(ol.sgd(1e-4), 2, accumulator_dtype=jnp.float32)
    p = {"a": jnp.zeros((), jnp.bfloat16)}

    def step(state, _):
        u, state = acc.update({"a": jnp.ones((), jnp.bfloat16)}, state, p)
        return state, u

    state, us = jax.lax.scan(step, acc.init(p), jnp.arange(4))
    assert state.acc_grads["a"].dtype == jnp.float32 and us["a"].shape == (4,)
    default = ol.MultiSteps(ol.sgd(1e-4), 2).init(p)
    assert default.acc_grads["a"].dtype == jnp.float32  # by default, the param's compute dtype
