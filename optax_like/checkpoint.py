"""Safe checkpoints without pickle: pytrees of arrays and JSON-able Python leaves to ONE file.

    optax_like.checkpoint.save("opt.ckpt", state)                  # any pytree
    state = optax_like.checkpoint.load("opt.ckpt", like=tx.init(params))
    state = optax_like.checkpoint.load("opt.ckpt", like=jax.eval_shape(tx.init, params))
    tree = optax_like.checkpoint.load("opt.ckpt")                  # nested dicts/lists/tuples

    optax_like.checkpoint.save_state_dict("adam.ckpt", optimizer)  # optax_like.optim adapter
    optimizer.load_state_dict(optax_like.checkpoint.load_state_dict("adam.ckpt"))

Nothing is ever unpickled: the file holds a JSON description of the tree and raw array bytes,
and loading builds only dicts, lists, tuples, Python scalars, NumPy/JAX arrays and (with
`like=`) the template's own pytree types. See docs/checkpoint.md.

File layout (format version 1, all integers little-endian)::

    magic           8 bytes   b"\\x93OLCKPT\\n"
    version         uint32    1
    header_nbytes   uint64    length of the JSON header
    header_sha256   32 bytes  sha256 of the JSON header bytes
    header          JSON (UTF-8): {"format", "version", "tree", "arrays", "data_nbytes"}
    data            the arrays' raw little-endian C-order bytes, back to back, no padding

Every byte is covered by a check: the magic and version are compared, the header by its
sha256, each array by the sha256 in its header entry, and the file size must equal
preamble + header + data exactly. Any failure raises `CheckpointError` (a `ValueError`) that
says what is wrong, before anything is returned (never partial data).

Tree description (the header's "tree"): one JSON object per node, `{"t": kind, ...}` with kind
`array` (index into "arrays"; `"scalar": true` for a NumPy scalar), `none`, `bool`, `int`,
`float` (exact: `float.hex`, NaN as its IEEE bits), `complex`, `str`, `list`, `tuple`,
`dict` (a list of [key, value] pairs: key types and insertion order are kept, e.g. the int
param ids of a torch state dict), `namedtuple` (type name, fields, values) and `node` (any
other registered pytree node, e.g. `HyperparamsDict` or `core.tree.LeafScalars`: its type name
and its children with their keys and jax key path pieces; `"seq": true` when every key is a
`SequenceKey`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core.tree import LeafScalars

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "load",
    "load_state_dict",
    "save",
    "save_state_dict",
]

MAGIC = b"\x93OLCKPT\n"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sIQ32s")  # magic, version, header length, header sha256

# dtype names this format stores (NumPy names; bfloat16 and float8 types via ml_dtypes/jax).
_DTYPES = frozenset({
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3b11fnuz", "float8_e4m3fnuz", "float8_e5m2fnuz",
})


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (corrupt, truncated, not a checkpoint, another
    version), or whose contents do not match the `like=` template."""


# ---------------------------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------------------------


def _display(path: str) -> str:
    return path or "<root>"


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode_float(x: float) -> str:
    if math.isnan(x):
        return "nan:" + struct.pack("<d", x).hex()
    return float.hex(x)


def _decode_float(s: Any) -> float:
    if not isinstance(s, str):
        raise CheckpointError(f"malformed header: float {s!r} is not a string.")
    try:
        if s.startswith("nan:"):
            return struct.unpack("<d", bytes.fromhex(s[4:]))[0]
        return float.fromhex(s)
    except (ValueError, struct.error) as e:
        raise CheckpointError(f"malformed header: bad float {s!r}.") from e


def _encode_scalar(x: Any) -> dict | None:
    """The node of a Python scalar (also used for dict keys); None when `x` is not one."""
    if x is None:
        return {"t": "none"}
    if isinstance(x, bool):
        return {"t": "bool", "v": x}
    if type(x) is int:
        return {"t": "int", "v": x}
    if type(x) is float:
        return {"t": "float", "v": _encode_float(x)}
    if type(x) is complex:
        return {"t": "complex", "v": [_encode_float(x.real), _encode_float(x.imag)]}
    if type(x) is str:
        return {"t": "str", "v": x}
    return None


def _encode_key(key: Any, path: str) -> dict:
    node = _encode_scalar(key)
    if node is not None:
        return node
    if type(key) is tuple:
        return {"t": "tuple", "items": [_encode_key(k, path) for k in key]}
    raise TypeError(
        f"checkpoint: the dict at {_display(path)} has a key {key!r} of type {type(key).__name__}; "
        "keys must be str, int, float, bool, None or tuples of these."
    )


