"""optax_like.checkpoint: safetensors files; bit-exact round trips, typed restore, integrity
checks, memory-safe loading of malformed files (hypothesis), atomic writes."""

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import tracemalloc

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optax_like as ol
import optax_like.optim as optim
from optax_like import checkpoint as ck
from optax_like.checkpoint import CheckpointError
from optax_like.core.leaf_scalars import LeafScalars

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
    a = np.asarray(x).reshape(-1)
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
        value = getattr(ref, field)  # per-param scalars read back as one entry per param
        expected = list(value) if isinstance(value, LeafScalars) else jax.tree.leaves(value)
        got = jax.tree.leaves(inner[field])
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
def test_shared_counters_load_into_a_per_param_template(name, tmp_path):
    """Per-param steps keep the form `init` gave them (core.leaf_scalars.LeafScalars): shared, or one per
    param after `optax_like.per_leaf_scalars`. A shared file loads into a per-param template (each
    param gets the value, exactly); a per-param file into a shared template is refused, with the fix."""
    tx = OPTIMIZERS[name]()
    params, draw = _params("float32")
    step = jax.jit(tx.update)
    full = lambda: {"w": draw((3, 4)), "b": draw((4,)), "frozen": None}
    shared = tx.init(params)
    for _ in range(2):
        _, shared = step(full(), shared, params)
    ck.save(tmp_path / "shared.ckpt", shared)
    per_param = ol.per_leaf_scalars(shared)
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    for like in (per_param, jax.eval_shape(lambda: per_param)):
        restored = ck.load(tmp_path / "shared.ckpt", like=like, shardings=jax.tree.map(lambda _: single, shared))
        assert jax.tree.structure(restored) == jax.tree.structure(per_param)
        steps = [x for x in jax.tree.leaves(restored) if x.shape == () and x.dtype == jnp.int32]
        assert len({id(x) for x in steps}) == len(steps)  # distinct buffers (donation)
        grads = {"w": draw((3, 4)), "b": None, "frozen": None}
        assert_bit_equal(step(grads, restored, params), step(grads, per_param, params))

    ck.save(tmp_path / "split.ckpt", per_param)
    assert_bit_equal(ck.load(tmp_path / "split.ckpt", like=per_param), per_param)
    with pytest.raises(CheckpointError, match=r"at \[0\]\.(step|mu_product) one per param .* like=optax_like\.per_leaf_scalars\(template\)"):
        ck.load(tmp_path / "split.ckpt", like=shared)


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
        "f8_e4m3fn": np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn),
        "f8_e5m2": np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e5m2),
        "f8_e4m3fnuz": np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fnuz),
        "c128_scalar": np.complex128(complex(-0.0, np.nan)),
        "c64_3d": (np.arange(24) * (1 - 2j)).astype(np.complex64).reshape(2, 3, 4)[:, ::-1],
        "jax_bf16": jnp.asarray([1.0, -0.0, jnp.inf], jnp.bfloat16),
        "jax_payload": jnp.asarray(f32_nan_payload[:1]),
        "py": [None, True, False, 0, -(2**100), 10**5000, -(2**63), 2**63, 1.5, -0.0, float("inf"), float("-inf"), 1e-310, 3 + 4j, "héllo ✓", ""],
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
    assert [type(x) for x in out["py"]] == [type(x) for x in tree["py"]]
    for got, value in zip(out["py"], tree["py"]):  # (repr refuses ints over 4300 digits)
        assert got == value if type(value) is int else repr(got) == repr(value)
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


# ------------------------------------------------------------------------------ safetensors


def test_files_are_safetensors_files_any_reader_opens(tmp_path):
    """Tensors named by their tree path; complex as real pairs (torch's view_as_real layout);
    tensors aligned to their item size; the reference readers agree with ours bit for bit."""
    rng = np.random.default_rng(3)
    tree = {"w": rng.standard_normal((3, 4)).astype(np.float32),
            "c": (rng.standard_normal(5) + 1j * rng.standard_normal(5)).astype(np.complex64),
            "h": rng.standard_normal(7).astype(ml_dtypes.bfloat16),
            "n": [np.int64(3), np.arange(3, dtype=np.uint8)], "a/b": np.ones(2, np.float64)}
    path = tmp_path / "t.safetensors"
    ck.save(path, tree)
    tensors = safetensors.torch.load_file(path)
    assert set(tensors) == {"w", "c", "h", "n/0", "n/1", "a%2Fb"}
    assert tensors["h"].dtype == torch.bfloat16
    np.testing.assert_array_equal(tensors["h"].view(torch.uint16).numpy(), tree["h"].view(np.uint16))
    np.testing.assert_array_equal(torch.view_as_complex(tensors["c"]).numpy(), tree["c"])
    ck.save(path, {k: v for k, v in tree.items() if k != "h"})  # safetensors.numpy has no bfloat16
    arrays = safetensors.numpy.load_file(path)
    np.testing.assert_array_equal(arrays["w"], tree["w"])
    assert arrays["n/0"].shape == () and arrays["n/0"] == 3
    with safetensors.safe_open(path, "np") as f:
        meta = f.metadata()
    assert meta["format"] == "optax_like.checkpoint" and meta["version"] == "3"
    digests = json.loads(meta["sha256"])
    assert digests["w"] == hashlib.sha256(tree["w"].tobytes()).hexdigest()
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0
    itemsize = {"F64": 8, "I64": 8, "F32": 4, "U8": 1}
    for name, e in json.loads(data[8:8 + n]).items():
        if name != "__metadata__":
            assert e["data_offsets"][0] % itemsize[e["dtype"]] == 0, name


