import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like.transforms.inject import as_hyperparam


def counting_step(tx):
    traces = []

    def step(g, s, p):
        traces.append(1)
        u, s = tx.update(g, s, p)
        return ol.apply_updates(p, u), s

    return jax.jit(step), traces


@pytest.mark.parametrize("value", [0.05, np.float32(0.05), np.float64(0.05), jnp.asarray(0.05), jnp.asarray(0.05, jnp.float32), 1])
def test_editing_hyperparams_never_recompiles(value):
    tx = ol.inject_hyperparams(ol.adam)(lr=0.1, betas=(0.9, 0.999))
    p = {"w": jnp.ones(3)}
    g = {"w": jnp.ones(3)}
    state = tx.init(p)
    step, traces = counting_step(tx)
    p, state = step(g, state, p)
    state.hyperparams["lr"] = value
    state.hyperparams["betas"] = (0.8, value * 0 + 0.99)
    state.hyperparams.update(eps=1e-6)
    p, state = step(g, state, p)
    p, state = step(g, state, p)
    assert len(traces) == 1
    assert state.hyperparams["lr"].dtype == jnp.float32 and not state.hyperparams["lr"].weak_type
    np.testing.assert_allclose(state.hyperparams["lr"], float(value))


def test_injected_values_give_the_same_numbers_as_constants():
    p = {"w": jnp.linspace(-1, 1, 5)}
    g = {"w": jnp.linspace(0.3, -0.2, 5)}
    plain, injected = ol.sgd(0.1, momentum=0.9), ol.inject_hyperparams(ol.sgd)(lr=0.1, momentum=0.9)
    s1, s2 = plain.init(p), injected.init(p)
    for _ in range(5):
        u1, s1 = plain.update(g, s1, p)
        u2, s2 = jax.jit(injected.update)(g, s2, p)
        np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


def test_schedules_are_evaluated_each_step_and_shown_in_state():
    tx = ol.inject_hyperparams(ol.sgd)(lr=lambda count: 0.1 * 0.5 ** count)
    p = {"w": jnp.zeros(1)}
    state = tx.init(p)
    lrs = []
    for _ in range(3):
        u, state = jax.jit(tx.update)({"w": jnp.ones(1)}, state, p)
        lrs.append(float(-u["w"][0]))
        assert float(state.hyperparams["lr"]) == pytest.approx(lrs[-1])
    np.testing.assert_allclose(lrs, [0.1, 0.05, 0.025], rtol=1e-6)


def test_inject_validates_up_front_with_torch_messages():
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        ol.inject_hyperparams(ol.sgd)(lr=-1)


def test_static_args_and_bools_stay_static():
    tx = ol.inject_hyperparams(ol.sgd, static_args=("momentum",))(lr=0.1, momentum=0.9, nesterov=True)
    state = tx.init({"w": jnp.ones(2)})
    assert set(state.hyperparams) == {"lr", "dampening", "weight_decay"}


def test_as_hyperparam_is_never_weak():
    for value in (0.1, np.float32(0.1), np.float64(0.1), jnp.asarray(0.1)):
        h = as_hyperparam(value)
        assert not h.weak_type and h.dtype == jnp.float32


def test_split_arguments_is_shared_by_inject_and_the_adapter():
    """One decision per argument (core.hyperparams.split_arguments): inject_hyperparams traces 0-d
    arrays and tracers, the adapter one-element arrays and torch-like tensors; flags are bools."""
    from optax_like import optim
    from optax_like.core import hyperparams

    schedule = lambda count: 0.1  # noqa: E731
    arguments = dict(lr=schedule, betas=(0.9, jnp.asarray(0.99)), eps=jnp.asarray([1e-8]),
                     weight_decay=0, amsgrad=np.int64(1), foreach=None, maximize=False,
                     capturable=False, differentiable=False, fused=None, decoupled_weight_decay=False)
    numbers, others, schedules = hyperparams.split_arguments(ol.adam, arguments, static=("weight_decay",))
    assert list(numbers) == ["betas"] and schedules == {"lr": schedule}
    assert others["amsgrad"] is True and others["weight_decay"] == 0 and others["eps"] is arguments["eps"]
    numbers, _, _ = hyperparams.split_arguments(ol.adam, arguments, arrays="one")
    assert list(numbers) == ["betas", "eps", "weight_decay"]
    assert optim.Adam([jnp.ones(2)], lr=jnp.asarray([0.01]))._hyper_names == ("lr", "betas", "eps", "weight_decay")


