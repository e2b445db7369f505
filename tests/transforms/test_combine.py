import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol


def params():
    return {"enc": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, "head": jnp.ones(4), "frozen": None}


def grads(p):
    return jax.tree.map(lambda x: 0.5 * jnp.ones_like(x), p)


def run(tx, p, g, steps=3):
    state = tx.init(p)
    update = jax.jit(tx.update)
    for _ in range(steps):
        u, state = update(g, state, p)
        p = ol.apply_updates(p, u)
    return p, state


def test_chain_composes_in_order():
    p = params()
    a, _ = run(ol.chain(ol.scale(2.0), ol.scale_by_learning_rate(0.1)), p, grads(p), steps=1)
    np.testing.assert_allclose(a["head"], 1 - 0.1 * 2 * 0.5)
    assert a["frozen"] is None


def test_named_chain_state_is_keyed_by_name():
    tx = ol.named_chain(("momentum", ol.trace(0.9)), ("lr", ol.scale_by_learning_rate(0.1)))
    state = tx.init(params())
    assert set(state) == {"momentum", "lr"}
    assert isinstance(state["momentum"], ol.TraceState)
    with pytest.raises(ValueError, match="unique"):
        ol.named_chain(("a", ol.identity()), ("a", ol.identity()))


def test_masked_applies_inner_only_where_mask_is_true_and_keeps_no_state_elsewhere():
    p = params()
    mask = {"enc": True, "head": False, "frozen": False}  # a prefix tree is broadcast
    tx = ol.masked(ol.sgd(0.1, momentum=0.9), mask)
    new, state = run(tx, p, grads(p))
    np.testing.assert_array_equal(new["head"], p["head"] + 3 * 0.5)  # raw gradient passed through
    assert float(new["enc"]["w"][0, 0]) < 1.0
    buffers = state.inner_state[0].momentum_buffer
    assert buffers["head"] is None and buffers["enc"]["w"].shape == (2, 3)


def test_masked_with_a_mask_function():
    p = params()
    tx = ol.masked(ol.add_decayed_weights(0.1), lambda tree: jax.tree.map(lambda x: x.ndim > 1, tree))
    u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    np.testing.assert_allclose(u["enc"]["w"], 0.1 * np.ones((2, 3)))
    np.testing.assert_array_equal(u["enc"]["b"], np.zeros(3))


def test_multi_transform_is_functional_param_groups():
    p = params()
    labels = {"enc": "slow", "head": "fast", "frozen": "fast"}
    tx = ol.multi_transform({"slow": ol.sgd(0.01), "fast": ol.adam(0.1)}, labels)
    new, state = run(tx, p, grads(p), steps=1)
    np.testing.assert_allclose(new["enc"]["b"], -0.01 * 0.5)
    np.testing.assert_allclose(new["head"], 1 - 0.1, rtol=1e-6)
    adam_state = state.inner_states["fast"][0]
    assert adam_state.exp_avg["enc"] == {"b": None, "w": None} and adam_state.exp_avg["head"].shape == (4,)
    with pytest.raises(ValueError, match="'other'"):
        ol.multi_transform({"slow": ol.sgd(0.1)}, {"enc": "slow", "head": "other", "frozen": "slow"}).init(p)


def test_multi_transform_labels_from_a_function():
    p = params()
    tx = ol.multi_transform(
        {"decay": ol.add_decayed_weights(1.0), "none": ol.identity()},
        lambda tree: jax.tree.map(lambda x: "decay" if x.ndim > 1 else "none", tree),
    )
    u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    np.testing.assert_array_equal(u["enc"]["w"], np.ones((2, 3)))
    np.testing.assert_array_equal(u["head"], np.zeros(4))


