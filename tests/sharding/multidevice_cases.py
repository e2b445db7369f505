"""Multi-device cases, run on 8 virtual CPU devices by tests/sharding/test_multidevice.py.

This file is not collected by the main suite (its name does not match test_*.py): it must run
in a process whose XLA_FLAGS set --xla_force_host_platform_device_count=8 before jax is
imported, and the rest of the suite keeps one device.
"""

from __future__ import annotations

import contextlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optax_like as ol
from optax_like import optimizers
from optax_like import sharding as osh
from optax_like.core import tree as otree

if jax.device_count() != 8:  # pragma: no cover - guarded by the launcher
    raise RuntimeError(
        "run through tests/sharding/test_multidevice.py (needs "
        "XLA_FLAGS=--xla_force_host_platform_device_count=8 before jax is imported)."
    )

# Extra configurations that allocate more state than the defaults.
VARIANTS = {
    "sgd_momentum": lambda: ol.sgd(0.1, momentum=0.9, weight_decay=0.01),
    "adam_amsgrad": lambda: ol.adam(1e-2, amsgrad=True, weight_decay=0.1),
    "rmsprop_centered": lambda: ol.rmsprop(1e-2, momentum=0.9, centered=True),
    "adagrad_init_acc": lambda: ol.adagrad(1e-2, initial_accumulator_value=0.1),
}


def optimizer_table() -> dict:
    """Every optimizer factory in optax_like.optimizers, built with its defaults, plus VARIANTS.

    Like torch's classes, every optimizer factory has a default for each argument; exported
    functions with required arguments (`asgd_averaged_params(state)`, ...) and classes (state
    NamedTuples) are helpers, not optimizers.
    """
    table = {}
    for name in optimizers.__all__:
        obj = getattr(optimizers, name)
        if inspect.isclass(obj) or not callable(obj):
            continue
        params = inspect.signature(obj).parameters.values()
        if any(p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            continue
        table[name] = obj
    table.update(VARIANTS)
    return table


TABLE = optimizer_table()

MESH_TYPES = {"auto": AxisType.Auto, "explicit": AxisType.Explicit}


def make_mesh(kind, shape=(4, 2), names=("data", "model")):
    return jax.make_mesh(shape, names, axis_types=(MESH_TYPES[kind],) * len(shape))


def mesh_context(mesh):
    """Explicit meshes need to be set for jit; Auto ones work either way (we test without)."""
    if all(t == AxisType.Explicit for t in mesh.axis_types):
        return jax.set_mesh(mesh)
    return contextlib.nullcontext()


# Params with pairwise different shapes (none equal to the per-leaf step vector's (4,)), so that
# a state leaf's shape names the param it mirrors independently of optax_like.sharding.
SPECS = {
    "w": ((8, 6), P("data", "model")),
    "b": ((6,), P("model")),
    "e": ((16, 2), P(None, "model")),
    "r": ((5,), P()),
}


def host_params(seed=0):
    rng = np.random.default_rng(seed)
    out = {k: rng.standard_normal(shape).astype(np.float32) for k, (shape, _) in SPECS.items()}
    out["frozen"] = None
    return out


def param_shardings(mesh):
    out = {k: NamedSharding(mesh, spec) for k, (_, spec) in SPECS.items()}
    out["frozen"] = None
    return out


def place(mesh, tree):
    return jax.device_put(tree, param_shardings(mesh))


def by_shape(params):
    return {np.shape(p): (k, p) for k, p in params.items() if p is not None}


def check_state_layout(state, params, *, uncommitted_scalars_ok=False):
    """Each state leaf shaped like a param has exactly its sharding; all others are replicated.

    `uncommitted_scalars_ok`: leaves that mirror no param may also sit on the default device.
    Eager init outside a mesh context creates counters with `jnp.zeros` there, uncommitted
    (JAX moves them where a step needs them; a jitted step replicates them). Under
    `jax.set_mesh`, or from a jitted init that also computes params-shaped state, they are
    replicated.
    Returns the number of leaves that mirror a param.
    """
    shapes = by_shape(params)
    mirrors = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        where = jax.tree_util.keystr(path)
        if leaf.shape in shapes:
            name, p = shapes[leaf.shape]
            assert leaf.sharding.is_equivalent_to(p.sharding, leaf.ndim), (
                f"state{where} mirrors params[{name!r}] ({p.sharding.spec}) but has {leaf.sharding}"
            )
            assert leaf.sharding.mesh == p.sharding.mesh
            mirrors += 1
        elif uncommitted_scalars_ok and leaf.sharding.device_set == {jax.devices()[0]}:
            pass
        else:
            assert leaf.sharding.is_fully_replicated, f"state{where} {leaf.shape} is not replicated: {leaf.sharding}"
            assert len(leaf.sharding.device_set) == 8, f"state{where} lives on {leaf.sharding.device_set}"
    return mirrors


def assert_shardings_match(tree, shardings):
    leaves = jax.tree.leaves(tree)
    expected = jax.tree.leaves(shardings)
    assert len(leaves) == len(expected)
    for x, s in zip(leaves, expected):
        assert x.sharding.is_equivalent_to(s, x.ndim), (x.sharding, s)


def grads_like(params, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)


def loss(params, targets):
    """Elementwise (no contraction), so every gradient leaf keeps its param's sharding."""
    return sum(jnp.sum(jnp.sin(p) * t) for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(targets)))


