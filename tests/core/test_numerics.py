import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from optax_like.core import numerics


@pytest.mark.parametrize("beta", [0.9, 0.999, 0.9999])
@pytest.mark.parametrize("t", [1, 2, 10, 1000, 100000])
def test_bias_correction_is_accurate_in_float32(beta, t):
    exact = 1.0 - np.float64(beta) ** t  # what torch computes on the host
    host = numerics.bias_correction(beta, jnp.asarray(t), jnp.float32)
    assert abs(float(host) - exact) <= 4 * np.spacing(np.float32(exact))
    # traced beta: float32-rounded beta, still accurate relative to that value
    traced = jax.jit(lambda b, c: numerics.bias_correction(b, c, jnp.float32))(jnp.float32(beta), jnp.asarray(t))
    exact32 = 1.0 - np.float64(np.float32(beta)) ** t
    assert abs(float(traced) - exact32) <= 4 * np.spacing(np.float32(exact32))


def test_naive_bias_correction_would_fail_the_same_bound():
    # The reason the helper exists: float32 `1 - beta**t` loses ~4 digits at t=1, beta=0.999.
    naive = np.float32(1) - np.float32(0.999) ** 1
    exact = 1.0 - 0.999
    assert abs(naive - exact) > 100 * np.spacing(np.float32(exact))


def test_bias_correction_of_zero_beta_is_one():
    assert float(numerics.bias_correction(0.0, jnp.asarray(3), jnp.float32)) == 1.0
    assert float(jax.jit(lambda b: numerics.bias_correction(b, 3, jnp.float32))(jnp.float32(0))) == 1.0


def test_one_minus_and_scalar_round_once_from_float64():
    assert numerics.one_minus(0.999, jnp.float32) == np.float32(1.0 - 0.999)
    assert numerics.scalar(0.1, jnp.float32) == np.float32(0.1)


@pytest.mark.parametrize("weight", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("host", [False, True], ids=["traced-weight", "host-weight"])
def test_lerp_matches_torch_bitwise(weight, host):
    # host: the form the moments use, a constant of the operands' dtype (`numerics.one_minus`),
    # traced on jax.lax directly; both of torch's branches either way
    rng = np.random.default_rng(0)
    a = rng.standard_normal(1000).astype(np.float32)
    b = rng.standard_normal(1000).astype(np.float32)
    expected = torch.tensor(a).lerp_(torch.tensor(b), weight).numpy()
    w = np.asarray(weight, np.float32)
    got = jax.jit(lambda x, y: numerics.lerp(x, y, w))(a, b) if host else jax.jit(numerics.lerp)(a, b, w)
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_cast_skips_only_the_no_op_conversion():
    x = jnp.ones(3, jnp.float32)
    assert numerics.cast(x, jnp.float32) is x
    assert numerics.cast(x, jnp.bfloat16).dtype == jnp.bfloat16
    weak = jnp.asarray(1.0)  # a weakly typed float32: made a strong float32, as astype does
    assert weak.weak_type and not numerics.cast(weak, jnp.float32).weak_type
    assert numerics.cast(np.float64(2.0), jnp.float32).dtype == jnp.float32

    def traced(y):
        assert numerics.cast(y, y.dtype) is y
        return numerics.cast(y, jnp.bfloat16)

    assert str(jax.make_jaxpr(traced)(x)) == str(jax.make_jaxpr(lambda y: y.astype(jnp.bfloat16))(x))


def test_compute_dtype_is_torch_opmath():
    assert numerics.compute_dtype(jnp.bfloat16) == jnp.float32
    assert numerics.compute_dtype(jnp.float16) == jnp.float32
    assert numerics.compute_dtype(jnp.float32) == jnp.float32
    assert numerics.compute_dtype(jnp.complex64) == jnp.complex64


def test_real_view_round_trip():
    z = jnp.asarray([1 + 2j, 3 - 4j], jnp.complex64)
    r = numerics.real_view(z)
    assert r.shape == (2, 2) and r.dtype == jnp.float32
    np.testing.assert_array_equal(numerics.complex_view(r, z), z)
    x = jnp.ones(3)
    assert numerics.real_view(x) is x



def test_per_layer_values_are_each_layers_host_math():
    """`PerLayer` inside vmap over the layers: each layer gets the host-scalar result of its own
    value (float64 math, rounded once), for every helper that does host math."""
    values = [0.9, 0.999, 0.0, 1e-3]
    counts = jnp.asarray(7, jnp.int32)

    def helpers(x, t):
        return (numerics.scalar(x, jnp.float32), numerics.one_minus(x, jnp.float32),
                numerics.host_or_traced(lambda a, b: 1 - a * b, x, 0.05, dtype=jnp.float32),
                numerics.bias_correction(x, t, jnp.float32), numerics.power(x, t, jnp.float32))

    got = jax.jit(jax.vmap(lambda i: helpers(numerics.PerLayer(values, i), counts)))(jnp.arange(len(values)))
    for i, value in enumerate(values):
        expected = jax.jit(lambda t: helpers(value, t))(counts)
        for name, a, b in zip(("scalar", "one_minus", "host_or_traced", "bias_correction", "power"), got, expected):
            assert np.asarray(a)[i].tobytes() == np.asarray(b).tobytes(), (name, value)


def test_per_layer_values_of_one_step_share_the_index():
    a, b = numerics.PerLayer([1.0, 2.0], 0), numerics.PerLayer([1.0, 2.0], 1)
    with pytest.raises(ValueError, match="share the layer index"):
        numerics.host_or_traced(lambda x, y: x * y, a, b, dtype=jnp.float32)


def test_exact_difference_reaches_the_target_where_representable():
    rng = np.random.default_rng(1)
    old = rng.standard_normal(10_000).astype(np.float32)
    new = (old * rng.uniform(0.55, 1.8, 10_000)).astype(np.float32)  # within a factor 2: always reachable
    u = np.asarray(jax.jit(numerics.exact_difference)(jnp.asarray(new), jnp.asarray(old)))
    assert np.all(old + u == new)
    cold, cnew = old[:5000] + 1j * old[5000:], new[:5000] + 1j * new[5000:]  # complex: part by part
    cu = np.asarray(jax.jit(numerics.exact_difference)(jnp.asarray(cnew), jnp.asarray(cold)))
    assert cu.dtype == np.complex64 and np.all(cold + cu == cnew)
