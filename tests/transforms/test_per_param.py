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


def _barriers(tx, params, state=None):
    """(pins, second use) of one `update` on `params`: the per-leaf barriers that pin the step
    scalars to a leaf (its scalars, then its state buffer) and the invars of the one barrier that
    gives every pinned copy its second use (the new schedule count first; None: no such barrier)."""
    state = tx.init(params) if state is None else state
    jaxpr = jax.make_jaxpr(tx.update)(params, state, params)
    barriers = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    second = [e for e in barriers if e.invars[0].aval.shape == () and jnp.issubdtype(e.invars[0].aval.dtype, jnp.integer)]
    assert len(second) <= 1
    pins = [e for e in barriers if e not in second]
    return pins, (second[0].invars if second else None)


def test_every_leaf_pins_its_step_scalars_and_each_copy_gets_a_second_use():
    """`per_param_update(step_scalars=...)`: each leaf's traced step scalars pass through one
    barrier with the leaf's state buffer (its own copies: CSE cannot share their broadcasts
    between same-shaped leaves, so every leaf of a shape compiles to one kernel), and all the
    copies through one barrier with the new schedule count (a scalar output: never with a
    leaf's update, which XLA:GPU would then write out before `p + u`), their second use, which
    keeps XLA from turning a division by them into a multiplication by the reciprocal.
    tests/test_tree_independence.py checks the numbers this is for."""
    f32 = {"a": jnp.ones((3, 2)), "b": jnp.ones(4), "c": jnp.ones(())}
    adam = ol.adam(1e-3)
    pins, second = _barriers(adam, f32)
    assert [tuple(e.invars[-1].aval.shape) for e in pins] == [(3, 2), (4,), ()]  # each leaf's buffer
    # an argument of the step, not the gradient: a gradient computed in the same jit would be
    # written to memory for the barrier on GPU instead of fused into the optimizer's kernels
    jaxpr = jax.make_jaxpr(adam.update)(f32, adam.init(f32), f32).jaxpr
    n_updates = len(jax.tree.leaves(f32))
    state_vars = set(map(id, jaxpr.invars[n_updates:n_updates + len(jax.tree.leaves(adam.init(f32)))]))
    assert all(id(e.invars[-1]) in state_vars for e in pins)
    per_leaf = len(pins[0].invars) - 1
    assert per_leaf >= 1 and all(len(e.invars) == per_leaf + 1 for e in pins)
    pinned = [v for e in pins for v in e.outvars[:-1]]
    assert second is not None and list(second[1:]) == pinned  # every copy, scalars only
    assert all(v.aval.shape == () for v in second)
    one_pins, one_second = _barriers(adam, {"a": jnp.ones((3, 2))})
    assert len(one_pins) == 1 and len(one_second) == 1 + per_leaf
    # Counters stored per leaf: the same, each leaf with its own scalars.
    pins, second = _barriers(adam, f32, ol.per_leaf_scalars(adam.init(f32)))
    assert len(pins) == 3 and len(second) == 1 + 3 * per_leaf
    # Host-constant scalars (SGD's lr, momentum): nothing to pin, no barrier at all.
    assert _barriers(ol.sgd(1e-2, momentum=0.9), {"a": jnp.ones((3, 2))}) == ([], None)


def test_step_scalars_of_each_dtype_get_their_second_use(x64):
    params = {"a": jnp.ones((3, 2), jnp.float32), "b": jnp.ones(4, jnp.float64), "c": jnp.ones(2, jnp.float64)}
    _, second = _barriers(ol.adam(1e-3), params)
    assert {v.aval.dtype for v in second[1:]} == {jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)}


def _distinct_kernels(tx, shapes) -> int:
    """Distinct fused computations (names renamed by order of appearance) of one jitted,
    donated step on float32 leaves of `shapes`: XLA:CPU compiles each distinct one once."""
    import re

    params = [jnp.ones(s, jnp.float32) for s in shapes]
    step = jax.jit(lambda p, s, g: (lambda u, s: (ol.apply_updates(p, u), s))(*tx.update(g, s, p)),
                   donate_argnums=(0, 1))
    text = step.lower(params, tx.init(params), params).compile().as_text()
    bodies, current = {}, None
    for line in text.splitlines():
        head = re.match(r"^%(\S+) .*\{\s*$", line)
        if head and "fused" in head.group(1):
            current = bodies.setdefault(head.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None:
            current.append(re.sub(r",? metadata=\{[^}]*\}", "", line.strip()))

    def canonical(body):
        names: dict = {}
        return "\n".join(re.sub(r"%[\w.\-]+", lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), line)
                         for line in body)

    return len({canonical(b) for b in bodies.values()})


@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "radam", "adan", "nadamw", "adamp", "mars"])
def test_a_leaf_of_a_shape_already_in_the_tree_adds_no_kernel(name):
    """Compile time follows the distinct kernels ("Uniform kernels" in transforms/_per_param.py):
    more leaves of the shapes a tree already has compile to the kernels it has (before the
    step scalars were pinned to each leaf, the first leaf of each shape had kernels of its own:
    Adam 105 distinct kernels on ResNet-50's shapes, optax 87)."""
    from optax_like import registry

    info = registry.OPTIMIZERS[name]
    one_each = [(8, 3, 3, 3), (16,)]
    several = [(8, 3, 3, 3), (16,), (8, 3, 3, 3), (8, 3, 3, 3), (16,), (16,)]
    assert _distinct_kernels(info.factory(**info.example), several) == \
        _distinct_kernels(info.factory(**info.example), one_each)