# ------------------------------------------------- arguments without a default (issue 28.3)
@pytest.mark.parametrize("factory, value, name", [
    (ol.clip_by_global_norm, 0.1, "max_norm"),
    (ol.scale, 0.5, "step_size"),
    (ol.trace, 0.9, "momentum"),
])
def test_a_number_for_an_argument_without_default_is_injected(factory, value, name):
    tx = ol.inject_hyperparams(factory)(value)
    state = tx.init({"w": jnp.ones(3)})
    assert set(state.hyperparams) >= {name}
    assert state.hyperparams[name].dtype == jnp.float32
    np.testing.assert_allclose(state.hyperparams[name], value)


def test_an_injected_argument_without_default_can_be_edited():
    tx = ol.inject_hyperparams(ol.clip_by_global_norm)(0.1)
    p = jnp.zeros((3, 5, 7))
    state = tx.init(p)
    update = jax.jit(tx.update)
    for max_norm in (0, 1, 2.5):  # an int written into the float slot is not truncated
        state.hyperparams["max_norm"] = max_norm
        u, state = update(jnp.ones_like(p), state)
        np.testing.assert_allclose(jnp.linalg.norm(u.ravel()), max_norm, rtol=1e-5)
    tx = ol.inject_hyperparams(ol.scale)(2.0)
    state = tx.init(jnp.ones(2))
    state.hyperparams["step_size"] = -3.0
    u, _ = tx.update(jnp.ones(2), state)
    np.testing.assert_allclose(u, [-3.0, -3.0])


def test_arguments_without_default_that_are_not_numbers_stay_static():
    def noise(key, scale, flag):
        assert isinstance(flag, bool) and not isinstance(key, jax.core.Tracer)
        return ol.scale(scale)

    tx = ol.inject_hyperparams(noise)(jax.random.key(0), 1e-3, True)
    state = jax.jit(tx.init)(jnp.ones(2))
    assert set(state.hyperparams) == {"scale"}  # a PRNG key is not a number, a bool a flag
    jax.jit(tx.update)(jnp.ones(2), state)


@pytest.mark.parametrize("static_args", ["momentum", ["momentum"]])
def test_static_args_is_a_name_or_names(static_args):
    tx = ol.inject_hyperparams(ol.sgd, static_args=static_args)(lr=0.1, momentum=0.9)
    state = tx.init({"w": jnp.ones(2)})
    assert "momentum" not in state.hyperparams and "lr" in state.hyperparams


@pytest.mark.parametrize("static_args", ["learning_rate", ["lr", "mask"]])
def test_static_args_must_name_arguments_of_the_factory(static_args):
    with pytest.raises(ValueError, match="static_args must name arguments of sgd"):
        ol.inject_hyperparams(ol.sgd, static_args=static_args)


def test_stored_numbers_carry_torchs_float64_one_minus_and_log():
    """`1 - beta2` is computed from the Python float 0.999 in float64 and rounded once (torch's host
    math), not from its float32 rounding; an assignment recomputes it; the structure is fixed."""
    tx = ol.inject_hyperparams(ol.adam)(lr=1e-3, betas=(0.9, 0.999))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    one_minus_b2, log_b2 = state.hyperparams.precise["betas"][1]
    assert one_minus_b2 == np.float32(1.0 - 0.999) != np.float32(1.0 - np.float32(0.999))
    assert log_b2 == np.float32(np.log(0.999))
    state.hyperparams["betas"] = (0.9, 0.99)
    assert state.hyperparams.precise["betas"][1][0] == np.float32(1.0 - 0.99)
    _, new_state = jax.jit(tx.update)({"w": jnp.ones(3)}, state, params)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert new_state.hyperparams.precise["betas"][1][0] == np.float32(1.0 - 0.99)


def test_injected_adam_float32_takes_torchs_one_minus_beta2():
    """Adam's second moment after one step is (1 - beta2) g^2 with torch's float32 `1 - beta2`."""
    tx = ol.inject_hyperparams(ol.adam)(lr=1e-3, betas=(0.9, 0.999))
    params = [jnp.ones(4)]
    g = jnp.asarray([3.0, 1e-3, 7.0, 0.5], jnp.float32)
    _, state = jax.jit(tx.update)([g], tx.init(params), params)
    v = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state.inner_state)[0]
         if "exp_avg_sq" in jax.tree_util.keystr(path)]
    assert len(v) == 1
    import torch
    tp = torch.ones(4, requires_grad=True)
    topt = torch.optim.Adam([tp], lr=1e-3, betas=(0.9, 0.999), foreach=False)
    tp.grad = torch.tensor(np.asarray(g))
    topt.step()
    np.testing.assert_array_equal(np.asarray(v[0]), topt.state[tp]["exp_avg_sq"].numpy())
