"""Layer decay on stacked layers: per-layer lr scales as a vector along the leading axis, and
training numbers equal to the unstacked model's, bit for bit."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like import param_groups as pg, registry
from optax_like.core import numerics

L, D = 4, 6
# timm's VisionTransformer.group_matcher(coarse=False)
MATCHER = dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])
BLOCK = {"attn.qkv.weight": (3 * D, D), "attn.qkv.bias": (3 * D,), "norm1.weight": (D,), "mlp.fc1.weight": (2 * D, D)}
OUTER = {"cls_token": (1, 1, D), "patch_embed.proj.weight": (D, 3), "norm.weight": (D,), "head.weight": (5, D),
         "head.bias": (5,)}


def _unstacked(rng):
    params = {n: rng.standard_normal(OUTER[n]).astype(np.float32) for n in ("cls_token", "patch_embed.proj.weight")}
    for i in range(L):
        params.update({f"blocks.{i}.{n}": rng.standard_normal(s).astype(np.float32) for n, s in BLOCK.items()})
    params.update({n: rng.standard_normal(OUTER[n]).astype(np.float32) for n in ("norm.weight", "head.weight", "head.bias")})
    return params


def _stack(flat):
    """The stacked model's params (a nested dict, as a scanned flax model has them)."""
    out = {n: jnp.asarray(v) for n, v in flat.items() if not n.startswith("blocks.")}
    out["blocks"] = {}
    for n in BLOCK:
        node = out["blocks"]
        *parents, last = n.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = jnp.stack([jnp.asarray(flat[f"blocks.{i}.{n}"]) for i in range(L)])
    return out


CONFIGS = [dict(opt="adamw", lr=1e-2, weight_decay=0.05, layer_decay=0.75),
           dict(opt="sgd", lr=1e-1, weight_decay=1e-4, layer_decay=0.6, layer_decay_min_scale=0.3),
           dict(opt="lion", lr=1e-3, weight_decay=0.1, layer_decay=0.8),
           dict(opt="adagrad", lr=1e-1, weight_decay=1e-4, layer_decay=0.7)]  # not vectorised: slices


def test_lr_scale_vector_is_the_unstacked_models():
    flat = _unstacked(np.random.default_rng(0))
    unstacked_groups = pg.param_groups_layer_decay(list(flat.items()), layer_decay=0.75, group_matcher=MATCHER)
    stacked = _stack(flat)
    names = pg.unstacked_names(stacked, ("blocks",))
    assert sorted(n for n, _ in names) == sorted(flat)
    stacked_groups = pg.param_groups_layer_decay(names, layer_decay=0.75, group_matcher=MATCHER)
    vectors = pg.layer_vectors(stacked_groups, stacked, ("blocks",))
    scale_of = {n: g["lr_scale"] for g in unstacked_groups for n, _ in g["params"]}
    for name, vector in vectors.items():
        rest = name[len("blocks."):]
        assert vector.shape == (L,)
        assert vector.tolist() == [scale_of[f"blocks.{i}.{rest}"] for i in range(L)]  # the same floats
    assert vectors["blocks.attn.qkv.weight"].tolist() == [0.75 ** (L - i) for i in range(L)]  # stem 0, blocks 1..L, head L+1


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["opt"])
def test_stacked_training_is_the_unstacked_models_bit_for_bit(config):
    rng = np.random.default_rng(1)
    flat = _unstacked(rng)
    grads = [{n: rng.standard_normal(v.shape).astype(np.float32) for n, v in flat.items()} for _ in range(4)]
    tx_flat = pg.create_optimizer(list(flat.items()), group_matcher=MATCHER, **config)
    tx_stacked = pg.create_optimizer(_stack(flat), group_matcher=MATCHER, stacked=("blocks",), **config)
    p_flat = {n: jnp.asarray(v) for n, v in flat.items()}
    p_stacked = _stack(flat)
    s_flat, s_stacked = tx_flat.init(p_flat), tx_stacked.init(p_stacked)
    vectorised = registry.OPTIMIZERS[config["opt"]].layers_vectorised
    # vectorised: one buffer per stacked leaf holds its layers' state; else one per slice
    stacked_buffers = [x for x in jax.tree.leaves(s_stacked) if x.shape == (L, 3 * D, D)]
    assert len(stacked_buffers) == (1 if config["opt"] in ("sgd", "lion") else 2 if vectorised else 0)
    step_flat = jax.jit(lambda g, s, p: tx_flat.update(g, s, p))
    step_stacked = jax.jit(lambda g, s, p: tx_stacked.update(g, s, p))
    for g in grads:
        u, s_flat = step_flat({n: jnp.asarray(v) for n, v in g.items()}, s_flat, p_flat)
        p_flat = ol.apply_updates(p_flat, u)
        u, s_stacked = step_stacked(_stack(g), s_stacked, p_stacked)
        p_stacked = ol.apply_updates(p_stacked, u)
    back = dict(pg.unstacked_names(p_stacked, ("blocks",)))  # names only
    for name, value in p_flat.items():
        if name.startswith("blocks."):
            i, rest = name[len("blocks."):].split(".", 1)
            node = p_stacked["blocks"]
            for part in rest.split("."):
                node = node[part]
            got = node[int(i)]
        else:
            got = p_stacked[name]
        np.testing.assert_array_equal(np.asarray(got), np.asarray(value), err_msg=name)
        assert not np.array_equal(np.asarray(value), flat[name])  # it trained
    assert set(back) == set(p_flat)


