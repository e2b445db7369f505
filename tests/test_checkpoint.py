"""optax_like.checkpoint: bit-exact round trips, typed restore, integrity checks, atomic writes."""

import hashlib
import json
import os
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

import optax_like as ol
import optax_like.optim as optim
from optax_like import checkpoint as ck
from optax_like.checkpoint import CheckpointError

IS_NONE = lambda x: x is None  # noqa: E731

OPTIMIZERS = {
    "adam": lambda: ol.adam(lr=0.01, amsgrad=True),
    "sgd_momentum": lambda: ol.sgd(lr=0.1, momentum=0.9, nesterov=True),
    "adafactor": lambda: ol.adafactor(lr=0.01),
    "nadam": lambda: ol.nadam(lr=0.01),
    "inject_adam": lambda: ol.inject_hyperparams(ol.adam)(lr=0.01, betas=(0.8, 0.99)),
}
DTYPES = ["float32", "bfloat16", "float16", "complex64", "float64"]


def bits(x):
    """An array's raw bytes as unsigned ints (so NaN == NaN and -0.0 != 0.0)."""
    a = np.asarray(x)
    if a.dtype == bool:
        return a.view(np.uint8)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64, 16: np.uint64}[a.dtype.itemsize])


def assert_bit_equal(a, b):
    assert jax.tree.structure(a, is_leaf=IS_NONE) == jax.tree.structure(b, is_leaf=IS_NONE)
    for x, y in zip(jax.tree.leaves(a, is_leaf=IS_NONE), jax.tree.leaves(b, is_leaf=IS_NONE)):
        if x is None:
            assert y is None
            continue
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        if isinstance(x, (jax.Array, np.ndarray, np.generic)):
            assert np.asarray(x).dtype == np.asarray(y).dtype and np.shape(x) == np.shape(y)
            np.testing.assert_array_equal(bits(x), bits(y))
        else:
            assert repr(x) == repr(y)


def _params(dtype):
    rng = np.random.default_rng(0)

    def draw(shape):
        x = rng.standard_normal(shape)
        if dtype == "complex64":
            x = x + 1j * rng.standard_normal(shape)
        return jnp.asarray(x, dtype=jnp.dtype(dtype))

    return {"w": draw((3, 4)), "b": draw((4,)), "frozen": None}, draw


def _random_fill(tree, seed=0):
    """`tree` with every array leaf replaced by random values of its dtype and shape (arbitrary
    bits, so the round trip is tested on more than the zeros of a fresh state)."""
    rng = np.random.default_rng(seed)

    def fill(x):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.integer):
            return jnp.asarray(rng.integers(0, 1000, x.shape), x.dtype)
        values = rng.standard_normal(x.shape) * 10.0 ** rng.integers(-3, 4, x.shape)
        if np.issubdtype(x.dtype, np.complexfloating):
            values = values + 1j * rng.standard_normal(x.shape)
        return jnp.asarray(values.astype(x.dtype))

    return jax.tree.map(fill, tree)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_functional_state_round_trip(name, dtype, tmp_path, request):
    if name == "adafactor" and dtype == "complex64":
        pytest.skip("torch's Adafactor (and ours) rejects complex params")
    if dtype == "float64":
        request.getfixturevalue("x64")
    tx = OPTIMIZERS[name]()
    params, _ = _params(dtype)
    state = _random_fill(tx.init(params))
    path = tmp_path / "state.ckpt"
    ck.save(path, state)

    for like in (jax.eval_shape(tx.init, params), tx.init(params)):
        restored = ck.load(path, like=like)
        assert_bit_equal(restored, state)
        assert type(restored) is type(state)
    if name == "inject_adam":
        assert type(restored.hyperparams) is type(state.hyperparams)
        restored.hyperparams["lr"] = 0.5  # still a HyperparamsDict: keeps the stored dtype
        assert restored.hyperparams["lr"].dtype == state.hyperparams["lr"].dtype

    # Without a template: plain containers, NamedTuples as dicts, NumPy arrays.
    plain = ck.load(path)
    inner = plain["inner_state"][1] if name == "inject_adam" else plain[0]
    ref = state.inner_state[1] if name == "inject_adam" else state[0]
    assert isinstance(plain, dict if name == "inject_adam" else tuple)
    assert set(inner) == set(ref._fields)
    for field in ref._fields:
        expected, got = jax.tree.leaves(getattr(ref, field)), jax.tree.leaves(inner[field])
        assert len(expected) == len(got) and all(isinstance(x, np.ndarray) for x in got)
        for x, y in zip(expected, got):
            assert_bit_equal(np.asarray(x), y)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_restored_state_continues_identically(name, tmp_path):
    tx = OPTIMIZERS[name]()
    params, draw = _params("float32")
    step = jax.jit(tx.update)
    state = tx.init(params)
    for _ in range(2):
        updates, state = step({"w": draw((3, 4)), "b": draw((4,)), "frozen": None}, state, params)
        params = ol.apply_updates(params, updates)
    ck.save(tmp_path / "state.ckpt", state)
    restored = ck.load(tmp_path / "state.ckpt", like=jax.eval_shape(tx.init, params))
    grads = {"w": draw((3, 4)), "b": draw((4,)), "frozen": None}
    assert_bit_equal(step(grads, restored, params), step(grads, state, params))