def _host_array(x: Any, path: str) -> np.ndarray:
    if isinstance(x, jax.Array):
        if isinstance(x, jax.core.Tracer):
            raise TypeError(f"checkpoint: leaf {_display(path)} is a tracer; save concrete values, outside jit.")
        if not x.is_fully_addressable:
            raise TypeError(
                f"checkpoint: leaf {_display(path)} is not fully addressable from this process "
                "(multi-host arrays are not supported)."
            )
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            raise TypeError(
                f"checkpoint: leaf {_display(path)} is a typed PRNG key; save jax.random.key_data(key)."
            )
    try:
        arr = np.asarray(x)
    except Exception as e:  # e.g. a bfloat16 torch tensor, a tensor that requires grad
        raise TypeError(f"checkpoint: leaf {_display(path)} ({type(x).__name__}) cannot be read as a NumPy array: {e}") from e
    name = arr.dtype.name
    if arr.dtype.fields is not None or name not in _DTYPES:
        raise TypeError(
            f"checkpoint: leaf {_display(path)} has dtype {arr.dtype}, which checkpoints do not "
            f"store (supported: {', '.join(sorted(_DTYPES))})."
        )
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else np.array(arr, order="C")  # (ascontiguousarray makes 0-d 1-d)


class _Encoder:
    def __init__(self):
        self.arrays: list[tuple[str, np.ndarray]] = []

    def array(self, x: Any, path: str, scalar: bool) -> dict:
        arr = _host_array(x, path)
        self.arrays.append((path, arr))
        node = {"t": "array", "i": len(self.arrays) - 1}
        if scalar:
            node["scalar"] = True
        return node

    def encode(self, x: Any, path: str) -> dict:
        node = _encode_scalar(x)
        if node is not None:
            return node
        if isinstance(x, (jax.Array, np.ndarray)):
            return self.array(x, path, scalar=False)
        if isinstance(x, np.generic):
            return self.array(x, path, scalar=True)
        if type(x) is dict:
            return {"t": "dict", "items": [
                [_encode_key(k, path), self.encode(v, f"{path}[{k!r}]")] for k, v in x.items()
            ]}
        if type(x) is list:
            return {"t": "list", "items": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(x)]}
        if type(x) is tuple:
            return {"t": "tuple", "items": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(x)]}
        if _is_namedtuple(x):
            return {"t": "namedtuple", "type": _type_name(type(x)), "fields": list(x._fields),
                    "items": [self.encode(v, f"{path}.{f}") for f, v in zip(x._fields, x)]}
        # Any other registered pytree node (HyperparamsDict, OrderedDict, dataclasses, ...):
        # flatten ONE level with jax's key paths.
        children = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)[0]
        if len(children) == 1 and children[0][0] == () and children[0][1] is x:
            if hasattr(x, "__array__"):  # e.g. a torch tensor: stored as a NumPy array
                return self.array(x, path, scalar=False)
            raise TypeError(
                f"checkpoint: leaf {_display(path)} is a {type(x).__name__}, which checkpoints do not "
                "store (arrays, None, bool, int, float, complex, str, and dicts, lists, tuples, "
                "NamedTuples or registered pytree nodes of these)."
            )
        items = []
        for (key,), child in children:
            piece = str(key)
            items.append({"key": _encode_key(_key_value(key), path), "piece": piece,
                          "value": self.encode(child, path + piece)})
        node = {"t": "node", "type": _type_name(type(x)), "items": items}
        if all(isinstance(key, jax.tree_util.SequenceKey) for (key,), _ in children):
            node["seq"] = True  # read back as a list without `like` (e.g. core.tree.LeafScalars)
        return node