def make_step(tx, **jit_kwargs):
    def step(params, state, targets):
        grads = jax.grad(loss)(params, targets)
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1), **jit_kwargs)


def run_single_device(tx, params_host, targets, steps):
    dev = jax.devices()[0]
    params = jax.device_put(params_host, dev)
    state = tx.init(params)
    step = make_step(tx)
    for t in targets[:steps]:
        params, state = jax.block_until_ready(step(params, state, jax.device_put(t, dev)))
    return params, state


def assert_close(a, b, rtol=2e-6, atol=1e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# init: every optimizer, eager and jitted, Auto and Explicit
# ---------------------------------------------------------------------------------------------


def test_table_covers_every_optimizer():
    for name in ("adam", "sgd"):
        assert name in TABLE
    for name, factory in TABLE.items():
        assert isinstance(factory(), ol.GradientTransformation), name


# Known gaps in optimizers owned elsewhere: (name, mesh kind) -> why. The test asserts they still
# fail, so that a fix shows up here (remove the entry then).
KNOWN_FAILURES: dict = {}


def init_variants(tx, kind, mesh):
    """(label, init) pairs: jitted, and eager (inside set_mesh on Explicit meshes, without a
    mesh context on Auto ones: the case where JAX cannot know the mesh of scalar state)."""
    return (("jit", jax.jit(tx.init), False), ("eager", tx.init, kind == "auto"))


# Optimizers that accept only some params (like torch's Muon: 2-D only) get this subset.
PARAM_SUBSETS = {"muon": ("w", "e")}


@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_every_optimizer_init_keeps_param_shardings(kind):
    mesh = make_mesh(kind)
    all_params = place(mesh, host_params())
    stateful = 0
    with mesh_context(mesh):
        for name, factory in TABLE.items():
            tx = factory()
            params = all_params
            if name in PARAM_SUBSETS:
                params = {k: all_params[k] for k in PARAM_SUBSETS[name]}
            if (name, kind) in KNOWN_FAILURES:
                with pytest.raises(Exception):
                    jax.jit(tx.init)(params)
                continue
            shardings = osh.state_shardings(tx, params)
            # A state in which no leaf depends on a param (only counters, or lbfgs' flat
            # buffers) is computed by a jitted init on one device: jit has no sharded input
            # left to take its devices from. out_shardings=state_shardings(...) places it.
            no_mirror = not jax.tree.leaves(osh.state_param_paths(tx, params))
            variants = init_variants(tx, kind, mesh) + (
                ("jit+out_shardings", jax.jit(tx.init, out_shardings=shardings), False),
            )
            for how, init, lenient in variants:
                state = init(params)
                if how == "jit" and no_mirror:
                    lenient = True
                try:
                    n = check_state_layout(state, params, uncommitted_scalars_ok=lenient)
                    if not lenient:
                        assert_shardings_match(state, shardings)
                except AssertionError as e:
                    raise AssertionError(f"{name} ({how} init, {kind} mesh): {e}") from None
            stateful += n > 0
    assert stateful >= len(TABLE) // 2  # most optimizers have params-shaped state


def test_eager_init_under_set_mesh_replicates_scalars():
    mesh = make_mesh("auto")
    params = place(mesh, host_params())
    tx = ol.inject_hyperparams(ol.adam)(lr=1e-2, amsgrad=True)
    with jax.set_mesh(mesh):
        state = tx.init(params)
    assert check_state_layout(state, params) == 3 * 4
    assert_shardings_match(state, osh.state_shardings(tx, params))


COMBINATORS = {
    "chain_clip": lambda: ol.chain(ol.clip_by_global_norm(1.0), ol.adam(1e-2)),
    "masked": lambda: ol.masked(ol.adam(1e-2), {"w": True, "b": False, "e": True, "r": False, "frozen": None}),
    "multi_transform": lambda: ol.multi_transform(
        {"a": ol.adam(1e-2), "s": ol.sgd(0.1, momentum=0.9)},
        {"w": "a", "b": "s", "e": "a", "r": "s", "frozen": None},
    ),
    "inject": lambda: ol.inject_hyperparams(ol.adam)(lr=1e-2, betas=(0.9, 0.99)),
    "inject_schedule": lambda: ol.inject_hyperparams(ol.sgd)(lr=lambda c: 0.1 / (1.0 + c), momentum=0.9),
    "multisteps": lambda: ol.MultiSteps(ol.adam(1e-2), every_k_schedule=2),
    "apply_if_finite": lambda: ol.apply_if_finite(ol.sgd(0.1, momentum=0.9), 3),
    "named_chain": lambda: ol.named_chain(("clip", ol.clip(1.0)), ("opt", ol.rmsprop(1e-2, momentum=0.5))),
}


@pytest.mark.parametrize("kind", ["auto", "explicit"])
@pytest.mark.parametrize("name", sorted(COMBINATORS))
def test_combinators_init_keep_param_shardings(kind, name):
    mesh = make_mesh(kind)
    params = place(mesh, host_params())
    tx = COMBINATORS[name]()
    with mesh_context(mesh):
        for how, init, lenient in init_variants(tx, kind, mesh):
            state = init(params)
            assert check_state_layout(state, params, uncommitted_scalars_ok=lenient) > 0, how
            if not lenient:
                assert_shardings_match(state, osh.state_shardings(tx, params))


def test_zeros_like_and_full_like_keep_sharding_and_values():
    for kind in MESH_TYPES:
        mesh = make_mesh(kind)
        x = jax.device_put(jnp.array([[np.nan, -np.inf], [1.0, -2.0]] * 4, jnp.float32), NamedSharding(mesh, P("data", "model")))
        with mesh_context(mesh):
            for fn in (lambda t: otree.zeros_like(t), jax.jit(lambda t: otree.zeros_like(t))):
                z = fn({"x": x})["x"]
                assert z.sharding.is_equivalent_to(x.sharding, 2)
                # exact +0.0 even where the param is nan/inf (no 0 * x)
                assert np.all(np.asarray(z) == 0) and not np.any(np.signbit(np.asarray(z)))
            f = jax.jit(lambda t, v: otree.full_like(t, v, dtype=jnp.bfloat16))
            y = f(x, jnp.float32(-0.25))
            assert y.dtype == jnp.bfloat16 and y.sharding.is_equivalent_to(x.sharding, 2)
            assert np.all(np.asarray(y, np.float32) == -0.25)
            y = jax.jit(lambda t: otree.full_like(t, -0.0))(x)
            assert np.all(np.signbit(np.asarray(y))) and y.sharding.is_equivalent_to(x.sharding, 2)


# ---------------------------------------------------------------------------------------------
# Jitted, donated steps: shardings kept, numbers equal to one device
# ---------------------------------------------------------------------------------------------

STEP_CASES = {
    "adam_amsgrad": VARIANTS["adam_amsgrad"],
    "sgd_momentum": VARIANTS["sgd_momentum"],
    "rmsprop_centered": VARIANTS["rmsprop_centered"],
    "masked": COMBINATORS["masked"],
    "multi_transform": COMBINATORS["multi_transform"],
    "inject": COMBINATORS["inject"],
    "multisteps": COMBINATORS["multisteps"],
    "chain_clip": COMBINATORS["chain_clip"],
}
STEPS = 3
# (case, mesh kind): the combinators on both meshes, the rest on one each (compile time).
STEP_RUNS = [
    ("adam_amsgrad", "auto"), ("adam_amsgrad", "explicit"),
    ("multi_transform", "auto"), ("multi_transform", "explicit"),
    ("multisteps", "auto"), ("multisteps", "explicit"),
    ("masked", "explicit"), ("inject", "auto"), ("sgd_momentum", "explicit"),
    ("rmsprop_centered", "auto"), ("chain_clip", "explicit"),
]


@pytest.mark.parametrize("name,kind", STEP_RUNS)
def test_donated_step_keeps_shardings_and_matches_one_device(name, kind):
    tx = STEP_CASES[name]()
    host = host_params()
    targets = [grads_like(host, seed) for seed in range(STEPS)]
    ref_params, ref_state = run_single_device(tx, host, targets, STEPS)

    mesh = make_mesh(kind)
    with mesh_context(mesh):
        params = place(mesh, host)
        p_shard = param_shardings(mesh)
        s_shard = osh.state_shardings(tx, params)
        state = jax.jit(tx.init)(params)
        step = make_step(tx)
        for t in targets:
            old = params["w"]
            params, state = jax.block_until_ready(step(params, state, place(mesh, t)))
            assert old.is_deleted()  # donated
            assert_shardings_match(params, p_shard)
            assert_shardings_match(state, s_shard)
    assert_close(params, ref_params)
    assert_close(state, ref_state)


@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_steps_without_some_gradients_keep_shardings(kind):
    """Steps that leave a gradient None need per-param scalars, chosen at init
    (`per_leaf_scalars`, of the state and of its shardings): the state keeps its shardings and
    its structure; `constrain` takes either form of the shardings."""
    tx = ol.adam(1e-2)
    host = host_params()
    targets = [grads_like(host, seed) for seed in range(3)]
    mesh = make_mesh(kind)
    with mesh_context(mesh):
        params = place(mesh, host)
        s_shard = osh.state_shardings(tx, params)

        def step(params, state, targets):
            grads = dict(jax.grad(loss)(params, targets), b=None)
            updates, state = tx.update(grads, state, params)
            return ol.apply_updates(params, updates), osh.constrain(state, s_shard)

        state = ol.per_leaf_scalars(jax.jit(tx.init)(params))
        params, state = jax.jit(step, donate_argnums=(0, 1))(params, state, place(mesh, targets[0]))
        assert not state[0].step.is_shared
        assert_shardings_match(state, ol.per_leaf_scalars(s_shard))
        fixed = jax.jit(step, donate_argnums=(0, 1), out_shardings=(param_shardings(mesh), ol.per_leaf_scalars(s_shard)))
        for t in targets[1:]:
            params, state = fixed(params, state, place(mesh, t))
        assert_shardings_match(state, ol.per_leaf_scalars(s_shard))
        steps = np.asarray(state[0].step).tolist()
    optimized = sorted(k for k, v in host.items() if v is not None)  # the params' flattening order
    assert steps == [0 if k == "b" else 3 for k in optimized]


@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_inject_hyperparams_edit_between_sharded_steps(kind):
    tx = ol.inject_hyperparams(ol.adam)(lr=1e-2)
    mesh = make_mesh(kind)
    host = host_params()
    with mesh_context(mesh):
        params = place(mesh, host)
        state = tx.init(params)
        step = make_step(tx)
        for seed in range(2):  # the 2nd call sees the 1st's (committed) outputs
            params, state = step(params, state, place(mesh, grads_like(host, seed)))
        compiled = step._cache_size()
        state.hyperparams["lr"] = 0.5  # a host float: placed like the old value, no recompile
        params, state = step(params, state, place(mesh, grads_like(host, 2)))
        assert step._cache_size() == compiled
        assert_shardings_match(state, osh.state_shardings(tx, params))
        assert float(state.hyperparams["lr"]) == 0.5


# ---------------------------------------------------------------------------------------------
# ZeRO-1
# ---------------------------------------------------------------------------------------------


def test_zero1_spec_rule():
    mesh = make_mesh("auto")  # data: 4, model: 2
    assert osh.zero1_spec((8, 6), P(), mesh) == P("data", None)
    assert osh.zero1_spec((6, 8), P(), mesh) == P(None, "data")  # first dim not divisible by 4
    assert osh.zero1_spec((16, 2), P(None, "model"), mesh) == P("data", "model")
    assert osh.zero1_spec((8, 6), P("data", "model"), mesh) == P("data", "model")  # already split
    assert osh.zero1_spec((5, 3), P(), mesh) == P(None, None)  # nothing divides: replicated
    assert osh.zero1_spec((8,), P("model"), mesh) == P(("model", "data"))  # 8 % (2 * 4) == 0
    assert osh.zero1_spec((), P(), mesh) == P()
    assert osh.zero1_spec((16, 3), P(), mesh, axis=("data", "model")) == P(("data", "model"), None)
    with pytest.raises(ValueError, match="mesh has no axis 'batch'"):
        osh.zero1_spec((8,), P(), mesh, axis="batch")


@pytest.mark.parametrize(
    "name,kind", [("adam_amsgrad", "auto"), ("adam_amsgrad", "explicit"), ("multi_transform", "explicit"), ("multisteps", "auto")]
)
def test_zero1_state_sharded_params_replicated(name, kind):
    tx = STEP_CASES[name]()
    host = host_params()
    targets = [grads_like(host, seed) for seed in range(STEPS)]
    ref_params, ref_state = run_single_device(tx, host, targets, STEPS)

    mesh = make_mesh(kind, (8,), ("data",))
    replicated = NamedSharding(mesh, P())
    with mesh_context(mesh):
        params = jax.device_put(host, replicated)
        p_shard = jax.tree.map(lambda _: replicated, params)
        z_shard = osh.zero1_shardings(tx, params, mesh, axis="data")
        state = jax.jit(tx.init, out_shardings=z_shard)(params)
        assert_shardings_match(state, z_shard)
        # every params-shaped leaf whose size allows it is split 8 ways; scalars replicated
        for leaf in jax.tree.leaves(state):
            shard = leaf.addressable_shards[0].data
            if leaf.ndim and any(n % 8 == 0 for n in leaf.shape):
                assert shard.size * 8 == leaf.size, (leaf.shape, leaf.sharding)
            else:
                assert leaf.sharding.is_fully_replicated
        zero1_bytes = osh.bytes_per_device(state)
        full_bytes = osh.bytes_per_device(jax.jit(tx.init)(params))
        assert set(zero1_bytes) == set(jax.devices())
        assert max(zero1_bytes.values()) < 0.6 * min(full_bytes.values())

        step = make_step(tx, in_shardings=(p_shard, z_shard, p_shard), out_shardings=(p_shard, z_shard))
        for t in targets:
            params, state = jax.block_until_ready(step(params, state, jax.device_put(t, replicated)))
        assert_shardings_match(params, p_shard)
        assert_shardings_match(state, z_shard)
    assert_close(params, ref_params)
    assert_close(state, ref_state)


def test_zero1_on_top_of_model_parallel_params():
    mesh = make_mesh("auto")
    tx = ol.adam(1e-2)
    params = place(mesh, host_params())
    z = osh.zero1_shardings(tx, params, mesh, axis="data")  # default: the params' own shardings
    exp_avg = z[0].exp_avg
    assert exp_avg["w"].spec == P("data", "model")
    assert exp_avg["b"].spec == P("model")  # 6 % (2 * 4) != 0: only the param's own split
    assert exp_avg["e"].spec == P("data", "model")
    assert exp_avg["r"].spec == P(None)  # (5,): nothing divides
    assert exp_avg["frozen"] is None
    assert len(z[0].step) == 4 and all(s.spec == P() for s in z[0].step)  # one 0-d count per param


# ---------------------------------------------------------------------------------------------
# state_shardings API and its errors
# ---------------------------------------------------------------------------------------------


def test_state_param_paths_and_spec_inputs():
    mesh = make_mesh("auto")
    tx = COMBINATORS["multi_transform"]()
    host = host_params()
    paths = osh.state_param_paths(tx, host)
    adam_state = paths.inner_states["a"][0]
    assert adam_state.exp_avg == {"w": "['w']", "b": None, "e": "['e']", "r": None, "frozen": None}
    assert len(adam_state.step) > 0 and all(s is None for s in adam_state.step)  # per-param counts
    specs = {k: spec for k, (_, spec) in SPECS.items()}
    specs["frozen"] = None
    from_specs = osh.state_shardings(tx, host, specs, mesh=mesh)  # host arrays + PartitionSpecs
    from_arrays = osh.state_shardings(tx, place(mesh, host))
    assert jax.tree.leaves(from_specs) == jax.tree.leaves(from_arrays)
    one = osh.state_shardings(tx, host, NamedSharding(mesh, P()))
    assert all(s.spec == P() for s in jax.tree.leaves(one))


def test_state_shardings_errors():
    mesh = make_mesh("auto")
    tx = ol.adam()
    host = host_params()
    with pytest.raises(ValueError, match="has no sharding"):
        osh.state_shardings(tx, {"w": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="need mesh="):
        osh.state_shardings(tx, host, P())
    with pytest.raises(ValueError, match="param_shardings must be"):
        osh.state_shardings(tx, host, {"w": NamedSharding(mesh, P())})
    with pytest.raises(TypeError, match="expected a GradientTransformation"):
        osh.state_shardings(object(), host, NamedSharding(mesh, P()))
    other = make_mesh("auto", (2, 4), ("data", "model"))
    with pytest.raises(ValueError, match="different mesh"):
        osh.zero1_shardings(tx, place(mesh, host), other)


@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_constrain_inside_jit(kind):
    mesh = make_mesh(kind)
    x = jax.device_put(jnp.ones((8, 6)), NamedSharding(mesh, P()))
    target = {"a": NamedSharding(mesh, P("data", "model"))}
    with mesh_context(mesh):
        y = jax.jit(lambda t: osh.constrain(jax.tree.map(lambda v: v * 2, t), target))({"a": x})
    assert y["a"].sharding.is_equivalent_to(target["a"], 2)
    np.testing.assert_array_equal(np.asarray(y["a"]), 2 * np.ones((8, 6)))


# ---------------------------------------------------------------------------------------------
# Checkpoints: restore with the right shardings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_restore_from_host_arrays_with_computed_shardings(kind):
    mesh = make_mesh(kind)
    tx = COMBINATORS["inject"]()
    host = host_params()
    with mesh_context(mesh):
        params = place(mesh, host)
        state = tx.init(params)
        params, state = make_step(tx)(params, state, place(mesh, grads_like(host, 3)))
        saved = jax.device_get(state)  # host numpy: what a checkpoint holds
        assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(saved))
        shardings = osh.zero1_shardings(tx, params, mesh)
        restored = jax.device_put(saved, shardings)
        assert_shardings_match(restored, shardings)
        assert_close(restored, state, rtol=0, atol=0)
        # the same through an abstract target, one shard read per device
        target = osh.abstract_state(tx, params, shardings)
        flat_saved = jax.tree.leaves(saved)
        rebuilt = jax.tree.unflatten(
            jax.tree.structure(target),
            [jax.make_array_from_callback(t.shape, t.sharding, lambda idx, a=a: a[idx]) for t, a in zip(jax.tree.leaves(target), flat_saved)],
        )
        assert_shardings_match(rebuilt, shardings)
        assert_close(rebuilt, state, rtol=0, atol=0)
        p_shard = param_shardings(mesh)
        step = make_step(tx, out_shardings=(p_shard, shardings))
        params, rebuilt = step(params, rebuilt, place(mesh, grads_like(host, 4)))  # usable
        assert_shardings_match(rebuilt, shardings)


def test_orbax_round_trip_restores_shardings(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    mesh = make_mesh("auto")
    tx = COMBINATORS["inject"]()
    params = place(mesh, host_params())
    state = tx.init(params)
    params, state = make_step(tx)(params, state, place(mesh, grads_like(host_params(), 5)))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "state", state)
        ckpt.wait_until_finished()
        for shardings in (osh.state_shardings(tx, params), osh.zero1_shardings(tx, params, mesh)):
            restored = ckpt.restore(tmp_path / "state", osh.abstract_state(tx, params, shardings))
            assert type(restored) is type(state)
            assert_shardings_match(restored, shardings)
            assert_close(restored, state, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# The stateful adapter (optax_like.optim)
# ---------------------------------------------------------------------------------------------


def adapter_state_shardings_ok(opt, params):
    """Every params-shaped entry of opt.state has its param's sharding; the rest replicated."""
    ids = {}
    for i, leaf in enumerate(jax.tree.leaves(params)):
        ids[i] = leaf
    checked = 0
    for pid, entries in opt.state.items():
        p = ids[pid]
        for key, value in entries.items():
            if not isinstance(value, jax.Array):
                continue
            if value.shape == p.shape and value.ndim:
                assert value.sharding.is_equivalent_to(p.sharding, p.ndim), (pid, key, value.sharding, p.sharding)
                checked += 1
            else:
                assert value.sharding.is_fully_replicated and len(value.sharding.device_set) == 8, (pid, key, value.sharding)
    return checked


@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_adapter_keeps_shardings_across_steps_and_load_state_dict(kind):
    optim = pytest.importorskip("optax_like.optim")
    mesh = make_mesh(kind)
    host = {k: v for k, v in host_params().items() if v is not None}
    shardings = {k: NamedSharding(mesh, SPECS[k][1]) for k in host}
    target = jax.device_put(grads_like(host, 7), shardings)

    def objective(params, t):
        return loss(params, t)

    with mesh_context(mesh):
        opt = optim.Adam(jax.device_put(host, shardings), lr=0.1, amsgrad=True)
        for _ in range(2):
            opt.step(objective, target)
        assert_shardings_match(opt.params, shardings)
        assert adapter_state_shardings_ok(opt, opt.params) == 3 * len(host)
        saved = jax.device_get(opt.state_dict())  # host arrays, as torch.save would hold them
        saved_params = jax.device_get(opt.params)

        fresh = optim.Adam(jax.device_put(saved_params, shardings), lr=0.1, amsgrad=True)
        fresh.load_state_dict(saved)
        fresh.step(objective, target)
        opt.step(objective, target)
        assert_shardings_match(fresh.params, shardings)
        assert adapter_state_shardings_ok(fresh, fresh.params) == 3 * len(host)
    assert_close(fresh.params, opt.params)


def test_adapter_load_state_dict_places_state_like_params():
    optim = pytest.importorskip("optax_like.optim")
    mesh = make_mesh("auto")
    host = {k: v for k, v in host_params().items() if v is not None}
    shardings = {k: NamedSharding(mesh, SPECS[k][1]) for k in host}
    opt = optim.Adam(jax.device_put(host, shardings), lr=0.1)
    opt.step(loss, jax.device_put(grads_like(host, 7), shardings))
    fresh = optim.Adam(jax.device_put(host, shardings), lr=0.1)
    fresh.load_state_dict(jax.device_get(opt.state_dict()))
    assert adapter_state_shardings_ok(fresh, fresh.params) == 2 * len(host)
