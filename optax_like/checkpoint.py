"""Checkpoints as safetensors files: pytrees of arrays and Python values, no pickle.

    optax_like.checkpoint.save("opt.safetensors", state)                 # any pytree
    state = optax_like.checkpoint.load("opt.safetensors", like=tx.init(params))
    state = optax_like.checkpoint.load("opt.safetensors", like=jax.eval_shape(tx.init, params))
    tree = optax_like.checkpoint.load("opt.safetensors")                 # nested dicts/lists/tuples

    optax_like.checkpoint.save_state_dict("adam.safetensors", optimizer)  # optax_like.optim adapter
    optimizer.load_state_dict(optax_like.checkpoint.load_state_dict("adam.safetensors"))

A file is a standard safetensors file (https://github.com/huggingface/safetensors), written and
validated by the `safetensors` package. Tensors are named by their tree path (`state/0/exp_avg`,
`0/exp_avg/w`); the file's string metadata holds:

    "format"   "optax_like.checkpoint"
    "version"  "3" (version 2 files are read too)
    "tree"     JSON description of the tree (below); array leaves name their tensor
    "sha256"   JSON object {tensor name: sha256 hex of its bytes}
    "digest"   sha256 of the tensor table (names, dtypes, shapes; version 2: offsets too),
               "tree" and "sha256" (so that any corrupted header byte is detected too; like the
               per-tensor digests, a check against accidents, not a signature)

Complex arrays are stored as real pairs: a float32/float64 tensor with a trailing dimension of
2 (torch's `view_as_real` layout), restored exactly. Here: atomic writes (fsync, os.replace),
and on reading what the package does not check (duplicate JSON keys, NumPy's limits, the tree
description and its counts, the sha256 digests, streamed), before any array is allocated.

Tree description: one JSON object per node, `{"t": kind, ...}` with kind `array` (`"k"`: its
tensor, `"scalar": true` for a NumPy scalar, `"complex": true` for a real pair), `none`, `bool`,
`int` (`"v"`, or `"hex"` beyond 2**63), `float` (exact: `float.hex`, NaN as its IEEE bits),
`complex`, `str`, `list`, `tuple`, `dict` (a list of [key, value] pairs: key types and
insertion order are kept, e.g. the int param ids of a torch state dict), `namedtuple` (type
name, fields, values) and `node` (any other registered pytree node, e.g. `HyperparamsDict` or
`core.leaf_scalars.LeafScalars`: its type name and its children with their keys and jax key path
pieces; `"seq": true` when every key is a `SequenceKey`; `"shared": n` for a `LeafScalars`
holding one scalar for n params).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import shutil
import socket
import struct
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
from jax import core as jax_core
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from optax_like.core.leaf_scalars import LeafScalars, is_leaf_scalars, leaf_scalars_like

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "load",
    "load_state_dict",
    "save",
    "save_state_dict",
]

FORMAT = "optax_like.checkpoint"
FORMAT_VERSION = 3

# NumPy dtype name <-> safetensors dtype code. complex64/complex128 are stored as F32/F64 pairs.
_CODES = {
    "bool": "BOOL", "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64",
    "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64",
    "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ",
}
_DTYPES = {code: np.dtype(getattr(ml_dtypes, name, None) or name) for name, code in _CODES.items()}
_COMPLEX = {"complex64": "float32", "complex128": "float64"}

# Bounds on what a file may claim, checked before anything is allocated.
MAX_HEADER_BYTES = 64 << 20  # the safetensors package allows 100 MB
MAX_DEPTH = 200  # nesting of the tree description (a pytree deeper than this is not a state)
MAX_NDIM = 64  # NumPy's limit
_MAX_BYTES = np.iinfo(np.intp).max  # NumPy's limit on an array's bytes (zero-size arrays included)
_CHUNK = 8 << 20  # bytes hashed per read


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (corrupt, truncated, not a checkpoint, another
    version, claims that do not fit the file), or whose contents do not match the `like=`
    template."""


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
        raise CheckpointError(f"malformed metadata: float {str(s)[:100]!r} is not a string.")
    try:
        if s.startswith("nan:"):
            return struct.unpack("<d", bytes.fromhex(s[4:]))[0]
        return float.fromhex(s)
    except (ValueError, struct.error, OverflowError) as e:
        raise CheckpointError(f"malformed metadata: bad float {s[:100]!r}.") from e


def _encode_scalar(x: Any, path: str) -> dict | None:
    """The node of a Python scalar (also used for dict keys); None when `x` is not one."""
    if x is None:
        return {"t": "none"}
    if isinstance(x, bool):
        return {"t": "bool", "v": x}
    if type(x) is int:
        # hex: Python refuses to print ints over 4300 decimal digits, never hex ones.
        return {"t": "int", "v": x} if -(2**63) <= x < 2**63 else {"t": "int", "hex": hex(x)}
    if type(x) is float:
        return {"t": "float", "v": _encode_float(x)}
    if type(x) is complex:
        return {"t": "complex", "v": [_encode_float(x.real), _encode_float(x.imag)]}
    if type(x) is str:
        try:
            x.encode("utf-8")
        except UnicodeError:  # (JSON readers refuse lone surrogates)
            raise TypeError(f"checkpoint: the str {x[:40]!r} at {_display(path)} is not valid Unicode (a lone surrogate).") from None
        return {"t": "str", "v": x}
    return None


