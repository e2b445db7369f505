import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol


def test_buffer_starts_at_the_first_gradient_undamped():
    tx = ol.trace(0.9, dampening=0.5)
    state = tx.init({"w": jnp.zeros(2)})
    u, state = tx.update({"w": jnp.asarray([1.0, 2.0])}, state)
    np.testing.assert_array_equal(u["w"], [1.0, 2.0])  # optax.trace would give the same only without dampening
    u, state = tx.update({"w": jnp.asarray([1.0, 1.0])}, state)
    np.testing.assert_allclose(u["w"], [0.9 * 1 + 0.5 * 1, 0.9 * 2 + 0.5 * 1])


def test_nesterov():
    tx = ol.trace(0.9, nesterov=True)
    state = tx.init({"w": jnp.zeros(1)})
    u, state = tx.update({"w": jnp.ones(1)}, state)
    np.testing.assert_allclose(u["w"], [1 + 0.9 * 1])


@pytest.mark.parametrize("config", [dict(), dict(nesterov=True), dict(dampening=0.5)])
def test_first_step_is_the_gradient_bit_for_bit_signed_zeros_included(config):
    # The buffer starts at -0.0 (the additive identity), so the select-free first step is
    # exactly torch's `buf = clone(grad)`, -0.0 and inf included (subnormals: XLA:CPU flushes
    # them to zero in any arithmetic, this step's as every later one's).
    import torch

    g = np.asarray([-0.0, 0.0, np.inf, -np.inf, -3.5, 1e-30], np.float32)
    tx = ol.trace(0.9, **config)
    state = tx.init({"w": jnp.zeros(6)})
    assert np.signbit(state.momentum_buffer["w"]).all()
    u, state = jax.jit(tx.update)({"w": jnp.asarray(g)}, state)
    p = torch.zeros(6, requires_grad=True)
    p.grad = torch.from_numpy(g.copy())
    opt = torch.optim.SGD([p], lr=1.0, momentum=0.9, **config)
    opt.step()
    buf = opt.state[p]["momentum_buffer"].numpy()
    np.testing.assert_array_equal(np.asarray(state.momentum_buffer["w"]), buf)
    np.testing.assert_array_equal(np.signbit(state.momentum_buffer["w"]), np.signbit(buf))
    expected = g + np.float32(0.9) * buf if config.get("nesterov") else buf
    np.testing.assert_array_equal(np.signbit(u["w"]), np.signbit(expected))


def test_compiled_step_has_no_first_step_select_for_constant_momentum():
    # optax's sgd(momentum) per leaf: a multiply and an add, no select on the buffer. A
    # scheduled (traced) momentum keeps the select: mu * -0.0 is nan for an infinite mu.
    def buffer_selects(tx):
        params = [jnp.zeros(8), jnp.zeros(3)]
        text = jax.jit(tx.update).lower(params, tx.init(params)).as_text()
        return len(re.findall(r"stablehlo\.select .*tensor<\d+xf32>", text))

    assert buffer_selects(ol.trace(0.9)) == 0
    assert buffer_selects(ol.trace(0.9, nesterov=True)) == 0
    assert buffer_selects(ol.trace(lambda count: jnp.where(count < 10, 0.9, 0.8))) == 2
    assert buffer_selects(ol.trace(0.9, dampening=0.1)) == 2