def _key_value(key: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (no race with threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path: str | os.PathLike, tree: Any) -> None:
    """Writes `tree` to the file `path`, atomically.

    `tree` is any pytree whose leaves are arrays (jax.Array, np.ndarray, NumPy scalars; dtypes
    bool, (u)int8-64, float16, bfloat16, float32, float64, complex64, complex128, float8) or
    JSON-able Python values (None, bool, int, float, complex, str), in dicts (keys: str, int,
    float, bool, None, tuples), lists, tuples, NamedTuples or other registered pytree nodes.
    Bytes are stored exactly (NaN payloads, -0.0, bfloat16 included); Python floats exactly too.

    The file is written to a temporary file in the same directory, flushed, fsync'ed and
    renamed over `path` (`os.replace`): a crash or an error mid-write leaves any previous file
    at `path` intact and no partial file. Unsupported leaves raise TypeError naming their path
    before anything is written.
    """
    path = os.fspath(path)
    encoder = _Encoder()
    tree_node = encoder.encode(tree, "")
    entries, offset = [], 0
    for leaf_path, arr in encoder.arrays:
        raw = arr.reshape(-1).view(np.uint8)
        entries.append({
            "path": _display(leaf_path), "dtype": arr.dtype.name, "shape": list(arr.shape),
            "offset": offset, "nbytes": int(raw.size), "sha256": hashlib.sha256(raw).hexdigest(),
        })
        offset += int(raw.size)
    header = json.dumps(
        {"format": "optax_like.checkpoint", "version": FORMAT_VERSION, "tree": tree_node,
         "arrays": entries, "data_nbytes": offset},
        separators=(",", ":"), allow_nan=False,
    ).encode("utf-8")
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header), hashlib.sha256(header).digest())

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(preamble)
            f.write(header)
            for _, arr in encoder.arrays:
                f.write(arr.reshape(-1).view(np.uint8).data)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


# ---------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------


def _read_exact(f, n: int, what: str, path: str) -> bytearray:
    buf = bytearray(n)
    got = f.readinto(buf)
    if got != n:
        raise CheckpointError(f"checkpoint {path} is truncated: {what} needs {n} bytes, only {got} left.")
    return buf