def _encode_key(key: Any, path: str) -> dict:
    node = _encode_scalar(key, path)
    if node is not None and "hex" not in node:
        return node
    if type(key) is tuple:
        return {"t": "tuple", "items": [_encode_key(k, path) for k in key]}
    raise TypeError(
        f"checkpoint: the dict at {_display(path)} has a key {key!r} of type {type(key).__name__}; "
        "keys must be str, int (of 64 bits), float, bool, None or tuples of these."
    )


def _torch_to_numpy(x: Any) -> np.ndarray | None:
    """A torch tensor's values as NumPy (bfloat16 and float8 through their bits), else None."""
    if type(x).__module__.split(".")[0] != "torch" or not hasattr(x, "detach"):
        return None
    import torch  # already imported: x is a torch tensor

    x = x.detach().cpu().contiguous()
    special = {torch.bfloat16: "bfloat16", getattr(torch, "float8_e4m3fn", None): "float8_e4m3fn",
               getattr(torch, "float8_e5m2", None): "float8_e5m2"}
    if x.dtype in special:
        bits = torch.uint16 if x.dtype == torch.bfloat16 else torch.uint8
        return x.view(bits).numpy().view(getattr(ml_dtypes, special[x.dtype]))
    return x.numpy()


def _host_array(x: Any, path: str) -> np.ndarray:
    if isinstance(x, jax.Array):
        if isinstance(x, jax_core.Tracer):
            raise TypeError(f"checkpoint: leaf {_display(path)} is a tracer; save concrete values, outside jit.")
        if not x.is_fully_addressable and not x.is_fully_replicated:
            raise TypeError(
                f"checkpoint: leaf {_display(path)} is sharded over several processes; save "
                "multi-host state with orbax (docs/multi_device.md), or gather it first "
                "(jax.experimental.multihost_utils.process_allgather)."
            )
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            raise TypeError(
                f"checkpoint: leaf {_display(path)} is a typed PRNG key; save jax.random.key_data(key)."
            )
    arr = _torch_to_numpy(x)
    if arr is None:
        try:
            arr = np.asarray(x)
        except Exception as e:  # e.g. a tensor that requires grad
            raise TypeError(f"checkpoint: leaf {_display(path)} ({type(x).__name__}) cannot be read as a NumPy array: {e}") from e
    name = arr.dtype.name
    if arr.dtype.fields is not None or (name not in _CODES and name not in _COMPLEX):
        raise TypeError(
            f"checkpoint: leaf {_display(path)} has dtype {arr.dtype}, which checkpoints do not "
            f"store (supported: {', '.join(sorted([*_CODES, *_COMPLEX]))})."
        )
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else np.array(arr, order="C")  # (ascontiguousarray makes 0-d 1-d)


def _name_piece(key: Any) -> str:
    """One level of a tensor name: a str key as it is, an int as digits, anything else its repr."""
    piece = key if type(key) is str else str(key) if type(key) is int else repr(key)
    return piece.replace("%", "%25").replace("/", "%2F")


class _Encoder:
    def __init__(self):
        self.arrays: list[tuple[str, np.ndarray]] = []  # (tensor name, array)
        self.names: set[str] = set()

    def array(self, x: Any, path: str, name: tuple, scalar: bool) -> dict:
        arr = _host_array(x, path)
        base = "/".join(name) or "<root>"
        tensor, n = base, 0
        while tensor in self.names or tensor == "__metadata__":  # e.g. keys 0 and "0"
            n += 1
            tensor = f"{base}~{n}"
        self.names.add(tensor)
        node: dict[str, Any] = {"t": "array", "k": tensor}
        if arr.dtype.name in _COMPLEX:
            if arr.ndim >= MAX_NDIM:
                raise TypeError(f"checkpoint: leaf {_display(path)} is a complex array of {arr.ndim} dimensions; "
                                f"stored as real pairs it needs one more (the limit is {MAX_NDIM}).")
            flat = arr.reshape(-1).view(np.dtype(_COMPLEX[arr.dtype.name]).newbyteorder("<"))
            arr = flat.reshape(arr.shape + (2,))
            node["complex"] = True
        if scalar:
            node["scalar"] = True
        self.arrays.append((tensor, arr))
        return node

    def encode(self, x: Any, path: str, name: tuple = (), depth: int = 0) -> dict:
        if depth > MAX_DEPTH:
            raise TypeError(f"checkpoint: the tree is nested deeper than {MAX_DEPTH} levels at {_display(path)}.")
        node = _encode_scalar(x, path)
        if node is not None:
            return node
        if isinstance(x, (jax.Array, np.ndarray)):
            return self.array(x, path, name, scalar=False)
        if isinstance(x, np.generic):
            return self.array(x, path, name, scalar=True)
        d = depth + 1
        if type(x) is dict:
            return {"t": "dict", "items": [
                [_encode_key(k, path), self.encode(v, f"{path}[{k!r}]", (*name, _name_piece(k)), d)] for k, v in x.items()
            ]}
        if type(x) in (list, tuple):
            return {"t": type(x).__name__, "items": [
                self.encode(v, f"{path}[{i}]", (*name, str(i)), d) for i, v in enumerate(x)
            ]}
        if _is_namedtuple(x):
            return {"t": "namedtuple", "type": _type_name(type(x)), "fields": list(x._fields),
                    "items": [self.encode(v, f"{path}.{f}", (*name, _name_piece(f)), d) for f, v in zip(x._fields, x)]}
        # Any other registered pytree node (HyperparamsDict, OrderedDict, dataclasses, ...):
        # flatten ONE level with jax's key paths.
        children = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)[0]
        if len(children) == 1 and children[0][0] == () and children[0][1] is x:
            if hasattr(x, "__array__"):
                return self.array(x, path, name, scalar=False)
            raise TypeError(
                f"checkpoint: leaf {_display(path)} is a {type(x).__name__}, which checkpoints do not "
                "store (arrays, None, bool, int, float, complex, str, and dicts, lists, tuples, "
                "NamedTuples or registered pytree nodes of these)."
            )
        items = []
        for (key,), child in children:
            value = _key_value(key)
            items.append({"key": _encode_key(value, path), "piece": str(key),
                          "value": self.encode(child, path + str(key), (*name, _name_piece(value)), d)})
        node = {"t": "node", "type": _type_name(type(x)), "items": items}
        if all(isinstance(key, jax.tree_util.SequenceKey) for (key,), _ in children):
            node["seq"] = True  # read back as a list without `like` (e.g. core.leaf_scalars.LeafScalars)
        if isinstance(x, LeafScalars) and x.is_shared:
            node["shared"] = len(x)
        return node