@pytest.mark.parametrize("name", ["adam", "nadam"])
def test_per_leaf_and_shared_counters_load_into_either_template(name, tmp_path):
    """Per-param steps are stored shared while equal and per leaf once a step skipped a param
    (core.tree.LeafScalars): a checkpoint of either form loads into the other's template."""
    tx = OPTIMIZERS[name]()
    params, draw = _params("float32")
    step = jax.jit(tx.update)
    full = lambda: {"w": draw((3, 4)), "b": draw((4,)), "frozen": None}
    shared = tx.init(params)
    for _ in range(2):
        _, shared = step(full(), shared, params)
    _, split = step({"w": draw((3, 4)), "b": None, "frozen": None}, shared, params)
    assert jax.tree.structure(split) != jax.tree.structure(shared)
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    for state, template in ((split, shared), (shared, ol.per_leaf_scalars(shared))):
        ck.save(tmp_path / "state.ckpt", state)
        for like in (template, jax.eval_shape(lambda: template)):
            restored = ck.load(tmp_path / "state.ckpt", like=like,
                               shardings=jax.tree.map(lambda _: single, template))
            assert jax.tree.structure(restored) == jax.tree.structure(state)
            grads = full()
            assert_bit_equal(step(grads, restored, params), step(grads, state, params))


def test_bit_exact_special_values_and_python_leaves(tmp_path):
    f32_nan_payload = np.array([0x7FC00123, 0xFFA00001, 0x7F800001], np.uint32).view(np.float32)
    tree = {
        "bf16_all": np.arange(2**16, dtype=np.uint16).view(ml_dtypes.bfloat16).reshape(256, 256),
        "f16_all": np.arange(2**16, dtype=np.uint16).view(np.float16),
        "f32_special": np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -3.4e38], np.float32),
        "f32_payloads": f32_nan_payload,
        "f64_payload": np.array([0x7FF0000000000DEA, 0x8000000000000000], np.uint64).view(np.float64),
        "c64": np.array([complex(np.nan, -0.0), complex(np.inf, 1.5)], np.complex64),
        "c128": np.array([1 + 2j], np.complex128),
        "i32": np.array([np.iinfo(np.int32).min, -1, np.iinfo(np.int32).max], np.int32),
        "i64": np.array([np.iinfo(np.int64).min], np.int64),
        "u8": np.arange(5, dtype=np.uint8),
        "bool": np.array([[True, False]]),
        "empty": np.zeros((0, 3), np.float32),
        "zero_d": np.array(7.5, np.float64),
        "np_scalar": np.float32(-0.0),
        "np_bf16_scalar": ml_dtypes.bfloat16(1.5),
        "jax_bf16": jnp.asarray([1.0, -0.0, jnp.inf], jnp.bfloat16),
        "jax_payload": jnp.asarray(f32_nan_payload[:1]),
        "py": [None, True, False, 0, -(2**100), 1.5, -0.0, float("inf"), float("-inf"), 1e-310, 3 + 4j, "héllo ✓", ""],
        "py_nan": struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000ABC))[0],
        "nested": ((), [], {}, (1, [2, (3.0,)])),
    }
    path = tmp_path / "bits.ckpt"
    ck.save(path, tree)
    out = ck.load(path)
    assert list(out) == list(tree)
    for key, value in tree.items():
        if isinstance(value, (np.ndarray, jax.Array, np.generic)):
            got = out[key]
            assert type(got) is (type(value) if isinstance(value, np.generic) else np.ndarray), key
            assert got.dtype == np.asarray(value).dtype and got.shape == np.shape(value), key
            np.testing.assert_array_equal(bits(got), bits(value), err_msg=key)
    assert [repr(x) for x in out["py"]] == [repr(x) for x in tree["py"]]
    assert [type(x) for x in out["py"]] == [type(x) for x in tree["py"]]
    assert struct.pack("<d", out["py_nan"]) == struct.pack("<d", tree["py_nan"])
    assert out["nested"] == ((), [], {}, (1, [2, (3.0,)]))
    assert type(out["nested"][3][1]) is list and type(out["nested"][3][1][1]) is tuple