def _check_header(header: Any, path: str) -> list[dict]:
    def bad(msg):
        raise CheckpointError(f"checkpoint {path} has a malformed header: {msg}.")

    if not isinstance(header, dict) or header.get("format") != "optax_like.checkpoint":
        bad("not an optax_like.checkpoint header")
    if header.get("version") != FORMAT_VERSION:
        bad(f"header version {header.get('version')!r} != {FORMAT_VERSION}")
    arrays = header.get("arrays")
    if not isinstance(arrays, list):
        bad("'arrays' is not a list")
    offset = 0
    for i, e in enumerate(arrays):
        if not isinstance(e, dict):
            bad(f"array entry {i} is not an object")
        shape, dtype = e.get("shape"), e.get("dtype")
        if dtype not in _DTYPES:
            bad(f"array {i} has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            bad(f"array {i} has a bad shape {shape!r}")
        nbytes = math.prod(shape) * jnp.dtype(dtype).itemsize
        if e.get("offset") != offset or e.get("nbytes") != nbytes:
            bad(f"array {i} ({e.get('path')}) has inconsistent offset/nbytes")
        if not isinstance(e.get("sha256"), str) or not isinstance(e.get("path"), str):
            bad(f"array {i} has no sha256 or path")
        offset += nbytes
    if header.get("data_nbytes") != offset:
        bad("'data_nbytes' does not match the arrays")
    return arrays


def _read(path: str) -> tuple[dict, list[np.ndarray]]:
    """The header and every array, all checked; raises CheckpointError on any problem."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _PREAMBLE.size:
            if f.read(len(MAGIC)) != MAGIC[:min(size, len(MAGIC))]:
                raise CheckpointError(f"{path} is not an optax_like checkpoint (wrong magic bytes).")
            raise CheckpointError(
                f"checkpoint {path} is truncated: {size} bytes, shorter than the {_PREAMBLE.size}-byte preamble."
            )
        magic, version, header_nbytes, header_sha = _PREAMBLE.unpack(f.read(_PREAMBLE.size))
        if magic != MAGIC:
            raise CheckpointError(f"{path} is not an optax_like checkpoint (wrong magic bytes {magic!r}).")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} has format version {version}; this optax_like reads version "
                f"{FORMAT_VERSION} (written by another optax_like version, or corrupted)."
            )
        if _PREAMBLE.size + header_nbytes > size:
            raise CheckpointError(
                f"checkpoint {path} is truncated (or its header length is corrupted): the header "
                f"needs {header_nbytes} bytes, the file has {size - _PREAMBLE.size} after the preamble."
            )
        header_bytes = bytes(_read_exact(f, header_nbytes, "the header", path))
        if hashlib.sha256(header_bytes).digest() != header_sha:
            raise CheckpointError(f"checkpoint {path} is corrupted: the header fails its sha256 checksum.")
        try:
            header = json.loads(header_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} has a malformed header: {e}.") from e
        entries = _check_header(header, path)
        expected = _PREAMBLE.size + header_nbytes + header["data_nbytes"]
        if size < expected:
            missing = [e["path"] for e in entries
                       if _PREAMBLE.size + header_nbytes + e["offset"] + e["nbytes"] > size]
            raise CheckpointError(
                f"checkpoint {path} is truncated: {size} bytes, expected {expected} "
                f"(arrays incomplete: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})."
            )
        if size > expected:
            raise CheckpointError(
                f"checkpoint {path} is corrupted: {size} bytes, expected {expected} ({size - expected} trailing bytes)."
            )
        arrays = []
        for e in entries:
            buf = _read_exact(f, e["nbytes"], f"array {e['path']}", path)
            if hashlib.sha256(buf).hexdigest() != e["sha256"]:
                raise CheckpointError(
                    f"checkpoint {path} is corrupted: array {e['path']} ({e['dtype']}{tuple(e['shape'])}) "
                    "fails its sha256 checksum."
                )
            dtype = jnp.dtype(e["dtype"]).newbyteorder("<")
            arrays.append(np.frombuffer(buf, dtype=dtype).reshape(tuple(e["shape"])))
    return header, arrays


def _bad_node(node: Any) -> CheckpointError:
    return CheckpointError(f"checkpoint has a malformed header: bad tree node {str(node)[:200]}.")


def _decode_scalar(node: dict) -> Any:
    t = node.get("t")
    if t == "none":
        return None
    v = node.get("v")
    if t == "bool" and type(v) is bool:
        return v
    if t == "int" and type(v) is int:
        return v
    if t == "float":
        return _decode_float(v)
    if t == "complex" and isinstance(v, list) and len(v) == 2:
        return complex(_decode_float(v[0]), _decode_float(v[1]))
    if t == "str" and type(v) is str:
        return v
    raise _bad_node(node)


def _decode_key(node: Any) -> Any:
    if isinstance(node, dict) and node.get("t") == "tuple" and isinstance(node.get("items"), list):
        return tuple(_decode_key(k) for k in node["items"])
    if not isinstance(node, dict):
        raise _bad_node(node)
    return _decode_scalar(node)


class _Decoder:
    """Walks the header's tree. Leaves are `(kind, value)`: ('array', index), ('scalar', value)."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.used: set[int] = set()

    def leaf_array(self, node: dict) -> int:
        i = node.get("i")
        if type(i) is not int or not 0 <= i < len(self.arrays) or i in self.used:
            raise _bad_node(node)
        self.used.add(i)
        return i

    def children(self, node: dict) -> list[tuple[Any, str, Any]]:
        """(key for the plain-dict form, jax key path piece, child node) of a container node."""
        t, items = node.get("t"), node.get("items")
        if not isinstance(items, list):
            raise _bad_node(node)
        if t in ("list", "tuple"):
            return [(i, f"[{i}]", c) for i, c in enumerate(items)]
        if t == "dict":
            out = []
            for pair in items:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise _bad_node(node)
                k = _decode_key(pair[0])
                out.append((k, f"[{k!r}]", pair[1]))
            return out
        if t == "namedtuple":
            fields = node.get("fields")
            if not isinstance(fields, list) or len(fields) != len(items) or not all(type(f) is str for f in fields):
                raise _bad_node(node)
            return [(f, f".{f}", c) for f, c in zip(fields, items)]
        if t == "node":
            out = []
            for item in items:
                if not isinstance(item, dict) or type(item.get("piece")) is not str:
                    raise _bad_node(node)
                out.append((_decode_key(item.get("key")), item["piece"], item.get("value")))
            return out
        raise _bad_node(node)

    def plain(self, node: Any) -> Any:
        """Nested dicts/lists/tuples: NamedTuples and other nodes become dicts."""
        if not isinstance(node, dict):
            raise _bad_node(node)
        t = node.get("t")
        if t == "array":
            arr = self.arrays[self.leaf_array(node)]
            return arr[()] if node.get("scalar") else arr
        if t in ("none", "bool", "int", "float", "complex", "str"):
            return _decode_scalar(node)
        kids = self.children(node)
        if t == "list":
            return [self.plain(c) for _, _, c in kids]
        if t == "tuple":
            return tuple(self.plain(c) for _, _, c in kids)
        if t == "node" and node.get("seq") is True:
            return [self.plain(c) for _, _, c in kids]
        out = {}
        for k, _, c in kids:
            out[k] = self.plain(c)
        return out

    def flat(self, node: Any, path: str, leaves: dict, types: dict) -> None:
        """Fills `leaves` {jax key path: (kind, value)} and `types` {path: namedtuple name}."""
        if not isinstance(node, dict):
            raise _bad_node(node)
        t = node.get("t")
        if t == "array":
            leaves[path] = ("array", self.leaf_array(node), bool(node.get("scalar")))
            return
        if t in ("none", "bool", "int", "float", "complex", "str"):
            leaves[path] = ("scalar", _decode_scalar(node), False)
            return
        if t == "namedtuple":
            types[path] = str(node.get("type", "")).rsplit(".", 1)[-1]
        for _, piece, child in self.children(node):
            self.flat(child, path + piece, leaves, types)


def _namedtuple_paths(tree: Any, path: str, out: dict) -> None:
    """{jax key path: NamedTuple class name} of the template's NamedTuple nodes."""
    if tree is None:
        return
    if _is_namedtuple(tree):
        out[path] = type(tree).__qualname__.rsplit(".", 1)[-1]
    children = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda y: y is not tree)[0]
    if len(children) == 1 and children[0][0] == () and children[0][1] is tree:
        return  # a leaf
    for (key,), child in children:
        _namedtuple_paths(child, path + str(key), out)


