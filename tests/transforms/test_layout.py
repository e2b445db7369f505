"""GroupedLayout / grouped: packing, errors, and equality with the ungrouped optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol


def tree():
    return {
        "a": jnp.arange(6.0).reshape(3, 2),
        "b": [jnp.arange(6.0).reshape(3, 2) + 10, jnp.ones(4), None],
        "c": jnp.float32(2.0),
        "h": jnp.ones((3, 2), jnp.bfloat16),
    }


def grads_of(params, scale=0.1):
    return jax.tree.map(lambda p: None if p is None else p * scale + 0.01, params, is_leaf=lambda x: x is None)


def test_layout_groups_by_dtype_and_shape_in_tree_order():
    layout = ol.GroupedLayout(tree())
    assert layout.groups == {"float32[3,2]": (0, 1), "float32[4]": (2,), "float32[]": (4,), "bfloat16[3,2]": (5,)}
    assert "6 leaves in 4 stacks" in repr(layout)


def test_pack_unpack_round_trip_keeps_none_and_values():
    params = tree()
    layout = ol.GroupedLayout(params)
    packed = layout.pack(params)
    assert packed["float32[3,2]"].shape == (2, 3, 2) and packed["bfloat16[3,2]"].dtype == jnp.bfloat16
    back = layout.unpack(packed)
    assert back["b"][2] is None
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_layout_errors_name_the_problem():
    params = tree()
    layout = ol.GroupedLayout(params)
    with pytest.raises(ValueError, match="structure this GroupedLayout was built for"):
        layout.pack({"a": params["a"]})
    bad = dict(params, a=jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*float32\[3,2\]"):
        layout.pack(bad)
    with pytest.raises(ValueError, match="cannot pack a None leaf"):
        layout.pack(dict(params, a=None))
    packed = layout.pack(params)
    with pytest.raises(ValueError, match="lacks groups"):
        layout.unpack({k: v for k, v in packed.items() if k != "float32[4]"})
    with pytest.raises(ValueError, match=r"expected \(2, 3, 2\)"):
        layout.unpack(dict(packed, **{"float32[3,2]": packed["float32[3,2]"][:1]}))
    with pytest.raises(TypeError, match="dtype int32"):
        ol.GroupedLayout({"i": jnp.ones(3, jnp.int32)})


OPTIMIZERS = [
    lambda: ol.adam(0.01, weight_decay=0.1, amsgrad=True),
    lambda: ol.sgd(0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    lambda: ol.sgd(lambda c: 0.1 / (1.0 + c), momentum=0.9, nesterov=True),  # scheduled lr
]


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_drop_in_equals_ungrouped_including_none_gradients(make):
    params = tree()
    plain, layout = make(), ol.GroupedLayout(params)
    tx = ol.grouped(make(), layout)
    p0 = p1 = params
    s0, s1 = plain.init(params), tx.init(params)
    step0, step1 = jax.jit(plain.update), jax.jit(tx.update)
    for t in range(4):
        g = grads_of(p0)
        if t == 1:  # "a" has no gradient: torch skips it (state and step count untouched)
            g = dict(g, a=None)
        if t == 2:  # a whole stack without gradient
            g = dict(g, b=[g["b"][0], None, None])
        u0, s0 = step0(g, s0, p0)
        u1, s1 = step1(g, s1, p1)
        assert (u1["a"] is None) == (g["a"] is None)
        p0, p1 = ol.apply_updates(p0, u0), ol.apply_updates(p1, u1)
    for x, y in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)):
        np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=1e-6, atol=0)


def test_per_member_step_counts_follow_torch():
    params = tree()
    layout = ol.GroupedLayout(params)
    tx = ol.grouped(ol.adam(0.01), layout)
    state = tx.init(params)
    g = grads_of(params)
    state = tx.update(g, state, params)[1]
    state = tx.update(dict(g, a=None), state, params)[1]
    adam_state = state.inner["float32[3,2]"][-2]
    assert isinstance(adam_state, ol.ScaleByAdamState)
    np.testing.assert_array_equal(np.asarray(adam_state.step), [[1], [2]])  # "a" skipped once
    np.testing.assert_array_equal(np.asarray(adam_state.schedule_count), [2, 2])  # global count advances


def test_packed_mode_equals_ungrouped_and_compiles_to_few_kernels():
    shapes = [(7,)] * 50
    params = [jnp.full(s, float(i)) for i, s in enumerate(shapes)]
    grads = [jnp.full(s, 0.1 * (i % 3 - 1)) for i, s in enumerate(shapes)]
    layout = ol.GroupedLayout(params)
    tx, plain = ol.grouped(ol.adam(0.1)), ol.adam(0.1)
    packed, packed_g = layout.pack(params), layout.pack(grads)

    def step(tx):
        def f(p, s, g):
            u, s = tx.update(g, s, p)
            return ol.apply_updates(p, u), s
        return jax.jit(f, donate_argnums=(0, 1))

    s1 = tx.init(packed)
    hlo = step(tx).lower(packed, s1, packed_g).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    assert entry.count(" fusion(") < 20  # one stack, not 50 leaves x several kernels
    p0, s0 = params, plain.init(params)
    for _ in range(3):
        packed, s1 = step(tx)(packed, s1, packed_g)
        p0, s0 = step(plain)(p0, s0, grads)
    for x, y in zip(layout.unpack(packed), p0):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)


def test_global_transform_goes_outside_grouped():
    # clip_by_global_norm before grouped(...) on a packed tree sees the same global norm
    params = tree()
    params = dict(params, h=None)
    layout = ol.GroupedLayout(params)
    packed = layout.pack(params)
    g = grads_of(params, scale=10.0)
    outside = ol.chain(ol.clip_by_global_norm(1.0), ol.grouped(ol.sgd(0.1)))
    plain = ol.chain(ol.clip_by_global_norm(1.0), ol.sgd(0.1))
    u1, _ = outside.update(layout.pack(g), outside.init(packed), packed)
    u0, _ = plain.update(g, plain.init(params), params)
    for x, y in zip(jax.tree.leaves(layout.unpack(u1)), jax.tree.leaves(u0)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)