def test_dict_key_types_and_order(tmp_path):
    tree = {3: "int", "3": "str", 1.5: "float", True: "bool", None: "none", (1, "a"): "tuple", 0: {2: [1], 1: (2,)}}
    ck.save(tmp_path / "k.ckpt", tree)
    out = ck.load(tmp_path / "k.ckpt")
    assert out == tree
    assert [(type(k), k) for k in out] == [(type(k), k) for k in tree]
    assert list(out[0]) == [2, 1]


def test_float64_loaded_without_x64_is_not_truncated(tmp_path):
    with jax.enable_x64(True):
        x = jnp.asarray([1 + 2**-40, np.pi], jnp.float64)
        ck.save(tmp_path / "f64.ckpt", {"x": x})
    out = ck.load(tmp_path / "f64.ckpt")
    assert out["x"].dtype == np.float64
    np.testing.assert_array_equal(out["x"], np.asarray([1 + 2**-40, np.pi]))
    # A float64 template cannot be honoured by jax arrays without x64: a clear error, not a cast.
    with pytest.raises(CheckpointError, match=r"leaf \['x'\].*float64 enabled"):
        ck.load(tmp_path / "f64.ckpt", like={"x": jax.ShapeDtypeStruct((2,), np.float64)})
    with jax.enable_x64(True):
        got = ck.load(tmp_path / "f64.ckpt", like={"x": jax.ShapeDtypeStruct((2,), jnp.float64)})
        assert got["x"].dtype == jnp.float64


# ------------------------------------------------------------------------------ integrity


def _small_file(tmp_path):
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": (np.int32(7), 0.5, None), "c": [jnp.ones(2, jnp.bfloat16)]}
    path = tmp_path / "small.ckpt"
    ck.save(path, tree)
    return path, path.read_bytes(), tree


def _header_span(data):
    _, _, n, _ = struct.unpack("<8sIQ32s", data[:52])
    return 52, 52 + n


def test_truncation_at_every_region_is_detected(tmp_path):
    path, data, _ = _small_file(tmp_path)
    start, end = _header_span(data)
    cut_at = [0, 3, 8, 51, 52, start + 10, end - 1, end, end + 5, len(data) - 1]
    for cut in cut_at:
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated") as e:
            ck.load(path)
        if cut >= end:
            assert "['a']" in str(e.value) or "['c'][0]" in str(e.value)
    path.write_bytes(data + b"\0")
    with pytest.raises(CheckpointError, match="1 trailing bytes"):
        ck.load(path)


def test_any_flipped_byte_is_detected(tmp_path):
    path, data, tree = _small_file(tmp_path)
    assert_bit_equal(ck.load(path), {"a": tree["a"], "b": tree["b"], "c": [np.asarray(tree["c"][0])]})
    start, end = _header_span(data)
    # Every byte of the preamble and of the data; every 3rd of the header (all behind one sha256).
    for i in [*range(start), *range(start, end, 3), *range(end, len(data))]:
        corrupted = bytearray(data)
        corrupted[i] ^= 0x10
        path.write_bytes(bytes(corrupted))
        with pytest.raises(CheckpointError):
            ck.load(path)