def test_state_dict_file_loads_into_torch_optim(tmp_path):
    """An adapter's state dict file: `state/<id>/<key>` tensors any safetensors reader opens, and
    interop.torch makes it a state dict torch.optim loads and continues from identically."""
    from optax_like.interop.torch import to_torch_state_dict

    w = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    grads = [np.random.default_rng(10 + t).standard_normal((3, 4)).astype(np.float32) for t in range(4)]
    opt = optim.Adam([jnp.asarray(w)], lr=0.01, betas=(0.8, 0.9))
    for g in grads[:3]:
        opt.step(lambda p, g=g: jnp.sum(p[0] * g))
    ck.save_state_dict(tmp_path / "adam.safetensors", opt)
    assert set(safetensors.numpy.load_file(tmp_path / "adam.safetensors")) == {"state/0/exp_avg", "state/0/exp_avg_sq", "state/0/step"}
    assert set(safetensors.torch.load_file(tmp_path / "adam.safetensors")) == {"state/0/exp_avg", "state/0/exp_avg_sq", "state/0/step"}

    p = torch.nn.Parameter(torch.tensor(np.asarray(opt.params[0])))
    torch_opt = torch.optim.Adam([p], lr=0.5)
    torch_opt.load_state_dict(to_torch_state_dict(ck.load_state_dict(tmp_path / "adam.safetensors")))
    assert torch_opt.param_groups[0]["betas"] == (0.8, 0.9) and torch_opt.param_groups[0]["lr"] == 0.01
    p.grad = torch.tensor(grads[3])
    torch_opt.step()
    opt.step(lambda q: jnp.sum(q[0] * grads[3]))
    np.testing.assert_allclose(p.detach().numpy(), np.asarray(opt.params[0]), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------ integrity


def _small_file(tmp_path):
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": (np.int32(7), 0.5, None), "c": [jnp.ones(2, jnp.bfloat16)]}
    path = tmp_path / "small.ckpt"
    ck.save(path, tree)
    return path, path.read_bytes(), tree


def _split(data):
    """(header dict, data bytes) of a safetensors file."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _digest(header):
    """The header's digest: names, dtypes, shapes (version 2: offsets too), tree and sha256."""
    meta = header["__metadata__"]
    v2 = meta.get("version") == "2"
    table = sorted((k, v["dtype"], v["shape"], *([v["data_offsets"]] if v2 else [])) for k, v in header.items() if k != "__metadata__")
    return hashlib.sha256(json.dumps([table, meta["tree"], meta["sha256"]], separators=(",", ":")).encode()).hexdigest()


def _craft(header, body, fix_digest=True):
    """A file with `header` (its digest recomputed, as anyone crafting a file can) and `body`."""
    header = json.loads(json.dumps(header))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if fix_digest and isinstance(meta, dict):
        try:
            meta["digest"] = _digest(header)
        except Exception:  # a header too broken to digest: left as it is
            pass
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def test_truncation_at_every_byte_is_detected(tmp_path):
    path, data, _ = _small_file(tmp_path)
    (n,) = struct.unpack("<Q", data[:8])
    # Every byte of the length prefix and of the data, every 5th of the header.
    for cut in [*range(8), *range(8, 8 + n, 5), *range(8 + n, len(data))]:
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated") as e:
            ck.load(path)
        if cut >= 8 + n:
            assert "tensors incomplete: " in str(e.value)
    path.write_bytes(data + b"\0")
    with pytest.raises(CheckpointError, match="1 trailing bytes"):
        ck.load(path)


def test_any_flipped_byte_is_detected(tmp_path):
    path, data, tree = _small_file(tmp_path)
    assert_bit_equal(ck.load(path), {"a": tree["a"], "b": tree["b"], "c": [np.asarray(tree["c"][0])]})
    (n,) = struct.unpack("<Q", data[:8])
    # Every byte of the length prefix and of the data, every 3rd of the header.
    for i in [*range(8), *range(8, 8 + n, 3), *range(8 + n, len(data))]:
        corrupted = bytearray(data)
        corrupted[i] ^= 0x10
        path.write_bytes(bytes(corrupted))
        with pytest.raises(CheckpointError):
            ck.load(path)


def test_corruption_messages_say_what_is_wrong(tmp_path):
    path, data, _ = _small_file(tmp_path)
    header, body = _split(data)
    begin = header["c/0"]["data_offsets"][0]
    (n,) = struct.unpack("<Q", data[:8])

    def corrupt(i):
        b = bytearray(data)
        b[i] ^= 0x01
        path.write_bytes(bytes(b))

    corrupt(data.index(b'"digest":"') + 20)
    with pytest.raises(CheckpointError, match="header fails its sha256 digest"):
        ck.load(path)
    corrupt(8 + n + begin + 1)
    with pytest.raises(CheckpointError, match=r"tensor c/0 \(bfloat16\[2\]\) fails its sha256"):
        ck.load(path)
    path.write_bytes(_craft({**header, "__metadata__": {**header["__metadata__"], "version": "4"}}, body))
    with pytest.raises(CheckpointError, match="format version '4'; this optax_like reads versions 2 and 3"):
        ck.load(path)
    safetensors.numpy.save_file({"x": np.ones(2, np.float32)}, path)
    with pytest.raises(CheckpointError, match="safetensors file but not an optax_like checkpoint"):
        ck.load(path)
    path.write_bytes(b"\x93OLCKPT\n\x01\x00\x00\x00" + bytes(100))
    with pytest.raises(CheckpointError, match="earlier optax_like format"):
        ck.load(path)
    path.write_bytes(b"PK\x03\x04 a zip file, not a checkpoint" * 3)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        ck.load(path)
    with pytest.raises(CheckpointError, match="is a directory"):
        ck.load(tmp_path)


def _sha_of(body, header, name):
    b, e = header[name]["data_offsets"]
    return hashlib.sha256(body[b:e]).hexdigest()


@pytest.mark.parametrize("case, match", [
    ("nbytes_float", "tensor 'a' is not {dtype, shape, data_offsets}"),
    ("dtype_list", "tensor 'a' has unsupported dtype"),
    ("dtype_object", "unsupported dtype 'object'"),
    ("shape_65_dims", "tensor 'a' has a shape .* that NumPy cannot hold"),
    ("offsets_gap", "invalid offset for tensor `[bc]/0`"),
    ("size_lies", "hold 8 bytes, F32\\[3\\] needs 12"),
    ("no_tree", "'tree', 'sha256' and 'digest'"),
    ("tree_deep", "nested deeper than 200 levels"),
    ("tree_json_deep", "nested too deeply"),
    ("tree_unknown_tensor", "bad tree node"),
    ("tree_tensor_twice", "bad tree node"),
    ("tensor_unused", "tensors not in the tree: a"),
    ("huge_int", "malformed metadata"),
    ("header_too_big", "the limit is"),
    ("complex_bad", "bad tree node"),
    ("huge_key", "bad tree node"),
])
def test_crafted_headers_raise_checkpoint_error(tmp_path, case, match):
    """Headers that are valid JSON with a consistent digest but wrong contents: each is a
    CheckpointError saying what is wrong (not a TypeError, KeyError, RecursionError, ...)."""
    path, data, _ = _small_file(tmp_path)
    header, body = _split(data)
    meta = header["__metadata__"]
    tree = json.loads(meta["tree"])
    if case == "nbytes_float":
        header["a"]["data_offsets"] = [float(x) for x in header["a"]["data_offsets"]]
    elif case == "dtype_list":
        header["a"]["dtype"] = ["F32"]
    elif case == "dtype_object":
        header["a"]["dtype"] = "object"
    elif case == "shape_65_dims":
        header["a"]["shape"] = [1] * 65
    elif case == "offsets_gap":
        for e in header.values():
            if "data_offsets" in e and e["data_offsets"][0] > 0:
                e["data_offsets"] = [e["data_offsets"][0] + 1, e["data_offsets"][1] + 1]
    elif case == "size_lies":
        header["a"]["shape"] = [3]
        header["a"]["data_offsets"][1] = header["a"]["data_offsets"][0] + 8
    elif case == "no_tree":
        del meta["tree"]
    elif case == "tree_deep":
        node = {"t": "list", "items": []}
        for _ in range(250):
            node = {"t": "list", "items": [node]}
        tree["items"].append([{"t": "str", "v": "deep"}, node])
    elif case == "tree_json_deep":
        meta["tree"] = "[" * 100000 + "]" * 100000
    elif case == "tree_unknown_tensor":
        tree["items"][0][1]["k"] = "nope"
    elif case == "tree_tensor_twice":
        tree["items"][2][1]["items"][0] = tree["items"][0][1]
    elif case == "tensor_unused":
        tree["items"][0][1] = {"t": "none"}
    elif case == "huge_int":
        meta["tree"] = '{"t": "int", "v": ' + "9" * 5000 + "}"
    elif case == "huge_key":  # an int key of 20000 bits: its repr would exceed Python's digit limit
        tree["items"][0][0] = {"t": "int", "hex": "0x" + "f" * 5000}
    elif case == "complex_bad":
        tree["items"][0][1]["complex"] = True  # a (2, 3) float32 tensor is no real pair
    if case not in ("tree_json_deep", "huge_int", "no_tree"):
        meta["tree"] = json.dumps(tree)
    if case == "header_too_big":
        path.write_bytes(struct.pack("<Q", 1 << 40) + data[8:])
    else:
        path.write_bytes(_craft(header, body))
    with pytest.raises(CheckpointError, match=match):
        ck.load(path)


def test_sparse_file_claiming_gigabytes_allocates_nothing(tmp_path):
    """A header claiming 256 MiB over a sparse file (nothing on disk): the claim fits the file's
    apparent size, so only the sha256 (streamed in bounded memory) refutes it; a template refutes
    it before anything is read. Nothing near the claimed size is ever allocated."""
    claimed = 256 << 20
    header = {"__metadata__": {"format": "optax_like.checkpoint", "version": "3", "sha256": json.dumps({"x": "0" * 64}),
                               "tree": json.dumps({"t": "dict", "items": [[{"t": "str", "v": "x"}, {"t": "array", "k": "x"}]]})},
              "x": {"dtype": "F32", "shape": [claimed // 4], "data_offsets": [0, claimed]}}
    path = tmp_path / "sparse.ckpt"
    path.write_bytes(_craft(header, b""))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) + claimed)
    assert os.stat(path).st_blocks * 512 < 1 << 20  # sparse indeed
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"tensor x \(float32\[67108864\]\) fails its sha256"):
            ck.load(path)
        with pytest.raises(CheckpointError, match=r"leaf \['x'\] is float32\[67108864\], the template expects float32\[4\]"):
            ck.load(path, like={"x": jax.ShapeDtypeStruct((4,), jnp.float32)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak


# ------------------------------------------------------------------------------ adversarial files
# Crafted files whose sha256s and digest are computed as a writer would: only their claims lie.

_ST_CODES = {"float32": "F32", "int32": "I32"}


def _file(tree, tensors, meta=None):
    """A version 3 checkpoint's bytes: the tree description `tree` (a JSON value, or its text) and
    `tensors` ({name: array, or (dtype code, shape, bytes)}), with consistent digests."""
    header, sha, body = {}, {}, b""
    for name, t in tensors.items():
        code, shape, raw = t if isinstance(t, tuple) else (_ST_CODES[t.dtype.name], list(t.shape), t.tobytes())
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [len(body), len(body) + len(raw)]}
        sha[name], body = hashlib.sha256(raw).hexdigest(), body + raw
    header["__metadata__"] = {"format": "optax_like.checkpoint", "version": "3", "sha256": json.dumps(sha),
                              "tree": tree if isinstance(tree, str) else json.dumps(tree), **(meta or {})}
    return _craft(header, body)


def _array(k):
    return {"t": "array", "k": k}


def _shared(n, child=None, t="node"):
    """A `LeafScalars` node holding one scalar for n params, as `save` writes it."""
    return {"t": t, "type": "optax_like.core.tree.LeafScalars", "seq": True, "shared": n,
            "items": [{"key": {"t": "int", "v": 0}, "piece": "[0]", "value": child or _array("s")}]}


def test_shared_scalars_claiming_more_params_than_the_file_holds(tmp_path):
    """A ~500-byte file whose `LeafScalars` node claims to be shared by 10**6 (10**12) params made
    `load` build 10**6 arrays (436 MB; 10**12: out of memory). Without a template, the copies it
    builds are bounded by the file's size; with one, by the template."""
    path = tmp_path / "shared.ckpt"
    step = np.array(7, np.int32)
    for n in (10**6, 10**12):
        path.write_bytes(_file(_shared(n), {"s": step}))
        assert os.path.getsize(path) < 600
        tracemalloc.start()
        try:
            with pytest.raises(CheckpointError, match=rf"per-param scalars at <root> claim {n} params, more copies than the file.s 5.. bytes hold"):
                ck.load(path)
            with pytest.raises(CheckpointError, match=rf"per-param scalars for {n} params at <root>, the template 3"):
                ck.load(path, like=LeafScalars.shared(np.int32(0), 3))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, peak
    # The bound counts the bytes of the copies: a 16-byte scalar may not be repeated as often.
    path.write_bytes(_file(_shared(60), {"s": step}))
    assert ck.load(path) == [7] * 60
    path.write_bytes(_file(_shared(60), {"s": np.zeros(4, np.float32)}))
    with pytest.raises(CheckpointError, match="claim 60 params"):
        ck.load(path)
    # `shared` anywhere else is malformed (a list, a node of another type, two children).
    two = _shared(3)
    two["items"].append({"key": {"t": "int", "v": 1}, "piece": "[1]", "value": _array("t")})
    for tree in (_shared(3, t="list"), {**_shared(3), "type": "x.Other"}, {**_shared(3), "seq": False}, two,
                 {**_shared(3), "shared": 0}, {**_shared(3), "shared": 3.0}):
        path.write_bytes(_file(tree, {"s": step, "t": step}))
        with pytest.raises(CheckpointError, match="bad tree node"):
            ck.load(path)
    # As `save` writes it: a shared file loads into either form of template, or without one.
    ck.save(path, LeafScalars.shared(np.int32(5), 3))
    assert ck.load(path) == [5, 5, 5]
    assert ck.load(path, like=LeafScalars([np.int32(0)] * 3)).values == (5, 5, 5)


@pytest.mark.parametrize("shape", [[0, 2**62], [0, 2**63 - 1], [0, 2**64 - 1], [2**40, 0, 2**40], [0] * 65])
def test_zero_size_tensor_with_huge_dimensions(tmp_path, shape):
    """A zero-size tensor (0 bytes: the layout holds) whose other dimensions NumPy cannot hold
    raised NumPy's ValueError; now a CheckpointError naming the tensor, before anything is read."""
    path = tmp_path / "z.ckpt"
    path.write_bytes(_file(_array("z"), {"z": ("F32", shape, b"")}))
    with pytest.raises(CheckpointError, match=r"tensor 'z' has a shape \[.* that NumPy cannot hold"):
        ck.load(path)
    with pytest.raises(CheckpointError, match=r"tensor 'z' has a shape"):
        ck.load(path, like=jax.ShapeDtypeStruct((0, 4), jnp.float32))


def test_zero_size_tensors_numpy_can_hold_load(tmp_path):
    path = tmp_path / "z.ckpt"
    path.write_bytes(_file({"t": "list", "items": [_array("z"), _array("y")]},
                           {"z": ("F32", [0, 2**40], b""), "y": ("I32", [2**20, 0, 3], b"")}))
    z, y = ck.load(path)
    assert z.shape == (0, 2**40) and z.dtype == np.float32 and y.shape == (2**20, 0, 3)
    path.write_bytes(_file(_array("z"), {"z": ("F32", [0, 2**64], b"")}))  # beyond the format's u64
    with pytest.raises(CheckpointError, match=r"tensor 'z' is not \{dtype, shape, data_offsets\}"):
        ck.load(path)


def _raw_file(header_text, body):
    raw = header_text if isinstance(header_text, bytes) else header_text.encode()
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.mark.parametrize("case, match", [
    ("utf32", "malformed header"),
    ("utf32_be", "not a safetensors file"),
    ("utf16", "malformed header"),
    ("latin1", "malformed header: 'utf-8' codec can't decode"),
    ("lone_surrogate_metadata", "malformed header: .*surrogates not allowed"),
    ("lone_surrogate_name", "malformed header: .*surrogates not allowed"),
    ("duplicate_tensor", "malformed header: duplicate key 'a'"),
    ("duplicate_metadata_key", "malformed header: duplicate key 'tree'"),
    ("duplicate_field", "malformed header: duplicate key 'dtype'"),
    ("duplicate_metadata", "malformed header: duplicate key '__metadata__'"),
    ("nan", "malformed header: NaN is not JSON"),
])
def test_headers_the_reference_reader_refuses_are_refused(tmp_path, case, match):
    """Headers that loaded before although the reference reader (the safetensors package) refuses
    them, or that a JSON parser may read two ways (duplicate keys: the package keeps the last),
    each with consistent digests: the header is parsed as the package parses it (UTF-8 only, no
    lone surrogates, no NaN), and more strictly (no duplicate keys)."""
    path, data, _ = _small_file(tmp_path)
    header, body = _split(data)
    text = json.dumps(header)  # (ASCII: non-ASCII and lone surrogates as \u escapes)
    a = json.dumps(header["a"])
    raw = {
        "utf32": lambda: text.encode("utf-32-le"),
        "utf32_be": lambda: text.encode("utf-32-be"),
        "utf16": lambda: text.encode("utf-16-le"),
        "latin1": lambda: text.replace("optax_like.checkpoint", "optax_l\u00efke.checkpoint").encode("latin-1"),
        "lone_surrogate_metadata": lambda: json.dumps({**header, "__metadata__": {**header["__metadata__"], "x": "\ud800"}}),
        "lone_surrogate_name": lambda: text.replace('"a": {', '"\\udc00": {', 1),
        "duplicate_tensor": lambda: text[:-1] + ', "a": ' + a + "}",
        "duplicate_metadata_key": lambda: text.replace('"__metadata__": {', '"__metadata__": {"tree": "{}", ', 1),
        "duplicate_field": lambda: text.replace(a, a[:-1] + ', "dtype": "F32"}', 1),
        "duplicate_metadata": lambda: text[:-1] + ', "__metadata__": ' + json.dumps(header["__metadata__"]) + "}",
        "nan": lambda: text.replace(a, a.replace('"shape": [2, 3]', '"shape": [2, NaN]'), 1),
    }[case]()
    path.write_bytes(_raw_file(raw, body))
    with pytest.raises(CheckpointError, match=match):
        ck.load(path)


def _two(tree):
    return _file(tree, {"a": np.ones(2, np.float32), "b": np.zeros(2, np.float32)})


_FLOAT_ONE = {"t": "float", "v": float.hex(1.0)}


@pytest.mark.parametrize("case, tree, match", [
    ("dict_1_True", {"t": "dict", "items": [[{"t": "int", "v": 1}, _array("a")], [{"t": "bool", "v": True}, _array("b")]]},
     "a dict holds the key True twice"),
    ("dict_1_1.0", {"t": "dict", "items": [[{"t": "int", "v": 1}, _array("a")], [_FLOAT_ONE, _array("b")]]},
     "a dict holds the key 1.0 twice"),
    ("dict_0_False", {"t": "dict", "items": [[{"t": "bool", "v": False}, _array("a")], [{"t": "int", "v": 0}, _array("b")]]},
     "a dict holds the key 0 twice"),
    ("dict_tuple_keys", {"t": "dict", "items": [[{"t": "tuple", "items": [{"t": "int", "v": 1}]}, _array("a")],
                                                 [{"t": "tuple", "items": [{"t": "bool", "v": True}]}, _array("b")]]},
     r"a dict holds the key \(True,\) twice"),
    ("node_keys", {"t": "node", "type": "x.Y", "items": [{"key": {"t": "int", "v": 1}, "piece": "[1]", "value": _array("a")},
                                                         {"key": {"t": "bool", "v": True}, "piece": "[True]", "value": _array("b")}]},
     "a node holds the key True twice"),
    ("node_pieces", {"t": "node", "type": "x.Y", "items": [{"key": {"t": "str", "v": "p"}, "piece": ".p", "value": _array("a")},
                                                           {"key": {"t": "str", "v": "q"}, "piece": ".p", "value": _array("b")}]},
     r"two entries at the path \.p"),
    ("node_empty_piece", {"t": "node", "type": "x.Y", "items": [{"key": {"t": "str", "v": "p"}, "piece": "", "value": _array("a")},
                                                                {"key": {"t": "str", "v": "q"}, "piece": ".q", "value": _array("b")}]},
     "two entries at the path <root>"),
    ("namedtuple_fields", {"t": "namedtuple", "type": "x.T", "fields": ["x", "x"], "items": [_array("a"), _array("b")]},
     "a namedtuple holds the key 'x' twice"),
    ("json_key_in_tree", '{"t": "list", "items": [{"t": "array", "k": "b", "k": "a"}, {"t": "array", "k": "b"}]}',
     r"malformed metadata \(tree\): duplicate key 'k'"),
    ("lone_surrogate_in_tree", '{"t": "dict", "items": [[{"t": "str", "v": "\\udc00"}, {"t": "array", "k": "a"}], '
                               '[{"t": "str", "v": "b"}, {"t": "array", "k": "b"}]]}',
     r"malformed metadata \(tree\): .*surrogates not allowed"),
])
def test_tree_entries_never_merge(tmp_path, case, tree, match):
    """Tree descriptions whose entries merged silently (dict keys equal in Python: 1, 1.0 and
    True; duplicate JSON keys; repeated jax key path pieces): refused, with or without a template."""
    path = tmp_path / "t.ckpt"
    path.write_bytes(_two(tree))
    with pytest.raises(CheckpointError, match=match):
        ck.load(path)
    with pytest.raises(CheckpointError, match=match):
        ck.load(path, like={1: np.ones(2, np.float32), 2: np.zeros(2, np.float32)})


def test_duplicate_keys_in_the_sha256_metadata_are_refused(tmp_path):
    a = np.ones(2, np.float32)
    good = hashlib.sha256(a.tobytes()).hexdigest()
    sha = '{"a": "%s", "a": "%s"}' % ("0" * 64, good)
    path = tmp_path / "s.ckpt"
    path.write_bytes(_file(_array("a"), {"a": a}, meta={"sha256": sha}))
    with pytest.raises(CheckpointError, match=r"malformed metadata \(sha256\): duplicate key 'a'"):
        ck.load(path)


def test_strings_json_readers_refuse_are_not_saved(tmp_path):
    with pytest.raises(TypeError, match=r"the str '\\udc00' at \['k'\]\[0\] is not valid Unicode"):
        ck.save(tmp_path / "x.ckpt", {"k": ["\udc00"]})
    with pytest.raises(TypeError, match=r"the str 'a\\ud800' at \['d'\] is not valid Unicode"):
        ck.save(tmp_path / "x.ckpt", {"d": {"a\ud800": 1}})
    assert os.listdir(tmp_path) == []
    tree = {"😀": ["non-BMP \U0001f600 and \u00e9"]}  # (written as \u escapes: a surrogate pair)
    ck.save(tmp_path / "x.ckpt", tree)
    assert ck.load(tmp_path / "x.ckpt") == tree


# A version 2 file, written by the previous optax_like (its own safetensors writer): float32,
# bfloat16, complex64 (real pairs), float8, a shared LeafScalars, big ints, tuples, int keys.
_V2_FILE = (
    "eNqNVdtu4zYQdW/obwR6rZDl/ZKXFgW6QIH2qY+xYZDDYW3EiVxJ2TgIgvWfNZ/WEbVryHFiVLJAcobnzI1D73+cleepkh92"
    "1dVTlfrHLVZX1UejqrrqVmFYXS/qKoU+LJucO+w7krDaLZ7r6uEII8UEI2p5CnO1FAMOzuHEKU6KWhWDXY/bD2yK/v0IfQpV"
    "rtbF5mqK+vUjNxPYG65qUetiMrsjZ93yN/WnnGDVG1hXm2JzubzFPhTtcmDJTXsbeqJptn3YLTfrG7yEFcLNtlnf9UT6Cdtu"
    "3dzRjiGqvsXB5tO86ufV1bxKa6BJPa/WPd52JLq+Pui6vi2qT2X1MK+e64MutG14LNqbg3ZRv4ddncWuzmLhLBbKHJrb7QZ3"
    "JOnbezxDlt1ZtqJ+Hz0clSP8XZOw6IdSFsm0Ck2Ll0O+L//AkP+CsAltd5xrIrpBcuDqwEg1OxhkzzTZrhFG6mu2GFVhc49T"
    "zOsoxhNdBF2x+jUvFBqJ8J8v62GxCi0mWsszYW8fj4LerLv+JIxT7/kE8lW+KjWaV2yn2OvnyEbeNKGfuMB2/NJNd29/Oga8"
    "KtSrKt3hkaC/p9PyTgixaTYHpvE0DW/9dpBywvr/W2l39hDSvflG7RaL4TdeEkKbsYfLVoJoCCFE1CwFa7P2WSkXJaZsSGRc"
    "jhBsdNpJz4xRIDQHLaLMSrvgHB+b6GHMtKQ3uugtN1wnbnRwTGTDBCSusyQ0CJktz6SLAX3ykXkITivaYNzYj4VKxSiAp8xQ"
    "AUewmoqeuUkiau+FBuLy4KMgdUzAvVcOTADDtDFgkxiz8OUwE5/QXkUTvMCYIwcpuUgYbWIcGLkWvUafI/qYbAQTtbAhM+u4"
    "JNvR87EjVmPCZBRJB7QgyCedjGSIjCklnc0+BW0pPC6txywwBWE5zzrQtesMkcpUqIbbYsiYVpiQAmWCdhmhMiYGlHKfVPYU"
    "c6QEeA5KWiVCFqAjo2LFzMB7loYrh8qa1n9jN9zjGjkVKbIEjuKIlFiMTEgHyoPhMkNg0plkJfWDTMBoj+bWCkpz5lSB6vn5"
    "gp7xX/j7X2azi5fZ7OVfWgzfzzSn74LkexpnNM72NLz8MCua/f7z7Jtvv/sPp+9KvA=="
)


def test_version_2_files_still_load(tmp_path):
    import base64
    import zlib

    data = zlib.decompress(base64.b64decode(_V2_FILE))
    path = tmp_path / "v2.safetensors"
    path.write_bytes(data)
    expected = {"w": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5,
                "h": np.array([1.5, -0.0, np.inf], ml_dtypes.bfloat16), "c": np.array([1 + 2j, -3j], np.complex64),
                "f8": np.arange(4, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn),
                "step": LeafScalars.shared(np.int32(5), 3), "py": [1, 2**70, 1.5, "s", None, (True,)], 3: {"x": np.float64(2.5)}}
    plain = ck.load(path)
    assert list(plain) == list(expected) and plain["py"] == expected["py"] and plain["step"] == [5, 5, 5]
    for key in ("w", "h", "c", "f8"):
        assert plain[key].dtype == expected[key].dtype
        np.testing.assert_array_equal(bits(plain[key]), bits(expected[key]))
    # Its digest (version 2's, over the offsets too) is checked: one that a version 3 writer would
    # compute fails, the version 2 one recomputed passes.
    header, body = _split(data)
    v3 = {**header, "__metadata__": {**header["__metadata__"], "version": "3"}}
    path.write_bytes(_craft({**header, "__metadata__": {**header["__metadata__"], "digest": _digest(v3)}}, body, fix_digest=False))
    with pytest.raises(CheckpointError, match="header fails its sha256 digest"):
        ck.load(path)
    path.write_bytes(_craft(header, body))
    assert ck.load(path)["py"] == expected["py"]


def test_files_go_through_the_safetensors_package(tmp_path, monkeypatch):
    """`save` writes with `safetensors.numpy.save_file`; `load` has `safetensors.safe_open`
    validate the very file it reads."""
    calls = []
    real_save, real_open = safetensors.numpy.save_file, safetensors.safe_open
    monkeypatch.setattr(safetensors.numpy, "save_file", lambda *a, **k: calls.append("save_file") or real_save(*a, **k))
    monkeypatch.setattr(safetensors, "safe_open", lambda p, *a, **k: calls.append(os.path.realpath(p)) or real_open(p, *a, **k))
    path = tmp_path / "x.ckpt"
    ck.save(path, {"x": np.ones(3, np.float32)})
    assert ck.load(path)["x"].tolist() == [1, 1, 1]
    assert calls == ["save_file", str(path)]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


def _mutate(obj, choices, value):
    """`obj` with the node that `choices` selects replaced by `value` (or a key deleted)."""
    if not isinstance(obj, (dict, list)) or not obj or not choices:
        return value
    i = choices[0] % len(obj)
    if isinstance(obj, dict):
        key = list(obj)[i]
        if len(choices) == 1 and choices[0] % 7 == 0:
            return {k: v for k, v in obj.items() if k != key}
        return {**obj, key: _mutate(obj[key], choices[1:], value)}
    return [*obj[:i], _mutate(obj[i], choices[1:], value), *obj[i + 1:]]


_FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(choices=st.lists(st.integers(0, 50), max_size=6), value=_json_values, in_tree=st.booleans())
def test_fuzzed_headers_and_metadata_raise_only_checkpoint_error(tmp_path, choices, value, in_tree):
    """Any header or tree description, with its digest recomputed: load returns or raises
    CheckpointError, nothing else."""
    path, data, _ = _small_file(tmp_path)
    header, body = _split(data)
    if in_tree:
        tree = _mutate(json.loads(header["__metadata__"]["tree"]), choices, value)
        header["__metadata__"]["tree"] = json.dumps(tree)
    else:
        header = _mutate(header, choices, value)
    path.write_bytes(_craft(header, body))
    try:
        ck.load(path)
        ck.load(path, like={"a": np.zeros((2, 3), np.float32), "b": (np.int32(0), 0.0, None), "c": [jnp.ones(2, jnp.bfloat16)]})
    except CheckpointError:
        pass


@_FUZZ
@given(cut=st.integers(0, 10**6), garbage=st.binary(max_size=64))
def test_fuzzed_truncations_and_appended_bytes_raise_checkpoint_error(tmp_path, cut, garbage):
    path, data, _ = _small_file(tmp_path)
    path.write_bytes(data[:cut % len(data)] + garbage)
    with pytest.raises(CheckpointError):
        ck.load(path)


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
    with pytest.raises(TypeError, match=r"the dict at \['d'\] has a key .* int \(of 64 bits\)"):
        ck.save(path, {"d": {2**64: 1}})
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

    def crashing_writer(tensors, filename, metadata=None):  # part of the data written, then the crash
        with open(filename, "wb") as f:
            f.write(b"\x00" * 1000)
        raise OSError("simulated crash")

    if failing == "write":
        monkeypatch.setattr(safetensors.numpy, "save_file", crashing_writer)
    else:
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="simulated crash"):
        ck.save(path, {"v": np.ones(1 << 16, np.float32), "w": np.ones(1 << 16, np.float32)})
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["state.ckpt"]  # the temporary directory is removed
    np.testing.assert_array_equal(ck.load(path)["v"], np.arange(3, dtype=np.float32))


_SAVER = """
import sys, numpy as np
from optax_like import checkpoint
tree = {"a": np.full((1 << 21,), float(sys.argv[2]), np.float32), "b": [np.arange(1 << 20), 1.5]}
print("ready", flush=True)
while True:
    checkpoint.save(sys.argv[1], tree)
"""


def _kill_during_saves(tmp_path, kills):
    """Starts a process that saves a 16 MiB tree to one path in a loop and kills it with SIGKILL
    at random moments: the file always loads (the old or the new tree), no temporary file
    survives the next save."""
    path = tmp_path / "state.ckpt"
    ck.save(path, {"a": np.zeros(1, np.float32), "b": [np.arange(1), 1.5]})
    rng = np.random.default_rng(0)
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path), str(k)], stdout=subprocess.PIPE,
                                env={**os.environ, "JAX_PLATFORMS": "cpu"})
        try:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
            proc.stdout.close()
        out = ck.load(path)
        assert out["b"][1] == 1.5 and float(out["a"][0]) in (0.0, *range(k + 1))
    ck.save(path, out)
    assert os.listdir(tmp_path) == ["state.ckpt"]