@pytest.mark.parametrize("how", ["partition", "unstacked"])
def test_rules_on_stacked_layers(how):
    """Rules see the unstacked names: a rule on one layer touches that slice only (its layers
    then differ in optimizer: run slice by slice)."""
    flat = _unstacked(np.random.default_rng(2))
    rules = [pg.Rule("blocks.0.*", freeze=True), pg.Rule(ndim=(0, 1), set={"weight_decay": 0.0})]
    if how == "partition":
        tx = pg.partition(rules, ol.adamw, lr=1e-2, stacked=("blocks",))
    else:
        tx = pg.unstacked(pg.partition(rules, ol.adamw, lr=1e-2), ("blocks",))
    params = _stack(flat)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    qkv = np.asarray(updates["blocks"]["attn"]["qkv"]["weight"])
    assert not qkv[0].any() and qkv[1:].all()


def test_rules_on_stacked_layers_vectorised_bit_for_bit():
    """Rules with a per-layer scale (`blocks.{i}.*`: lr times 0.5**i) and no decay on 1-D
    params: the stacked model's step is vectorised and has the unstacked model's numbers."""
    rng = np.random.default_rng(4)
    flat = _unstacked(rng)
    rules = [pg.Rule(ndim=(0, 1), set={"weight_decay": 0.0})] + [
        pg.Rule(f"blocks.{i}.*", scale={"lr": 0.5 ** i}) for i in range(L)]
    # the first match wins: 1-D block params keep lr (no scale) in both models alike
    tx_flat = pg.partition(rules, ol.adamw, lr=1e-2, weight_decay=0.05)
    tx_stacked = pg.partition(rules, ol.adamw, lr=1e-2, weight_decay=0.05, stacked=("blocks",))
    p_flat, p_stacked = {n: jnp.asarray(v) for n, v in flat.items()}, _stack(flat)
    s_flat, s_stacked = tx_flat.init(p_flat), tx_stacked.init(p_stacked)
    assert [x.shape for x in jax.tree.leaves(s_stacked) if x.shape[:1] == (L,) and x.ndim == 3]  # vectorised
    for _ in range(3):
        g = {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in flat.items()}
        u, s_flat = jax.jit(tx_flat.update)({n: jnp.asarray(v) for n, v in g.items()}, s_flat, p_flat)
        p_flat = ol.apply_updates(p_flat, u)
        u, s_stacked = jax.jit(tx_stacked.update)(_stack(g), s_stacked, p_stacked)
        p_stacked = ol.apply_updates(p_stacked, u)
    expected = _stack({n: np.asarray(v) for n, v in p_flat.items()})
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), p_stacked, expected)


# Every registry optimizer, vectorised over layers with a per-layer lr (and weight decay where it
# has one), against the same optimizer run slice by slice with each layer's host lr: equal bits.
STACKABLE = [info for info in registry.OPTIMIZERS.values()
             if not info.closure and info.layout != "sparse" and info.layers_vectorised]


def _layer_kwargs(info, scales):
    kwargs = dict(info.example)
    base = kwargs.pop("lr", inspect.signature(info.factory).parameters["lr"].default)
    per_layer = {"lr": [base * s for s in scales]}
    if "weight_decay" in inspect.signature(info.factory).parameters:
        kwargs.pop("weight_decay", None)
        per_layer["weight_decay"] = [0.01 * (i + 1) for i in range(len(scales))]
    return kwargs, per_layer


@pytest.mark.parametrize("info", [pytest.param(info, id=info.name, marks=(pytest.mark.slow,) if info.slow else ())
                                  for info in STACKABLE])  # a record marked `slow` (registry): under `slow`
def test_every_optimizer_vectorised_over_layers_is_its_slices_bit_for_bit(info):
    scales = [0.75 ** (L - i) for i in range(L)]
    kwargs, per_layer = _layer_kwargs(info, scales)
    shapes = {"w": (L, 6, 5)} if info.layout == "matrix" else {"w": (L, 6, 5), "b": (L, 5)}
    rng = np.random.default_rng(3)
    params = {k: jnp.asarray(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()}
    grads = [{k: jnp.asarray(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()} for _ in range(4)]

    tx = pg.over_layers(lambda i: info.factory(**kwargs, **{k: numerics.PerLayer(v, i) for k, v in per_layer.items()}), L)
    p, state = params, tx.init(params)
    step = jax.jit(tx.update)
    for g in grads:
        u, state = step(g, state, p)
        p = ol.apply_updates(p, u)

    for i in range(L):
        tx_i = info.factory(**kwargs, **{k: v[i] for k, v in per_layer.items()})
        p_i = {k: v[i] for k, v in params.items()}
        s_i, step_i = tx_i.init(p_i), jax.jit(tx_i.update)
        for g in grads:
            u, s_i = step_i({k: v[i] for k, v in g.items()}, s_i, p_i)
            p_i = ol.apply_updates(p_i, u)
        for k in shapes:
            np.testing.assert_array_equal(np.asarray(p[k][i]), np.asarray(p_i[k]), err_msg=f"layer {i}, {k}")
            assert not np.array_equal(np.asarray(p_i[k]), np.asarray(params[k][i]))  # it trained