def test_corruption_messages_say_what_is_wrong(tmp_path):
    path, data, _ = _small_file(tmp_path)
    start, end = _header_span(data)
    header = json.loads(data[start:end])
    entry = {e["path"]: e for e in header["arrays"]}["['c'][0]"]

    def corrupt(i):
        b = bytearray(data)
        b[i] ^= 0x01
        path.write_bytes(bytes(b))

    corrupt(start + 20)
    with pytest.raises(CheckpointError, match="header fails its sha256"):
        ck.load(path)
    corrupt(end + entry["offset"] + 1)
    with pytest.raises(CheckpointError, match=r"array \['c'\]\[0\] \(bfloat16\(2,\)\) fails its sha256"):
        ck.load(path)
    corrupt(0)
    with pytest.raises(CheckpointError, match="not an optax_like checkpoint"):
        ck.load(path)
    path.write_bytes(data[:8] + struct.pack("<I", 2) + data[12:])
    with pytest.raises(CheckpointError, match="format version 2; this optax_like reads version 1"):
        ck.load(path)
    path.write_bytes(b"PK\x03\x04 a zip file, not a checkpoint" * 3)
    with pytest.raises(CheckpointError, match="not an optax_like checkpoint"):
        ck.load(path)


def test_header_with_valid_checksum_but_bad_contents_is_rejected(tmp_path):
    path, data, _ = _small_file(tmp_path)
    start, end = _header_span(data)
    header = json.loads(data[start:end])

    def rewrite(h):
        raw = json.dumps(h).encode()
        path.write_bytes(struct.pack("<8sIQ32s", data[:8], 1, len(raw), hashlib.sha256(raw).digest())
                         + raw + data[end:])

    bad_index = json.loads(json.dumps(header))
    bad_index["tree"]["items"][0][1]["i"] = 99
    rewrite(bad_index)
    with pytest.raises(CheckpointError, match="malformed header"):
        ck.load(path)
    bad_dtype = json.loads(json.dumps(header))
    bad_dtype["arrays"][0]["dtype"] = "object"
    rewrite(bad_dtype)
    with pytest.raises(CheckpointError, match="unsupported dtype 'object'"):
        ck.load(path)
    rewrite(header)  # the untouched header re-serialized still loads
    assert ck.load(path)["b"][1] == 0.5


# ------------------------------------------------------------------------------ templates


def test_wrong_template_names_the_leaf(tmp_path):
    params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
    tx = ol.adam(lr=0.01)
    path = tmp_path / "adam.ckpt"
    ck.save(path, tx.init(params))

    with pytest.raises(CheckpointError, match=r"leaf \[0\]\.exp_avg\['w'\] is float32\[3, 4\], the template expects float32\[4, 3\]"):
        ck.load(path, like=tx.init({"w": jnp.ones((4, 3)), "b": jnp.zeros(4)}))
    with pytest.raises(CheckpointError, match=r"leaf \[0\]\.exp_avg\['b'\] is float32\[4\], the template expects bfloat16\[4\]"):
        ck.load(path, like=tx.init({"w": jnp.ones((3, 4)), "b": jnp.zeros(4, jnp.bfloat16)}))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: \[0\]\.momentum_buffer\['b'\]"):
        ck.load(path, like=ol.sgd(0.1, momentum=0.9).init(params))
    with pytest.raises(CheckpointError, match=r"not in the template: \[0\]\.exp_avg\['b'\]"):
        ck.load(path, like=tx.init({"w": jnp.ones((3, 4))}))
    with pytest.raises(CheckpointError, match=r"leaf \[0\]\.max_exp_avg_sq\['b'\] holds None, the template a"):
        ck.load(path, like=ol.adam(lr=0.01, amsgrad=True).init(params))


def test_namedtuple_type_is_checked(tmp_path):
    from typing import NamedTuple

    class A(NamedTuple):
        x: jax.Array

    class B(NamedTuple):
        x: jax.Array

    ck.save(tmp_path / "a.ckpt", (A(jnp.ones(2)),))
    with pytest.raises(CheckpointError, match=r"has a A at \[0\], the template a B"):
        ck.load(tmp_path / "a.ckpt", like=(B(jnp.ones(2)),))
    out = ck.load(tmp_path / "a.ckpt", like=(A(jnp.ones(2)),))
    assert type(out[0]) is A