def test_kill_during_save_leaves_a_valid_file_and_no_temporary(tmp_path):
    _kill_during_saves(tmp_path, kills=1)


@pytest.mark.slow
def test_many_kills_during_save(tmp_path):
    _kill_during_saves(tmp_path, kills=20)


def test_temporaries_of_crashed_saves_are_removed_by_the_next_save(tmp_path, monkeypatch):
    """The safetensors package writes into a private temporary directory beside the target: a
    crash mid-write leaves it behind, and the next save to the same path removes it (and the
    temporary files of earlier versions) once its writer's pid is gone; those of live processes
    are left alone."""
    path = tmp_path / "state.ckpt"
    prefix = f".state.ckpt.{socket.gethostname()}."
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    stale_dir, stale_file = tmp_path / f"{prefix}{dead}.ab.tmp", tmp_path / f"{prefix}{dead}.cd.tmp"
    stale_dir.mkdir()
    (stale_dir / "checkpoint.safetensors").write_bytes(b"left by a crash")
    stale_file.write_bytes(b"left by a crash of an earlier version")
    live = tmp_path / f"{prefix}{os.getppid()}.ef.tmp"
    live.mkdir()
    ck.save(path, {"v": np.arange(3, dtype=np.float32)})
    np.testing.assert_array_equal(ck.load(path)["v"], np.arange(3, dtype=np.float32))
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, "state.ckpt"])

    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError("simulated crash")))
    with pytest.raises(OSError, match="simulated crash"):
        ck.save(path, {"v": np.ones(2, np.float32)})
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, "state.ckpt"])


