"""transforms._per_param: the per-parameter plumbing every `scale_by_*` shares."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like.core.leaf_scalars import LeafScalars, init_counts
from optax_like.core.tree import zeros_like
from optax_like.transforms._per_param import LeafView, hyperparams, per_param_update


class _State(NamedTuple):
    buf: Any
    step: LeafScalars
    schedule_count: jax.Array


def _init(params):
    return _State(zeros_like(params), init_counts(params), jnp.zeros((), jnp.int32))


def test_leaf_view_computes_bf16_in_float32_and_complex_as_real_pairs():
    bf16 = LeafView(jnp.ones(3, jnp.bfloat16))
    assert bf16.dtype == jnp.float32 and bf16.storage_dtype == jnp.bfloat16 and not bf16.is_opmath
    assert bf16.load(jnp.ones(3, jnp.bfloat16)).dtype == jnp.float32
    x = jnp.asarray([1.0 + 2 ** -12, 2.0, 3.0], jnp.float32)
    assert bf16.store(x).dtype == jnp.bfloat16
    np.testing.assert_array_equal(bf16.rounded(x), [1.0, 2.0, 3.0])  # bf16 drops 2**-12
    z = jnp.asarray([1 + 2j, -3j], jnp.complex64)
    view = LeafView(z)
    assert view.dtype == jnp.float32 and view.is_opmath
    real = view.load(z)
    assert real.shape == (2, 2)
    np.testing.assert_array_equal(view.store(real), z)
    np.testing.assert_array_equal(view.emit(real * 2), z * 2)
    assert view.load(None) is None and view.store(None) is None


def test_rounded_buffer_is_stored_once():
    """A buffer returned as `leaf.rounded(x)` is stored as the array `rounded` made (no second
    conversion in the traced program)."""
    view = LeafView(jnp.ones(2, jnp.bfloat16))
    loaded = view.rounded(jnp.asarray([1.5, 2.5], jnp.float32))
    stored = view.store(loaded)
    assert stored is view.store(loaded) and stored.dtype == jnp.bfloat16


def test_per_param_update_skips_none_counts_steps_and_stores_back():
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.asarray([1j, 2.0], jnp.complex64), "c": None, "d": jnp.ones(3)}
    seen = []

    def math(leaf, g, buf, t):
        seen.append((leaf.dtype, g.shape, int(t)))
        return g * 2, buf + g

    state = ol.per_leaf_scalars(_init(params))
    grads = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.asarray([1 + 1j, 1.0], jnp.complex64), "c": None, "d": None}
    updates, new = per_param_update(state, grads, math, buffers=("buf",))
    assert updates["c"] is None and updates["d"] is None
    assert updates["a"].dtype == jnp.float32  # the update stays in the compute dtype
    np.testing.assert_array_equal(updates["b"], 2 * grads["b"])
    assert new.buf["a"].dtype == jnp.bfloat16 and new.buf["b"].dtype == jnp.complex64
    np.testing.assert_array_equal(new.buf["b"], grads["b"])
    np.testing.assert_array_equal(new.buf["d"], state.buf["d"])
    assert new.step.tolist() == [1, 1, 0] and int(new.schedule_count) == 1
    assert seen == [(jnp.float32, (2,), 1), (jnp.float32, (2, 2), 1)]
    assert jax.tree.structure(new) == jax.tree.structure(state)


def test_per_param_update_inputs_reference_counts_and_check():
    params = {"a": jnp.ones(2), "b": jnp.full(3, 2.0)}
    checked = []

    def math(leaf, g, buf, p):  # counts=None: no step argument
        return g * p, buf + p

    state = _init(params)
    _, new = per_param_update(state, params, math, buffers=("buf",), inputs=(params,), reference=params,
                              counts=None, check=checked.append)
    assert len(checked) == 2
    np.testing.assert_array_equal(new.buf["b"], params["b"])
    with pytest.raises(ValueError, match="returned 0 buffers for 1"):
        per_param_update(state, params, lambda leaf, g, buf, t: (g,), buffers=("buf",))


def test_hyperparams_resolves_schedules_at_the_count():
    h = hyperparams(jnp.asarray(3), lr=lambda c: c * 0.5, b1=0.9, none=None)
    assert float(h.lr) == 1.5 and h.b1 == 0.9 and h.none is None


@pytest.mark.parametrize("name", ["adabelief", "adopt", "adam", "schedule_free_adamw"])
def test_a_schedule_returning_a_non_scalar_is_refused_naming_the_argument(name):
    from optax_like import registry

    tx = registry.OPTIMIZERS[name].factory(lr=1e-3, betas=(0.9, lambda count: jnp.full((1,), 0.999)))
    params = [jnp.ones((3,))]
    with pytest.raises(ValueError, match=r"schedule given as 'b2' returned an array of shape \(1,\)"):
        jax.jit(tx.update)(params, tx.init(params), params)


def _barriers(tx, params):
    """The optimization_barriers in the jaxpr of one `update` on `params`."""
    state = tx.init(params)
    jaxpr = jax.make_jaxpr(tx.update)(params, state, params)
    return [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "optimization_barrier"]


def _lone_scalars(barriers):
    """The step scalars the (single) barrier gives a second use, beside the schedule count."""
    assert len(barriers) <= 1
    if not barriers:
        return []
    count, *lone = barriers[0].invars
    assert count.aval.shape == () and jnp.issubdtype(count.aval.dtype, jnp.integer)
    return lone


def test_a_step_scalar_of_one_leaf_gets_a_second_use_and_shared_ones_get_none():
    """`per_param_update(step_scalars=...)`: a tree whose leaves share their step scalars
    traces no barrier (its program is what it was without one); the scalars only one leaf uses (one
    leaf; per-leaf counters; the only leaf of a dtype) get one barrier, with the new
    schedule count (a scalar output: never with a leaf's update, which XLA:GPU would then
    write out before `p + u`). tests/test_tree_independence.py checks the numbers this is for."""
    f32 = {"a": jnp.ones((3, 2)), "b": jnp.ones(4), "c": jnp.ones(())}
    adam = ol.adam(1e-3)
    assert _barriers(adam, f32) == []
    one = _lone_scalars(_barriers(adam, {"a": jnp.ones((3, 2))}))
    assert one and all(v.aval.shape == () for v in one)  # scalars only: the update is not held
    # Counters stored per leaf: every leaf's scalars are its own (3 leaves, as many per leaf).
    state = ol.per_leaf_scalars(adam.init(f32))
    jaxpr = jax.make_jaxpr(adam.update)(f32, state, f32)
    per_leaf = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    assert len(_lone_scalars(per_leaf)) == 3 * len(one)
    # Host-constant scalars (SGD's lr, momentum) are never declared.
    assert _barriers(ol.sgd(1e-2, momentum=0.9), {"a": jnp.ones((3, 2))}) == []


def test_a_step_scalar_of_the_only_leaf_of_a_dtype_gets_a_second_use(x64):
    params = {"a": jnp.ones((3, 2), jnp.float32), "b": jnp.ones(4, jnp.float64), "c": jnp.ones(2, jnp.float64)}
    lone = _lone_scalars(_barriers(ol.adam(1e-3), params))
    assert lone and {v.aval.dtype for v in lone} == {jnp.dtype(jnp.float32)}