def test_shardings_place_the_leaves(tmp_path):
    params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
    tx = ol.sgd(0.1, momentum=0.9)
    state = tx.init(params)
    ck.save(tmp_path / "s.ckpt", state)
    device = jax.devices()[0]
    single = jax.sharding.SingleDeviceSharding(device)
    out = ck.load(tmp_path / "s.ckpt", like=state, shardings=single)
    assert all(x.sharding == single for x in jax.tree.leaves(out))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",))
    named = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    per_leaf = jax.tree.map(lambda x: named if x.ndim >= 1 else None, state)
    out = ck.load(tmp_path / "s.ckpt", like=state, shardings=per_leaf)
    assert out[0].momentum_buffer["w"].sharding == named
    # The shardings that optax_like.sharding computes for a state (None leaves included).
    adam_params = {"w": jnp.ones((3, 4)), "frozen": None}
    adam = ol.adam(lr=0.01)
    ck.save(tmp_path / "adam.ckpt", adam.init(adam_params))
    targets = ol.sharding.state_shardings(adam, adam_params, named)
    out = ck.load(tmp_path / "adam.ckpt", like=jax.eval_shape(adam.init, adam_params), shardings=targets)
    assert out[0].exp_avg["w"].sharding == named and out[0].max_exp_avg_sq == {"w": None, "frozen": None}
    plain = ck.load(tmp_path / "s.ckpt", shardings=single)
    assert isinstance(plain[0]["momentum_buffer"]["w"], jax.Array)
    with pytest.raises(CheckpointError, match="needs like="):
        ck.load(tmp_path / "s.ckpt", shardings=per_leaf)


# ------------------------------------------------------------------------------ save errors and atomicity