def test_whole_step_jits_with_donation_and_no_state_leaf_shares_a_buffer():
    p = params()
    for tx in (ol.adam(1e-2, amsgrad=True), ol.sgd(1e-2, momentum=0.9, weight_decay=0.1)):
        state = tx.init(p)
        leaves = [x for x in jax.tree.leaves(state) if hasattr(x, "unsafe_buffer_pointer")]
        pointers = [x.unsafe_buffer_pointer() for x in leaves if x.size]
        assert len(pointers) == len(set(pointers)), "two state leaves share a buffer"

        @jax.jit
        def step(g, s, q):
            u, s = tx.update(g, s, q)
            return ol.apply_updates(q, u), s

        step = jax.jit(step, donate_argnums=(1, 2))
        q = jax.tree.map(jnp.copy, p)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "donated buffers were not usable" would be a warning
            for _ in range(3):
                q, state = step(grads(p), state, q)
        assert float(q["head"][0]) < 1.0


# ------------------------------------------------------------- optax conventions (issue 28.3)
def test_a_callable_pytree_mask_is_a_tree_not_a_function():
    """A mask that is a callable pytree (an equinox module) is a tree of bools: `is_mask_fn`."""
    from optax_like.transforms.combine import is_mask_fn

    class Module:
        def __init__(self, w):
            self.w = w

        def __call__(self, x):
            return self.w * x

    jax.tree_util.register_pytree_node(Module, lambda m: ((m.w,), None), lambda _, c: Module(*c))
    assert is_mask_fn(lambda p: p) and not is_mask_fn(Module(True)) and not is_mask_fn({})
    module = Module(jnp.array([1.0, 2.0]))
    for flag, expected in ((False, [1.0, 2.0]), (True, [-1.0, -2.0])):
        tx = ol.masked(ol.scale(-1.0), Module(flag))
        u, _ = tx.update(module, tx.init(module))
        np.testing.assert_array_equal(u.w, expected)
    tx = ol.multi_transform({"a": ol.scale(-1.0)}, Module("a"))
    u, _ = tx.update(module, tx.init(module))
    np.testing.assert_array_equal(u.w, [-1.0, -2.0])


@pytest.mark.parametrize("make", [
    lambda: ol.sgd(0.1, momentum=0.9),
    lambda: ol.adam(0.1),
    lambda: ol.chain(ol.clip_by_global_norm(1.0), ol.adam(0.1)),
    lambda: ol.masked(ol.adam(0.1), {"enc": {"w": True, "b": False}, "head": True, "frozen": None}),
    lambda: ol.multi_transform({"a": ol.adam(0.1), "s": ol.sgd(0.1, momentum=0.9)},
                               lambda p: jax.tree.map(lambda x: "a" if x.ndim > 1 else "s", p)),
    lambda: ol.inject_hyperparams(ol.adam)(lr=0.1),
    lambda: ol.MultiSteps(ol.adam(0.1), 2).gradient_transformation(),
])
def test_optax_tree_map_params_reads_the_state(make):
    """optax.tree.map_params (e.g. to build a state's sharding specs from the params') maps the
    params-shaped buffers and leaves per-param counters (one node for all leaves) alone."""
    import optax

    tx, p = make(), params()
    state = tx.init(p)
    _, state = tx.update(grads(p), state, p)
    doubled = optax.tree.map_params(tx, lambda x: 2 * x if x.ndim else x, state)
    assert jax.tree.structure(doubled) == jax.tree.structure(state)
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(doubled)):
        np.testing.assert_array_equal(new, 2 * old if old.ndim else old)
    # Every params-shaped part matches the params' tree, nothing else is taken for one. A None
    # (a leaf without state: masked out, frozen, AMSGrad's unused buffer) is optax's MaskedNode:
    # `is_leaf` makes it a leaf for the extra trees, as optax's masked tests do.
    specs = optax.tree.map_params(tx, lambda x, spec: None if x is None else spec, state,
                                  jax.tree.map(lambda x: x.ndim, p), transform_non_params=lambda _: None,
                                  is_leaf=lambda x: x is None)
    assert set(jax.tree.leaves(specs)) <= {1, 2}
