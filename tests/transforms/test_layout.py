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
    # the ungrouped reference takes None gradients per leaf: per-leaf counters, chosen at init;
    # grouped states are per member already (no preparation needed)
    s0, s1 = ol.per_leaf_scalars(plain.init(params)), tx.init(params)
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
    shapes = [(7,)] * 12
    params = [jnp.full(s, float(i)) for i, s in enumerate(shapes)]
    grads = [jnp.full(s, 0.1 * (i % 3 - 1)) for i, s in enumerate(shapes)]
    layout = ol.GroupedLayout(params)
    tx, plain = ol.grouped(ol.adam(0.1)), ol.adam(0.1)
    packed, packed_g = layout.pack(params), layout.pack(grads)

    def compiled(tx, p, g):
        def f(p, s, g):
            u, s = tx.update(g, s, p)
            return ol.apply_updates(p, u), s
        return jax.jit(f, donate_argnums=(0, 1)).lower(p, tx.init(p), g).compile()

    def kernels(c):
        hlo = c.as_text()
        return hlo[hlo.index("ENTRY"):].count(" fusion(")

    step1, step0 = compiled(tx, packed, packed_g), compiled(plain, params, grads)
    assert kernels(step1) * 4 < kernels(step0)  # one stack, not 12 leaves x several kernels
    s1, p0, s0 = tx.init(packed), params, plain.init(params)
    for _ in range(3):
        packed, s1 = step1(packed, s1, packed_g)
        p0, s0 = step0(p0, s0, grads)
    for x, y in zip(layout.unpack(packed), p0):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)


def test_unpack_transposes_to_one_concatenate():
    # the gradient of a loss of unpack(packed) comes out packed, without per-member pads
    layout = ol.GroupedLayout([jnp.ones(3)] * 4)
    packed = layout.pack([jnp.ones(3) * i for i in range(4)])
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda q: sum(jnp.sum(p ** 2) for p in layout.unpack(q))))(packed))
    assert "concatenate" in jaxpr and " pad" not in jaxpr
    g = jax.grad(lambda q: sum(jnp.sum(p ** 2) for p in layout.unpack(q)))(packed)
    np.testing.assert_allclose(np.asarray(g["float32[3]"]), 2 * np.asarray(packed["float32[3]"]))


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


SHARDING_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import optax_like as ol
mesh = jax.make_mesh((2,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
rows, cols = NamedSharding(mesh, P("x", None)), NamedSharding(mesh, P(None, "x"))
params = {
    "a": jax.device_put(jnp.ones((4, 6)), rows),
    "b": jax.device_put(jnp.ones((4, 6)) * 2, rows),
    "c": jax.device_put(jnp.ones((4, 6)) * 3, cols),
}
layout = ol.GroupedLayout(params)
assert layout.groups == {"float32[4,6]#0": (0, 1), "float32[4,6]#1": (2,)}, layout.groups
tx = ol.grouped(ol.adam(0.1))
step = jax.jit(lambda p, s, g: (lambda u, s: (ol.apply_updates(p, u), s))(*tx.update(g, s, p)))
packed = jax.jit(layout.pack)(params)
state = tx.init(packed)
new, state = step(packed, state, packed)
spec = new["float32[4,6]#0"].sharding.spec
assert tuple(spec)[:2] == (None, "x"), spec
assert tuple(state.inner["float32[4,6]#1"][0].exp_avg.sharding.spec)[:3] == (None, None, "x")
print("OK")
"""


def test_grouping_respects_sharding_in_a_two_device_process():
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], env=env, cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


def test_packed_stack_without_gradient_keeps_its_state_and_advances_schedules():
    params = {"w": jnp.ones((2, 3)), "v": jnp.ones((2, 5))}  # already packed: two stacks of 2
    plain_params = [jnp.ones(3), jnp.ones(3), jnp.ones(5), jnp.ones(5)]
    sched = lambda c: 0.1 / (1.0 + c)  # noqa: E731
    tx, plain = ol.grouped(ol.sgd(sched, momentum=0.9)), ol.sgd(sched, momentum=0.9)
    s1, s0 = tx.init(params), ol.per_leaf_scalars(plain.init(plain_params))
    p1, p0 = params, plain_params
    for t in range(3):
        g1 = {"w": jnp.full((2, 3), 0.5), "v": None if t == 1 else jnp.full((2, 5), 0.5)}
        g0 = [jnp.full(3, 0.5)] * 2 + ([None, None] if t == 1 else [jnp.full(5, 0.5)] * 2)
        u1, s1 = tx.update(g1, s1, p1)
        u0, s0 = plain.update(g0, s0, p0)
        assert (u1["v"] is None) == (t == 1)
        p1, p0 = ol.apply_updates(p1, u1), ol.apply_updates(p0, u0)
    np.testing.assert_allclose(np.asarray(p1["v"][1]), np.asarray(p0[3]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(p1["w"][0]), np.asarray(p0[0]), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(s1.inner["v"][0].count), [[2], [2]])