def _key_value(key: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # (not every platform or file system syncs a directory)
        pass


def _dumps(x: Any) -> str:
    return json.dumps(x, separators=(",", ":"), allow_nan=False)


def _digest(tensors: dict, tree: str, sha: str, version: int = FORMAT_VERSION) -> str:
    """sha256 of the header's content in a canonical form (independent of JSON spacing/order).
    Version 2 also digested the data offsets; version 3 leaves them to the safetensors package,
    which lays the tensors out and checks that the offsets tile the data (a swapped pair of
    offsets fails the tensors' sha256)."""
    table = sorted((k, v["dtype"], v["shape"], *([v["data_offsets"]] if version == 2 else []))
                   for k, v in tensors.items() if k != "__metadata__")
    return hashlib.sha256(_dumps([table, tree, sha]).encode("utf-8")).hexdigest()


def _serialize(tree: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors ({name: little-endian C-contiguous array}) and the string metadata of the
    file. Raises TypeError for unsupported leaves (nothing written yet)."""
    encoder = _Encoder()
    tree_str = _dumps(encoder.encode(tree, ""))
    tensors = dict(encoder.arrays)
    table = {k: {"dtype": _CODES[a.dtype.name], "shape": list(a.shape)} for k, a in tensors.items()}
    # (pyright: an ndarray is a buffer, but numpy types ndarray.__buffer__ only for Python 3.12+)
    sha_str = _dumps({k: hashlib.sha256(a.reshape(-1).view(np.uint8)).hexdigest()  # pyright: ignore[reportArgumentType]
                      for k, a in tensors.items()})
    return tensors, {"format": FORMAT, "version": str(FORMAT_VERSION), "tree": tree_str, "sha256": sha_str,
                     "digest": _digest(table, tree_str, sha_str)}


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}.{socket.gethostname()}."


def _remove_stale_temps(path: str) -> None:
    """Removes the temporary directories (files, from earlier versions) that crashed `save`s of
    `path` on this host left behind: those whose writer's pid is gone."""
    directory, prefix = os.path.dirname(os.path.abspath(path)), _temp_prefix(path)
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive: a concurrent save
        except ProcessLookupError:
            pass
        except OSError:
            continue  # alive, another user's
        _remove_quietly(os.path.join(directory, name))


def _remove_quietly(path: str) -> None:
    try:
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    except OSError:
        pass


def save(path: str | os.PathLike, tree: Any) -> None:
    """Writes `tree` to the safetensors file `path`, atomically.

    `tree` is any pytree whose leaves are arrays (jax.Array, np.ndarray, NumPy scalars, torch
    tensors; dtypes bool, (u)int8-64, float16, bfloat16, float32, float64, complex64,
    complex128, float8 e4m3fn/e5m2/e4m3fnuz/e5m2fnuz) or Python values (None, bool, int,
    float, complex, str), in dicts (keys: str, int, float, bool, None, tuples), lists, tuples,
    NamedTuples or other registered pytree nodes. Bytes are stored exactly (NaN payloads, -0.0,
    bfloat16 included); Python floats and ints of any size exactly too.

    The safetensors package writes the file into a private temporary directory beside `path`;
    it is fsync'ed and only then renamed over `path` (`os.replace`), and the directory is
    fsync'ed: a crash or an error mid-write leaves any previous file at `path` intact and no
    partial file (a crash leaves the temporary directory, which the next `save` to `path`
    removes). Unsupported leaves raise TypeError naming their path before anything is written.
    """
    path = os.fspath(path)
    tensors, metadata = _serialize(tree)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temps(path)
    tmp_dir = os.path.join(directory, f"{_temp_prefix(path)}{os.getpid()}.{os.urandom(6).hex()}.tmp")
    os.mkdir(tmp_dir)  # (its mode shows the umask: no os.umask call, which would race with threads)
    try:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = os.stat(tmp_dir).st_mode & 0o666
        os.chmod(tmp_dir, 0o700)
        tmp = os.path.join(tmp_dir, "checkpoint.safetensors")
        safetensors.numpy.save_file(tensors, tmp, metadata=metadata)
        fd = os.open(tmp, os.O_RDWR)
        try:
            if struct.unpack("<Q", os.pread(fd, 8, 0))[0] > MAX_HEADER_BYTES:  # (what `load` would refuse)
                raise ValueError(f"checkpoint: the tree's description exceeds the {MAX_HEADER_BYTES}-byte header "
                                 "limit of a checkpoint file (too many leaves or too long strings).")
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        _remove_quietly(tmp_dir)
    _fsync_dir(directory)


# ---------------------------------------------------------------------------------------------
# Load: the safetensors package validates the layout, then every claim is checked before
# anything is allocated
# ---------------------------------------------------------------------------------------------


_Entry = collections.namedtuple("_Entry", "name dtype shape begin end")  # a tensor of the header


def _unique_keys(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        raise ValueError(f"duplicate key {next(k for k, _ in pairs if k in seen or seen.add(k))[:100]!r}")
    return out


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _json(raw: bytes | str, what: str, path: str) -> Any:
    """Strict JSON, as the reference reader parses it: UTF-8 only, no duplicate keys, no
    NaN/Infinity, no lone surrogate escapes."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_not_json)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot be encoded
        return value
    except RecursionError:
        raise CheckpointError(f"checkpoint {path} has a malformed {what}: nested too deeply.") from None
    except ValueError as e:  # JSONDecodeError, UnicodeError, duplicates, ints over 4300 digits
        raise CheckpointError(f"checkpoint {path} has a malformed {what}: {str(e)[:200]}.") from None


def _uints(x: Any, n: int | None = None) -> bool:
    return type(x) is list and (n is None or len(x) == n) and all(type(d) is int and 0 <= d < 2**64 for d in x)


def _read_header(f, size: int, path: str) -> tuple[int, dict, list[_Entry], dict]:
    """(data start, metadata, tensor entries sorted by offset, {name: sha256}), all checked: each
    entry here (naming its tensor), the layout by the safetensors package (offsets that tile the
    data up to the file's end)."""
    def bad(msg: str) -> NoReturn:
        raise CheckpointError(f"checkpoint {path} has a malformed header: {msg}.")

    prefix = f.read(8)
    if len(prefix) < 8:
        raise CheckpointError(f"checkpoint {path} is truncated: {size} bytes, not a safetensors file.")
    if prefix == b"\x93OLCKPT\n":
        raise CheckpointError(
            f"checkpoint {path} has the earlier optax_like format (version 1, never released), which "
            "this version does not read: load it with the optax_like that wrote it and save it again."
        )
    (n,) = struct.unpack("<Q", prefix)
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"checkpoint {path} is not a safetensors file, or is corrupted: its header claims "
            f"{n} bytes (the limit is {MAX_HEADER_BYTES})."
        )
    raw = f.read(n) if 8 + n <= size else b""  # (no allocation for a claim the file cannot hold)
    if len(raw) != n:
        raise CheckpointError(f"checkpoint {path} is truncated: {size} bytes, the header alone needs {8 + n}.")
    if not raw.startswith(b"{"):
        raise CheckpointError(f"checkpoint {path} is not a safetensors file (its header is not a JSON object).")
    header = _json(raw, "header", path)
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is a safetensors file but not an optax_like checkpoint (no '{FORMAT}' metadata).")
    if meta.get("version") not in ("2", str(FORMAT_VERSION)):
        raise CheckpointError(
            f"checkpoint {path} has format version {str(meta.get('version'))[:20]!r}; this optax_like reads "
            f"versions 2 and {FORMAT_VERSION}."
        )
    if not all(type(v) is str for v in meta.values()) or not all(k in meta for k in ("tree", "sha256", "digest")):
        bad("the metadata must be strings, with 'tree', 'sha256' and 'digest'")
    entries = []
    for name, e in header.items():
        if not (isinstance(e, dict) and _uints(e.get("shape")) and _uints(e.get("data_offsets"), 2)):
            bad(f"tensor {name[:100]!r} is not {{dtype, shape, data_offsets}}: {str(e)[:200]}")
        dtype, shape, (begin, end) = _DTYPES.get(str(e.get("dtype"))), e["shape"], e["data_offsets"]
        if dtype is None:
            bad(f"tensor {name[:100]!r} has unsupported dtype {str(e.get('dtype'))[:40]!r}")
        if len(shape) > MAX_NDIM or math.prod(d for d in shape if d) * dtype.itemsize > _MAX_BYTES:
            bad(f"tensor {name[:100]!r} has a shape {str(shape)[:100]} that NumPy cannot hold")
        if end - begin != math.prod(shape) * dtype.itemsize:
            bad(f"tensor {name[:100]!r}: data_offsets {[begin, end]} hold {end - begin} bytes, "
                f"{e['dtype']}{shape} needs {math.prod(shape) * dtype.itemsize}")
        entries.append(_Entry(name, dtype, tuple(shape), begin, end))
    entries.sort(key=lambda e: (e.begin, e.end))
    data_start = 8 + n
    try:  # the reference reader: the header again, and offsets that tile the data up to the file's end
        fd_path = f"/proc/self/fd/{f.fileno()}"  # (this file even if `path` is replaced meanwhile)
        with safetensors.safe_open(fd_path if os.path.exists(fd_path) else path, framework="numpy"):
            pass
    except Exception as error:  # safetensors.SafetensorError
        end = data_start + max((e.end for e in entries), default=0)
        if "incomplete metadata" not in str(error) or end == size:
            bad(str(error).removeprefix("Error while deserializing header: ")[:300])
        if end < size:
            raise CheckpointError(f"checkpoint {path} is corrupted: {size} bytes, expected {end} ({size - end} trailing bytes).") from None
        missing = [e.name for e in entries if data_start + e.end > size]
        raise CheckpointError(
            f"checkpoint {path} is truncated: {size} bytes, expected {end} "
            f"(tensors incomplete: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})."
        ) from None
    if _digest(header, meta["tree"], meta["sha256"], int(meta["version"])) != meta["digest"]:
        raise CheckpointError(f"checkpoint {path} is corrupted: its header fails its sha256 digest.")
    sha = _json(meta["sha256"], "metadata (sha256)", path)
    if not isinstance(sha, dict) or set(sha) != {e.name for e in entries} or not all(
        type(v) is str and len(v) == 64 for v in sha.values()
    ):
        bad("the 'sha256' metadata does not list one digest per tensor")
    return data_start, meta, entries, sha


def _verify(f, data_start: int, entries: list[_Entry], sha: dict, path: str) -> None:
    """Streams every tensor's bytes through sha256 (bounded memory) and compares."""
    f.seek(data_start)
    for e in entries:
        h, left = hashlib.sha256(), e.end - e.begin
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                raise CheckpointError(f"checkpoint {path} is truncated: tensor {e.name} is incomplete (the file shrank while read).")
            h.update(chunk)
            left -= len(chunk)
        if h.hexdigest() != sha[e.name]:
            raise CheckpointError(
                f"checkpoint {path} is corrupted: tensor {e.name} ({e.dtype}{list(e.shape)}) fails its sha256 checksum."
            )


def _read_array(f, data_start: int, e: _Entry, path: str) -> np.ndarray:
    out = np.empty(e.shape, e.dtype.newbyteorder("<"))
    view = out.reshape(-1).view(np.uint8)
    f.seek(data_start + e.begin)
    # (pyright: an ndarray is a buffer, but numpy types ndarray.__buffer__ only for Python 3.12+)
    got = f.readinto(memoryview(view)) if view.size else 0  # pyright: ignore[reportArgumentType]
    if got != view.size:
        raise CheckpointError(f"checkpoint {path} is truncated: tensor {e.name} is incomplete (the file shrank while read).")
    return out


def _bad_node(node: Any) -> CheckpointError:
    return CheckpointError(f"malformed metadata: bad tree node {str(node)[:200]}.")


def _decode_scalar(node: dict) -> Any:
    t = node.get("t")
    if t == "none":
        return None
    v = node.get("v")
    if t == "bool" and type(v) is bool:
        return v
    if t == "int" and type(v) is int:
        return v
    if t == "int" and type(node.get("hex")) is str:
        try:
            return int(node["hex"], 16)
        except ValueError:
            raise _bad_node(node) from None
    if t == "float":
        return _decode_float(v)
    if t == "complex" and isinstance(v, list) and len(v) == 2:
        return complex(_decode_float(v[0]), _decode_float(v[1]))
    if t == "str" and type(v) is str:
        return v
    raise _bad_node(node)


def _decode_key(node: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH or not isinstance(node, dict):
        raise _bad_node(node)
    if node.get("t") == "tuple" and isinstance(node.get("items"), list):
        return tuple(_decode_key(k, depth + 1) for k in node["items"])
    if "hex" in node:  # keys are ints of 64 bits (their repr is part of a key path)
        raise _bad_node(node)
    key = _decode_scalar(node)
    try:
        hash(key)
    except TypeError:  # pragma: no cover - scalars are hashable
        raise _bad_node(node) from None
    return key


_SCALARS = ("none", "bool", "int", "float", "complex", "str")


class _Decoder:
    """Walks the tree description; array leaves refer to the header's tensors by name."""

    def __init__(self, entries: dict[str, _Entry], budget: int | None):
        self.entries = entries
        self.used: set[str] = set()
        self.paths: set[str] = set()
        self.size = self.budget = budget  # bytes `plain` may build from shared per-param scalars: the file's size

    def tensor(self, node: dict) -> tuple[str, tuple, np.dtype, bool]:
        """(name, shape, dtype, scalar) of an array node, as the template sees it (complex)."""
        k = node.get("k")
        if type(k) is not str or k not in self.entries or k in self.used:
            raise _bad_node(node)
        self.used.add(k)
        e = self.entries[k]
        shape, dtype = e.shape, e.dtype
        if node.get("complex") is True:
            if not shape or shape[-1] != 2 or dtype.name not in ("float32", "float64"):
                raise _bad_node(node)
            shape, dtype = shape[:-1], np.dtype(np.complex64 if dtype.name == "float32" else np.complex128)
        scalar = node.get("scalar") is True
        if scalar and shape != ():
            raise _bad_node(node)
        return k, shape, dtype, scalar

    def children(self, node: dict, depth: int) -> list[tuple[Any, str, Any]]:
        """(key for the plain-dict form, jax key path piece, child node) of a container node."""
        t, items = node.get("t"), node.get("items")
        if not isinstance(items, list) or depth > MAX_DEPTH:
            raise _bad_node(node) if depth <= MAX_DEPTH else CheckpointError(
                f"malformed metadata: the tree is nested deeper than {MAX_DEPTH} levels.")
        if t in ("list", "tuple"):
            return [(i, f"[{i}]", c) for i, c in enumerate(items)]
        if t == "dict":
            if not all(isinstance(pair, list) and len(pair) == 2 for pair in items):
                raise _bad_node(node)
            out = [(k, f"[{k!r}]", v) for k, v in ((_decode_key(k), v) for k, v in items)]
        elif t == "namedtuple":
            fields = node.get("fields")
            if not isinstance(fields, list) or len(fields) != len(items) or not all(type(f) is str for f in fields):
                raise _bad_node(node)
            out = [(f, f".{f}", c) for f, c in zip(fields, items)]
        elif t == "node":
            if not all(isinstance(item, dict) and type(item.get("piece")) is str for item in items):
                raise _bad_node(node)
            out = [(_decode_key(item.get("key")), item["piece"], item.get("value")) for item in items]
        else:
            raise _bad_node(node)
        keys = set()
        for k, _, _ in out:  # equal keys (1, 1.0 and True) would merge
            if k in keys:
                raise CheckpointError(f"malformed metadata: a {t} holds the key {repr(k)[:100]} twice (or keys equal in Python, as 1 and True).")
            keys.add(k)
        return out

    def walk(self, node: Any, path: str, leaves: dict, info: dict, depth: int = 0) -> None:
        """Fills `leaves` {jax key path: ('array', tensor, scalar) | ('scalar', value, False)} and
        `info` {path: ('namedtuple', type name) | ('shared', n) | ('per_leaf', n)}."""
        if not isinstance(node, dict):
            raise _bad_node(node)
        if path in self.paths:  # e.g. node pieces that repeat
            raise CheckpointError(f"malformed metadata: two entries at the path {_display(path)[:100]}.")
        self.paths.add(path)
        t = node.get("t")
        if t == "array":
            leaves[path] = ("array", self.tensor(node), False)
            return
        if t in _SCALARS:
            leaves[path] = ("scalar", _decode_scalar(node), False)
            return
        kids = self.children(node, depth)
        if t == "namedtuple":
            info[path] = ("namedtuple", str(node.get("type", "")).rsplit(".", 1)[-1])
        leaf_scalars = t == "node" and str(node.get("type", "")).endswith(".LeafScalars")
        n = node.get("shared")
        if n is not None and not (leaf_scalars and node.get("seq") is True and type(n) is int and n >= 1 and len(kids) == 1):
            raise _bad_node(node)
        if leaf_scalars:
            info[path] = ("shared", n) if n is not None else ("per_leaf", len(kids))
        for _, piece, child in kids:
            self.walk(child, path + piece, leaves, info, depth + 1)
        if n is not None and self.budget is not None:  # `plain` builds n copies of the scalar
            kind, value, _ = leaves.get(path + kids[0][1], (None, None, None))
            self.budget -= n * max(1, math.prod(value[1]) * value[2].itemsize if kind == "array" else 1)
            if self.budget < 0:
                raise CheckpointError(
                    f"malformed metadata: the per-param scalars at {_display(path)} claim {n} params, more "
                    f"copies than the file's {self.size} bytes hold (with like=, the template bounds them)."
                )

    def plain(self, node: Any, arrays: dict, depth: int = 0) -> Any:
        """Nested dicts/lists/tuples: NamedTuples and other nodes become dicts."""
        if not isinstance(node, dict):
            raise _bad_node(node)
        t = node.get("t")
        if t == "array":
            arr = arrays[node["k"]]
            return arr[()] if node.get("scalar") is True else arr
        if t in _SCALARS:
            return _decode_scalar(node)
        kids = self.children(node, depth)
        values = [(k, self.plain(c, arrays, depth + 1)) for k, _, c in kids]
        if t == "list" or (t == "node" and node.get("seq") is True):
            out = [v for _, v in values]
            if "shared" in node:  # (checked by `walk`)
                out = [out[0].copy() if isinstance(out[0], np.ndarray) else out[0] for _ in range(node["shared"])]
            return out
        if t == "tuple":
            return tuple(v for _, v in values)
        return dict(values)


def _as_complex(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if arr.dtype == dtype:
        return arr
    return arr.reshape(-1).view(dtype.newbyteorder("<")).reshape(arr.shape[:-1])


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


def _match_leaf_scalars(like: Any, saved: dict, info: dict, path: str) -> tuple[set, list]:
    """Per-param scalars (`core.leaf_scalars.LeafScalars`) are shared or per leaf from `init` on. A
    shared one loads into a per-leaf template (each leaf gets the value: exact; `saved` gets the
    template's paths); per-leaf values into a shared template are refused. Returns the saved
    paths to leave out of the structure comparison and the errors to raise if the structures
    otherwise agree (the first differing path says more about another optimizer or tree)."""
    ignore, errors = set(), []

    def check(key_path, node):
        if not isinstance(node, LeafScalars):
            return node
        base = jax.tree_util.keystr(key_path)
        kind, n = info.get(base, (None, None))
        if kind == "shared" and n != len(node):
            errors.append(f"checkpoint {path} holds per-param scalars for {n} params at {_display(base)}, the template {len(node)}.")
        elif kind == "shared" and not node.is_shared:
            for i in range(1, n):
                saved[f"{base}[{i}]"] = saved[f"{base}[0]"]
        elif kind == "per_leaf" and node.is_shared:
            ignore.update(f"{base}[{i}]" for i in range(1, n))
            errors.append(
                f"checkpoint {path} stores the per-param scalars at {_display(base)} one per param "
                "(a state made with optax_like.per_leaf_scalars), the template shares one: load it "
                "with like=optax_like.per_leaf_scalars(template)."
            )
        return node

    jax.tree_util.tree_map_with_path(check, like, is_leaf=is_leaf_scalars)
    return ignore, errors


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

    Before any array is allocated, the header's claims are checked against the file (by the
    safetensors package: offsets that tile the data exactly up to the file's size; here: strict
    JSON, each tensor's dtype, shape and size), then the metadata's tree (each tensor used once,
    no entry twice, counts bounded by the file) and, with `like`, the template's structure,
    shapes and dtypes; then every tensor's bytes are streamed through sha256 and compared. So a
    file cannot make `load` allocate more than the file holds (with `like`, more than the
    template's arrays). Any problem raises `CheckpointError` (a ValueError) saying what, and where.

    Without `like`: nested plain containers. dicts (key types and order kept), lists and tuples
    come back as they were saved; NamedTuples and other pytree nodes (HyperparamsDict, ...)
    become dicts of their fields / keys, nodes whose keys are all positions lists
    (`LeafScalars`: one entry per param, a shared scalar repeated); arrays are NumPy arrays
    (bit-exact, any dtype: no float64 -> float32 truncation), NumPy scalars NumPy scalars,
    Python scalars Python scalars.

    With `like` (a template: e.g. `tx.init(params)` or `jax.eval_shape(tx.init, params)`): the
    result has the template's exact pytree structure and types (NamedTuples, chains' tuples,
    HyperparamsDict, None leaves). Leaves are matched by their jax key path
    (`[0].exp_avg['w']`); a missing or extra leaf, a NamedTuple of another type at the same path,
    or an array whose shape or dtype differs from the template's raises CheckpointError naming
    the path. Per-param scalars (`LeafScalars`) saved shared load into a template of either
    form; saved per param they need a per-param template (`optax_like.per_leaf_scalars`).
    Array leaves become jax.Arrays (NumPy arrays where the template has NumPy arrays).

    `shardings`: a `jax.sharding.Sharding` applied to every array leaf, or (with `like`) a
    pytree with the template's structure whose leaves are Shardings or None (default placement);
    array leaves are `jax.device_put` there (in several processes, each places its own shards).
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory (an orbax checkpoint? restore it with orbax).") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        data_start, meta, entries, sha = _read_header(f, size, path)
        tree = _json(meta["tree"], "metadata (tree)", path)
        by_name = {e.name: e for e in entries}
        decoder = _Decoder(by_name, budget=size if like is None else None)
        saved, info = {}, {}
        try:
            decoder.walk(tree, "", saved, info)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {path} has {e}") from None
        except RecursionError:
            raise CheckpointError(f"checkpoint {path} has malformed metadata: the tree is nested too deeply.") from None
        if decoder.used != set(by_name):
            unused = sorted(set(by_name) - decoder.used)
            raise CheckpointError(f"checkpoint {path} has malformed metadata: tensors not in the tree: {', '.join(unused[:5])}.")

        if like is None:
            if shardings is not None and not _is_sharding(shardings):
                raise CheckpointError("load: a pytree of shardings needs like= (a template) to match it against.")
            _verify(f, data_start, entries, sha, path)
            arrays = {}
            for e in entries:
                arrays[e.name] = _read_array(f, data_start, e, path)
            for kind, tensor, _ in saved.values():
                if kind == "array":
                    arrays[tensor[0]] = _as_complex(arrays[tensor[0]], tensor[2])
            result = decoder.plain(tree, arrays)
            if shardings is not None:
                result = jax.tree.map(
                    lambda x: _place(x, shardings) if isinstance(x, np.ndarray) else x, result,
                    is_leaf=lambda x: isinstance(x, np.ndarray),
                )
            return result

        treedef, plan = _plan(like, saved, info, shardings, path)
        _verify(f, data_start, entries, sha, path)
        loaded: dict = {}
        leaves = []
        for item in plan:
            if item[0] != "array":
                leaves.append(item[1])
                continue
            _, (k, _, dtype, _), ref, sharding, where = item
            if k not in loaded:
                loaded[k] = _as_complex(_read_array(f, data_start, by_name[k], path), dtype)
            arr = loaded[k]
            if isinstance(ref, np.generic) and sharding is None:
                leaves.append(arr[()])
            elif isinstance(ref, np.ndarray) and sharding is None:
                leaves.append(arr.copy() if any(x is arr for x in leaves) else arr)
            else:
                try:
                    leaves.append(_place(arr, sharding))
                except CheckpointError as e:
                    raise CheckpointError(f"{where}: {e}") from None
        return treedef.unflatten(leaves)


def _plan(like: Any, saved: dict, info: dict, shardings: Any, path: str) -> tuple[Any, list]:
    """Matches the file's leaves to the template's (no data read): the template's treedef and
    one item per template leaf, ('value', python value) or ('array', tensor, ref, sharding, where)."""
    ignore, errors = _match_leaf_scalars(like, saved, info, path)
    template, treedef = jax.tree_util.tree_flatten_with_path(like, is_leaf=lambda x: x is None)
    template_paths = [jax.tree_util.keystr(p) for p, _ in template]
    known = set(template_paths) | ignore
    missing = [p for p in template_paths if p not in saved]
    extra = [p for p in saved if p not in known]
    if missing or extra:
        detail = []
        if missing:
            detail.append(f"missing from the checkpoint: {', '.join(_display(p) for p in missing[:5])}")
        if extra:
            detail.append(f"not in the template: {', '.join(_display(p) for p in extra[:5])}")
        raise CheckpointError(
            f"checkpoint {path} does not have the structure of the template ({'; '.join(detail)})."
        )
    if errors:
        raise CheckpointError(errors[0])
    like_types: dict = {}
    _namedtuple_paths(like, "", like_types)
    for p, name in like_types.items():
        kind, saved_name = info.get(p, (None, None))
        if kind == "namedtuple" and saved_name != name:
            raise CheckpointError(
                f"checkpoint {path} has a {saved_name} at {_display(p)}, the template a {name}."
            )
    if shardings is None or _is_sharding(shardings):
        sharding_leaves = [shardings] * len(template)
    else:
        try:
            sharding_leaves = treedef.flatten_up_to(leaf_scalars_like(shardings, like))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"load: shardings do not have the template's structure: {e}") from e

    plan = []
    for (_, ref), p, sharding in zip(template, template_paths, sharding_leaves):
        kind, value, _ = saved[p]
        where = f"checkpoint {path} leaf {_display(p)}"
        if ref is None:
            if not (kind == "scalar" and value is None):
                raise CheckpointError(f"{where} holds {'an array' if kind == 'array' else repr(value)[:100]}, the template None.")
            plan.append(("value", None))
            continue
        if not isinstance(ref, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)):
            if kind != "scalar" or type(value) is not type(ref):
                got = "an array" if kind == "array" else f"{type(value).__name__} {repr(value)[:100]}"
                raise CheckpointError(f"{where} holds {got}, the template a {type(ref).__name__}.")
            plan.append(("value", value))
            continue
        if kind != "array":
            raise CheckpointError(f"{where} holds {repr(value)[:100]}, the template an array.")
        _, shape, dtype, _ = value
        ref_shape, ref_dtype = tuple(np.shape(ref)), np.dtype(ref.dtype)
        if shape != ref_shape or dtype != ref_dtype:
            raise CheckpointError(
                f"{where} is {dtype}{list(shape)}, the template expects {ref_dtype}{list(ref_shape)}."
            )
        plan.append(("array", value, ref, sharding, where))
    return treedef, plan


# ---------------------------------------------------------------------------------------------
# torch-format state dicts (optax_like.optim)
# ---------------------------------------------------------------------------------------------


def _is_state_dict(sd: Any) -> bool:
    return isinstance(sd, dict) and isinstance(sd.get("state"), dict) and isinstance(sd.get("param_groups"), list)


def save_state_dict(path: str | os.PathLike, optimizer_or_state_dict: Any) -> None:
    """Saves an `optax_like.optim` optimizer's `state_dict()` (or a state dict itself, torch's
    included) as a safetensors file whose tensors are named `state/<param id>/<key>`.

    The state dict's int param ids, tuples (`betas`), None, bools and strings are kept (in the
    file's metadata). `safetensors.torch.load_file(path)` reads the tensors anywhere;
    `optax_like.interop.torch.to_torch_state_dict(load_state_dict(path), target=model)` is a state dict that
    `torch.optim` loads.
    """
    sd = optimizer_or_state_dict
    if callable(getattr(sd, "state_dict", None)):
        sd = sd.state_dict()
    if not _is_state_dict(sd):
        raise TypeError(
            "save_state_dict expects an optimizer or a state dict {'state': {...}, 'param_groups': [...]}, "
            f"got {type(sd).__name__}."
        )
    save(path, dict(sd))  # (optimizer.state_dict() is a dict subclass: stored as a plain dict)


def load_state_dict(path: str | os.PathLike) -> dict:
    """The state dict saved by `save_state_dict`: `{'state': {id: {key: np.ndarray}},
    'param_groups': [...]}`, ready for `optimizer.load_state_dict` (which leaves the optimizer
    unchanged if it rejects it)."""
    sd = load(path)
    if not _is_state_dict(sd):
        raise CheckpointError(f"checkpoint {os.fspath(path)} does not hold an optimizer state dict.")
    return sd