def test_unsupported_leaves_raise_before_writing(tmp_path):
    path = tmp_path / "x.ckpt"
    with pytest.raises(TypeError, match=r"leaf \['f'\]\[1\] is a function"):
        ck.save(path, {"f": [1, lambda x: x]})
    with pytest.raises(TypeError, match=r"leaf \['o'\] has dtype object"):
        ck.save(path, {"o": np.array([None, 1], dtype=object)})
    with pytest.raises(TypeError, match=r"has a key b'k' of type bytes"):
        ck.save(path, {b"k": 1})
    with pytest.raises(TypeError, match=r"typed PRNG key"):
        ck.save(path, {"k": jax.random.key(0)})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch, failing):
    path = tmp_path / "state.ckpt"
    ck.save(path, {"v": np.arange(3, dtype=np.float32)})
    old = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("simulated crash")

    big = {"v": np.ones(1 << 16, np.float32), "w": np.ones(1 << 16, np.float32)}
    if failing == "write":  # a crash after part of the data reached the temp file
        real_fdopen = os.fdopen
        written = []

        class Crashing:
            def __init__(self, f):
                self.f = f

            def write(self, data):
                written.append(len(data))
                if len(written) == 4:  # preamble, header, first array: then the crash
                    raise OSError("simulated crash")
                return self.f.write(data)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def __getattr__(self, name):
                return getattr(self.f, name)

        monkeypatch.setattr(os, "fdopen", lambda *a, **k: Crashing(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="simulated crash"):
        ck.save(path, big)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["state.ckpt"]  # the temp file is removed
    np.testing.assert_array_equal(ck.load(path)["v"], np.arange(3, dtype=np.float32))


def test_save_overwrites_and_keeps_permissions(tmp_path):
    path = tmp_path / "p.ckpt"
    ck.save(path, [1])
    os.chmod(path, 0o640)
    ck.save(str(path), [2])
    assert ck.load(path) == [2]
    assert os.stat(path).st_mode & 0o777 == 0o640


# ------------------------------------------------------------------------------ optax_like.optim state dicts


def _loss(params, x):
    return jnp.sum((params["w"] @ x + params["b"]) ** 2) + jnp.sum(jnp.sin(params["v"]))


def _batch(t):
    return jnp.asarray(np.random.default_rng(t).standard_normal(4), jnp.float32)


def _fresh_params():
    rng = np.random.default_rng(1)
    return {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in {"w": (3, 4), "b": (3,), "v": (2,)}.items()}


def _adam(params):
    return optim.Adam([{"params": {"w": params["w"], "b": params["b"]}},
                       {"params": {"v": params["v"]}, "lr": 0.05, "betas": (0.8, 0.9)}],
                      lr=0.01, amsgrad=True, model=params)


def test_adapter_state_dict_round_trip_continues_identically(tmp_path):
    opt = _adam(_fresh_params())
    for t in range(3):
        opt.step(_loss, _batch(t))
    ck.save(tmp_path / "params.ckpt", opt.params)
    ck.save_state_dict(tmp_path / "opt.ckpt", opt)
    saved = opt.state_dict()
    for t in range(3, 6):
        opt.step(_loss, _batch(t))

    sd = ck.load_state_dict(tmp_path / "opt.ckpt")
    assert sd["param_groups"] == saved["param_groups"]
    assert type(sd["param_groups"][1]["betas"]) is tuple and list(sd["state"]) == list(saved["state"])
    assert all(type(k) is int for k in sd["state"])
    assert_bit_equal(sd["state"], jax.tree.map(np.asarray, saved["state"]))

    resumed = _adam(jax.tree.map(jnp.asarray, ck.load(tmp_path / "params.ckpt")))
    resumed.load_state_dict(sd)
    for t in range(3, 6):
        resumed.step(_loss, _batch(t))
    assert_bit_equal(resumed.params, opt.params)
    assert_bit_equal(jax.tree.map(np.asarray, resumed.state_dict()["state"]),
                     jax.tree.map(np.asarray, opt.state_dict()["state"]))


def test_rejected_state_dict_leaves_the_optimizer_unchanged(tmp_path):
    opt = _adam(_fresh_params())
    opt.step(_loss, _batch(0))
    other = optim.Adam({"w": jnp.ones((4, 3)), "b": jnp.ones(3), "v": jnp.ones(2)}, lr=0.01)
    other.step(lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"]) + jnp.sum(p["v"]))
    ck.save_state_dict(tmp_path / "other.ckpt", other)
    before = jax.tree.map(np.asarray, opt.state_dict())
    with pytest.raises(ValueError):
        opt.load_state_dict(ck.load_state_dict(tmp_path / "other.ckpt"))
    assert_bit_equal(jax.tree.map(np.asarray, opt.state_dict()), before)

    ck.save(tmp_path / "notsd.ckpt", [1, 2])
    with pytest.raises(CheckpointError, match="does not hold an optimizer state dict"):
        ck.load_state_dict(tmp_path / "notsd.ckpt")
    with pytest.raises(TypeError, match="expects an optimizer or a state dict"):
        ck.save_state_dict(tmp_path / "bad.ckpt", [1, 2])


def test_torch_state_dict_round_trip(tmp_path):
    # torch.optim.Adam(lr=0.1, betas=(0.8, 0.9)).state_dict() after 3 steps, written out (the
    # first torch.optim constructor in a process costs seconds): torch tensors, int ids, tuples.
    gen = torch.Generator().manual_seed(0)
    tsd = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3, generator=gen),
                      "exp_avg_sq": torch.rand(2, 3, generator=gen)}},
        "param_groups": [{"lr": 0.1, "betas": (0.8, 0.9), "eps": 1e-08, "weight_decay": 0, "amsgrad": False,
                          "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                          "fused": None, "decoupled_weight_decay": False, "params": [0]}],
    }
    ck.save_state_dict(tmp_path / "torch.ckpt", tsd)
    sd = ck.load_state_dict(tmp_path / "torch.ckpt")
    assert sd["param_groups"] == tsd["param_groups"]
    for key, value in tsd["state"][0].items():
        np.testing.assert_array_equal(sd["state"][0][key], value.numpy())
    ours = optim.Adam([jnp.zeros((2, 3))], lr=0.5)
    ours.load_state_dict(sd)
    assert ours.param_groups[0]["lr"] == 0.1 and ours.param_groups[0]["betas"] == (0.8, 0.9)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        np.testing.assert_array_equal(np.asarray(ours.state[0][key]), tsd["state"][0][key].numpy())
