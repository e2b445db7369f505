"""core/gradients.py: torch's `.grad` from JAX's gradients (complex conjugate; None off the graph)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol


def _paths(params):
    """The loss both libraries differentiate, written once over a dict of arrays (`detach`,
    integer cast and comparison are torch's ways out of the graph; `* 0` stays in it)."""

    def loss(p, detach, as_int, where, xp):
        return (xp.sum(p["used"] ** 2) + xp.sum(detach(p["detached"])) + xp.sum(as_int(p["int_cast"]))
                + xp.sum(where(p["compared"] > 0, 1.0, 0.0)) + xp.sum(p["times_zero"] * 0.0))

    return loss


NAMES = ("used", "detached", "int_cast", "compared", "times_zero", "unused")


def _torch_grads(values):
    tensors = {n: torch.tensor(v, requires_grad=True) for n, v in values.items()}
    _paths(tensors)(tensors, lambda x: x.detach(), lambda x: x.long(), torch.where, torch).backward()
    return {n: None if t.grad is None else t.grad.numpy() for n, t in tensors.items()}


def _jax_loss(p):
    return _paths(p)(p, jax.lax.stop_gradient, lambda x: x.astype(jnp.int32), jnp.where, jnp)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_none_if_unreached_gives_torch_grad_pattern(jit):
    """Leaves that torch's backward leaves at `grad is None` (unused, detached, reached only
    through an integer cast or a comparison) are None; the others (`* 0` included, a zero
    gradient in torch too) are JAX's gradient, bit for bit."""
    rng = np.random.default_rng(0)
    values = {n: rng.standard_normal(3).astype(np.float32) for n in NAMES}
    params = {n: jnp.asarray(v) for n, v in values.items()}
    fn = ol.value_and_grad(_jax_loss, none_if_unreached=True)
    value, grads = (jax.jit(fn) if jit else fn)(params)
    want_value, plain = jax.value_and_grad(_jax_loss)(params)
    theirs = _torch_grads(values)
    assert {n for n in NAMES if grads[n] is None} == {n for n in NAMES if theirs[n] is None} == {
        "detached", "int_cast", "compared", "unused"}
    np.testing.assert_array_equal(np.asarray(value), np.asarray(want_value))
    for n in ("used", "times_zero"):
        np.testing.assert_array_equal(np.asarray(grads[n]), np.asarray(plain[n]), err_msg=n)
        np.testing.assert_allclose(np.asarray(grads[n]), theirs[n], rtol=1e-6, err_msg=n)


def test_none_if_unreached_with_aux_argnums_complex_and_grad():
    """argnums tuples, has_aux, complex leaves (torch's conjugate) and `ol.grad` keep their
    meaning; only unreached leaves change (to None)."""
    z = jnp.asarray([1.0 + 2.0j, -0.5j])
    w = {"a": jnp.asarray([1.0, 2.0]), "b": jnp.asarray(3.0)}

    def loss(w, x, z):
        return jnp.sum(w["a"] * x) + jnp.sum(jnp.abs(z) ** 2), {"x": x}

    (value, aux), (gw, gz) = ol.value_and_grad(loss, argnums=(0, 2), has_aux=True, none_if_unreached=True)(
        w, jnp.asarray([0.5, 4.0]), z)
    assert gw["b"] is None and float(value) == pytest.approx(0.5 + 8.0 + 5.25)
    np.testing.assert_array_equal(np.asarray(gw["a"]), [0.5, 4.0])
    np.testing.assert_array_equal(np.asarray(gz), np.asarray(2 * z))  # torch's z.grad (JAX's: its conjugate)
    assert set(aux) == {"x"}
    grads, aux = ol.grad(loss, has_aux=True, none_if_unreached=True)(w, jnp.asarray([0.5, 4.0]), z)
    assert grads["b"] is None and grads["a"] is not None
    nothing = ol.grad(lambda p: jnp.asarray(1.0), none_if_unreached=True)(w)
    assert nothing == {"a": None, "b": None}


def test_none_if_unreached_same_program_values():
    """The tap adds no computation: the jitted gradient's compiled program computes what
    `jax.value_and_grad`'s does (same output bits, one op count)."""
    params = {"w": jnp.linspace(-1.0, 1.0, 64).reshape(8, 8), "unused": jnp.ones(4)}

    def loss(p):
        return jnp.sum(jnp.tanh(p["w"] @ p["w"]))

    ours = jax.jit(ol.value_and_grad(loss, none_if_unreached=True))
    plain = jax.jit(jax.value_and_grad(loss))
    (v1, g1), (v2, g2) = ours(params), plain(params)
    np.testing.assert_array_equal(np.asarray(v1), np.asarray(v2))
    np.testing.assert_array_equal(np.asarray(g1["w"]), np.asarray(g2["w"]))
    assert g1["unused"] is None

    def ops(fn):
        return sum(1 for line in fn.lower(params).compile().as_text().splitlines() if " = " in line)

    assert ops(ours) <= ops(plain)  # no zeros are materialised for the unused leaf


def test_zero_derivative_ops_do_not_reach_unlike_torch_and_the_documented_workaround():
    """A documented deviation (docs/adapter.md): a param read only through `floor` (an op whose
    JAX derivative is a symbolic zero) gets None here, where torch's graph holds it (`.grad`
    zeros); `+ 0 * sum(p)` makes it reached, with torch's zeros."""
    t = torch.tensor([0.5, 2.5], requires_grad=True)
    torch.floor(t).sum().backward()
    assert t.grad is not None and not t.grad.any()
    p = {"w": jnp.asarray([0.5, 2.5])}
    assert ol.grad(lambda q: jnp.sum(jnp.floor(q["w"])), none_if_unreached=True)(p)["w"] is None
    grads = ol.grad(lambda q: jnp.sum(jnp.floor(q["w"])) + 0 * jnp.sum(q["w"]), none_if_unreached=True)(p)
    np.testing.assert_array_equal(np.asarray(grads["w"]), t.grad.numpy())