def _match_leaf_scalars_form(like: Any, saved: dict) -> Any:
    """The template with each `core.tree.LeafScalars` node in the form the checkpoint stored it:
    shared (one scalar for every leaf, as `init` makes it) or per leaf (as after steps where some
    leaves had no gradient). Either form of the same state loads into the other's template."""
    def match(key_path, node):
        if not isinstance(node, LeafScalars) or len(node) < 2:
            return node
        base = jax.tree_util.keystr(key_path)
        stored = sum(1 for i in range(len(node)) if f"{base}[{i}]" in saved)
        if node.is_shared and stored == len(node):
            return LeafScalars(node.values)
        if not node.is_shared and stored == 1:
            return LeafScalars.shared(node[0], len(node))
        return node

    return jax.tree_util.tree_map_with_path(match, like, is_leaf=lambda x: isinstance(x, LeafScalars))


def _place(arr: np.ndarray, sharding: Any) -> jax.Array:
    out = jax.device_put(arr, sharding) if sharding is not None else jnp.asarray(arr)
    if out.dtype != arr.dtype:
        raise CheckpointError(
            f"a {arr.dtype} array cannot be loaded as a jax.Array without float64 enabled "
            "(jax.config.update('jax_enable_x64', True) or the jax.enable_x64 context)."
        )
    return out


def _is_sharding(x: Any) -> bool:
    return isinstance(x, jax.sharding.Sharding)