def test_save_overwrites_and_keeps_permissions(tmp_path):
    path = tmp_path / "p.ckpt"
    ck.save(path, [1])
    os.chmod(path, 0o640)
    ck.save(str(path), [2])
    assert ck.load(path) == [2]
    assert os.stat(path).st_mode & 0o777 == 0o640
    for mask in (0o022, 0o027):  # a new file: the umask's permissions (the package writes 0o600)
        old = os.umask(mask)
        try:
            ck.save(tmp_path / f"new{mask}.ckpt", [1])
        finally:
            os.umask(old)
        assert os.stat(tmp_path / f"new{mask}.ckpt").st_mode & 0o777 == 0o666 & ~mask


def test_header_over_the_limit_load_enforces_is_not_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "MAX_HEADER_BYTES", 4096)
    ck.save(tmp_path / "ok.ckpt", ["x" * 1000])
    with pytest.raises(ValueError, match="exceeds the 4096-byte header limit"):
        ck.save(tmp_path / "big.ckpt", ["x" * 5000])
    assert os.listdir(tmp_path) == ["ok.ckpt"]


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

    # torch tensors NumPy cannot read (bfloat16, float8) are stored through their bits.
    low = {"bf16": torch.randn(5, generator=gen).to(torch.bfloat16), "f8": torch.randn(4, generator=gen).to(torch.float8_e4m3fn)}
    ck.save(tmp_path / "low.ckpt", low)
    back = safetensors.torch.load_file(tmp_path / "low.ckpt")
    for key, value in low.items():
        assert back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key].view(torch.uint8).numpy(), value.view(torch.uint8).numpy())