def load(path: str | os.PathLike, like: Any = None, *, shardings: Any = None) -> Any:
    """Reads a checkpoint written by `save`; every byte is checked before anything is returned.

    Without `like`: nested plain containers. dicts (key types and order kept), lists and tuples
    come back as they were saved; NamedTuples and other pytree nodes (HyperparamsDict, ...)
    become dicts of their fields / keys, nodes whose keys are all positions (LeafScalars) lists; arrays are NumPy arrays (bit-exact, any dtype: no
    float64 -> float32 truncation), NumPy scalars NumPy scalars, Python scalars Python scalars.

    With `like` (a template: e.g. `tx.init(params)` or `jax.eval_shape(tx.init, params)`): the
    result has the template's exact pytree structure and types (NamedTuples, chains' tuples,
    HyperparamsDict, None leaves). Leaves are matched by their jax key path
    (`[0].exp_avg['w']`); a missing or extra leaf, a NamedTuple of another type at the same path,
    or an array whose shape or dtype differs from the template's raises CheckpointError naming
    the path. Array leaves become jax.Arrays (NumPy arrays where the template has NumPy arrays).

    `shardings`: a `jax.sharding.Sharding` applied to every array leaf, or (with `like`) a
    pytree with the template's structure whose leaves are Shardings or None (default placement);
    array leaves are `jax.device_put` there.
    """
    path = os.fspath(path)
    header, arrays = _read(path)
    decoder = _Decoder(arrays)
    if like is None:
        if shardings is not None and not _is_sharding(shardings):
            raise CheckpointError("load: a pytree of shardings needs like= (a template) to match it against.")
        result = decoder.plain(header["tree"])
        if shardings is not None:
            result = jax.tree.map(
                lambda x: _place(x, shardings) if isinstance(x, np.ndarray) else x, result,
                is_leaf=lambda x: isinstance(x, np.ndarray),
            )
        return result

    saved, saved_types = {}, {}
    decoder.flat(header["tree"], "", saved, saved_types)
    like = _match_leaf_scalars_form(like, saved)
    template, treedef = jax.tree_util.tree_flatten_with_path(like, is_leaf=lambda x: x is None)
    template_paths = [jax.tree_util.keystr(p) for p, _ in template]
    missing = [p for p in template_paths if p not in saved]
    extra = [p for p in saved if p not in set(template_paths)]
    if missing or extra:
        detail = []
        if missing:
            detail.append(f"missing from the checkpoint: {', '.join(_display(p) for p in missing[:5])}")
        if extra:
            detail.append(f"not in the template: {', '.join(_display(p) for p in extra[:5])}")
        raise CheckpointError(
            f"checkpoint {path} does not have the structure of the template ({'; '.join(detail)})."
        )
    like_types: dict = {}
    _namedtuple_paths(like, "", like_types)
    for p, name in like_types.items():
        if p in saved_types and saved_types[p] != name:
            raise CheckpointError(
                f"checkpoint {path} has a {saved_types[p]} at {_display(p)}, the template a {name}."
            )
    if shardings is None or _is_sharding(shardings):
        sharding_leaves = [shardings] * len(template)
    else:
        try:
            sharding_leaves = treedef.flatten_up_to(_match_leaf_scalars_form(shardings, saved))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"load: shardings do not have the template's structure: {e}") from e

    leaves = []
    for (key_path, ref), p, sharding in zip(template, template_paths, sharding_leaves):
        kind, value, scalar = saved[p]
        where = f"checkpoint {path} leaf {_display(p)}"
        if ref is None:
            if not (kind == "scalar" and value is None):
                raise CheckpointError(f"{where} holds {'an array' if kind == 'array' else repr(value)}, the template None.")
            leaves.append(None)
            continue
        is_array_ref = isinstance(ref, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct))
        if not is_array_ref:
            if kind != "scalar" or type(value) is not type(ref):
                got = "an array" if kind == "array" else f"{type(value).__name__} {value!r}"
                raise CheckpointError(f"{where} holds {got}, the template a {type(ref).__name__}.")
            leaves.append(value)
            continue
        if kind != "array":
            raise CheckpointError(f"{where} holds {value!r}, the template an array.")
        arr = arrays[value]
        ref_shape, ref_dtype = tuple(np.shape(ref)), np.dtype(ref.dtype)
        if arr.shape != ref_shape or arr.dtype != ref_dtype:
            raise CheckpointError(
                f"{where} is {arr.dtype}{list(arr.shape)}, the template expects {ref_dtype}{list(ref_shape)}."
            )
        if isinstance(ref, np.generic) and sharding is None:
            leaves.append(arr[()])
        elif isinstance(ref, np.ndarray) and sharding is None:
            leaves.append(arr)
        else:
            try:
                leaves.append(_place(arr, sharding))
            except CheckpointError as e:
                raise CheckpointError(f"{where}: {e}") from None
    return treedef.unflatten(leaves)


# ---------------------------------------------------------------------------------------------
# torch-format state dicts (optax_like.optim)
# ---------------------------------------------------------------------------------------------


def _is_state_dict(sd: Any) -> bool:
    return isinstance(sd, dict) and isinstance(sd.get("state"), dict) and isinstance(sd.get("param_groups"), list)


def save_state_dict(path: str | os.PathLike, optimizer_or_state_dict: Any) -> None:
    """Saves an `optax_like.optim` optimizer's `state_dict()` (or a state dict itself).

    The state dict's int param ids, tuples (`betas`), None, bools and strings are kept.
    torch tensors in a torch state dict are stored as NumPy arrays (not bfloat16 ones).
    """
    sd = optimizer_or_state_dict
    if callable(getattr(sd, "state_dict", None)):
        sd = sd.state_dict()
    if not _is_state_dict(sd):
        raise TypeError(
            "save_state_dict expects an optimizer or a state dict {'state': {...}, 'param_groups': [...]}, "
            f"got {type(sd).__name__}."
        )
    save(path, sd)


def load_state_dict(path: str | os.PathLike) -> dict:
    """The state dict saved by `save_state_dict`: `{'state': {id: {key: np.ndarray}},
    'param_groups': [...]}`, ready for `optimizer.load_state_dict` (which leaves the optimizer
    unchanged if it rejects it)."""
    sd = load(path)
    if not _is_state_dict(sd):
        raise CheckpointError(f"checkpoint {os.fspath(path)} does not hold an optimizer state dict.")
    return sd
