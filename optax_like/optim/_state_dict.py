"""The one converter between functional optimizer states and torch's per-param state dicts.

torch keeps `optimizer.state[p] = {'step': tensor(3.), 'exp_avg': tensor(...), ...}` per param;
the functional state of a param group is a tree of NamedTuples whose types declare, once, how
their fields map to those entries (`core.torch_layout.declare_torch_state`). This module reads
the declarations and nothing else: no field names, shapes or dtypes are guessed.

- `export_state(state, ...)`: per-param dicts. Buffers (params-shaped fields) per param under the
  field's name; per-param scalars (`LeafScalars`) in torch's type (`step`: 0-d float32; SparseAdam's
  Python int; `mu_product`, `eta`, `mu`: 0-d float32); declared `none_keys` as None (timm's
  SGDW without momentum: `{'momentum_buffer': None}`); internal fields not at all. A param
  appears once its declared `started` counter is > 0 (torch creates state at the first gradient),
  or always for states that exist from construction (Adagrad); a declared `always` scalar is
  exported for every param (timm Adahessian's 'hessian step', set in its constructor), and a field
  with a declared `torch_keys` name under that key. Internal `FRESH` fields load as `init` made them.
- `import_state(fresh, per_param, ...)`: `fresh` (an init state) with loaded entries written in,
  after checking every entry against what torch's next step needs; internal fields are rebuilt
  by their declared rule. Pure: a refusal leaves nothing changed, and every message names the
  param id and the key.
- A state declared global (`export`/`load`: torch's LBFGS) is one dict under the group's first
  param: exported there, loaded from there by its declared functions; entries under other
  params are refused, naming them; its keys are checked by its `load`, not by `check_keys`.
- A state declared in group form (`group=GroupEntries(...)`: schedulefree's `k`, `weight_sum`)
  is entries of the param group: `export_group_entries` / `import_group_entries` (the
  state_dict's `param_groups[i]`) and `group_view` (the live group's device values); the
  per-param functions above leave it alone.
- Buffers declared `quantized` (torchao's low-bit Adam): a quantized leaf is exported as a
  `QuantizedTensor` (its codec's `export`) and loads from one (or from torchao's tensor subclass,
  read through optax_like.interop.torchao) of the same format, table, block size and shape as
  the fresh state's, refused otherwise naming the param and the key; a plain leaf of the field
  stays an array both ways. Declared `tensor_group_entries` / `attribute_group_entries` tell
  optax_like.interop.torch which group entries the reference keeps as tensors or not at all.
- `host_array` (defined in `core.torch_layout`): torch tensors (bfloat16 and float16 included),
  NumPy and JAX arrays and Python numbers as NumPy arrays (always a copy: torch keeps updating
  its tensors in place).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence, cast

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core.torch_layout import (
    BOOL,
    FLOAT,
    FLOAT32,
    FRESH,
    INT_STEP,
    STARTED,
    STEP,
    STEPS_TAKEN,
    QuantizedCodec,
    QuantizedTensor,
    TorchLayout,
    host_array,
    torch_layout_of,
)
from optax_like.core.leaf_scalars import LeafScalars, leaf_scalars_like

__all__ = [
    "check_group",
    "check_keys",
    "construction_args",
    "copy_arrays",
    "export_group_entries",
    "export_state",
    "expected_keys",
    "group_keys",
    "group_view",
    "host_array",
    "import_group_entries",
    "lazy_keys",
    "import_state",
    "loaded_entries",
    "plain",
    "attribute_group_entries",
    "tensor_group_entries",
]

_STEP_KINDS = (STEP, INT_STEP)
_MAX_STEP = int(np.iinfo(np.int32).max)  # the functional step counters are int32


# ---------------------------------------------------------------------------------- walking
def _declared_nodes(state: Any, strict: bool = True) -> list[tuple[Any, TorchLayout]]:
    """Every declared state node of `state` (depth first), with its layout. Containers
    (undeclared NamedTuples, tuples, lists, dicts) are looked into; with `strict`, an array
    outside any declared node is an error naming its field (a state type without a declaration)."""
    out = []

    def visit(node, where):
        layout = torch_layout_of(node)
        if layout is not None:
            out.append((node, layout))
        elif isinstance(node, tuple) and hasattr(node, "_fields"):
            for name, child in zip(getattr(node, "_fields"), node):
                visit(child, f"{type(node).__name__}.{name}")
        elif isinstance(node, (tuple, list)):
            for child in node:
                visit(child, where)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child, where)
        elif node is not None and strict:
            raise TypeError(
                f"optimizer state field {where} holds a {type(node).__name__} outside any state type "
                "that declares its torch mapping (core.torch_layout.declare_torch_state)"
            )

    visit(state, "state")
    return out


def _rebuild(state: Any, replace: Callable[[Any, TorchLayout], Any]) -> Any:
    """`state` with each declared node replaced by `replace(node, layout)`."""
    layout = torch_layout_of(state)
    if layout is not None:
        return replace(state, layout)
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_rebuild(c, replace) for c in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_rebuild(c, replace) for c in state)
    if isinstance(state, dict):
        return type(state)({k: _rebuild(c, replace) for k, c in state.items()})
    return state


def _present(leaves: Sequence) -> list[int]:
    """Positions of the group's optimized (non-None) leaves: param i of the group is leaf present[i]."""
    return [i for i, leaf in enumerate(leaves) if leaf is not None]


def _scalar_values(node: LeafScalars) -> list:
    """The per-param values of a `LeafScalars` as host scalars (one device read when shared)."""
    if node.is_shared:
        return [np.asarray(node[0])] * len(node)
    return [np.asarray(v) for v in node.values]


def _started(node: Any, layout: TorchLayout, n: int, every_param: bool) -> list[bool]:
    if layout.started is None or every_param:
        return [True] * n
    return [bool(v > 0) for v in _scalar_values(getattr(node, layout.started))]


# ---------------------------------------------------------------------------------- export
def export_state(state: Any, treedef, leaves: Sequence, every_param: bool = False) -> list[dict]:
    """Per-param torch-style dicts of a group's state (the live buffers, not copies).

    `treedef`/`leaves`: the group's params structure and current leaves (None = not optimized).
    `every_param`: as if every param had started (the keys a stepped param has)."""
    present = _present(leaves)
    n = len(present)
    out = [dict() for _ in range(n)]
    for node, layout in _declared_nodes(state):
        if layout.is_group:  # param group entries (export_group_entries)
            continue
        if layout.is_global:  # one dict under the group's first param (torch's LBFGS)
            assert layout.export is not None  # (the global form has both)
            if n and not every_param:
                out[0].update(layout.export(node))
            continue
        started = _started(node, layout, n, every_param)
        for name in layout.buffers:
            buffers = treedef.flatten_up_to(getattr(node, name))
            codec = layout.quantized.get(name)
            for i, leaf_index in enumerate(present):
                if started[i] and buffers[leaf_index] is not None:
                    buffer = buffers[leaf_index]
                    if codec is not None and isinstance(buffer, codec.node_type):  # a QuantizedTensor
                        buffer = codec.export(buffer, leaves[leaf_index])
                    elif name in layout.buffer_dtypes and buffer.dtype != layout.buffer_dtypes[name]:
                        buffer = buffer.astype(layout.buffer_dtypes[name])  # the reference's dtype
                    elif name in layout.lists:  # a tuple of arrays: the reference's list (timm Kron's Q)
                        buffer = list(buffer)
                    if name in layout.negated:  # held with the opposite sign (timm Adan's neg_pre_grad)
                        buffer = jnp.negative(cast(jax.Array, buffer))  # (declared plain: no codec, no list)
                    out[i][layout.key(name)] = buffer
        for name in layout.none_keys:
            for i in range(n):
                if started[i]:
                    out[i][name] = None
        for name, kind in layout.scalars.items():
            values = getattr(node, name)
            if values is None:  # an option that is off (NvNovoGrad's max_exp_avg_sq without amsgrad)
                continue
            exported = {}  # a shared scalar is converted once
            owner = layout.scalars_with.get(name)  # only beside that buffer (timm Muon's `step`)
            owned = None if owner is None else treedef.flatten_up_to(getattr(node, owner))
            always = name in layout.always  # from construction (timm Adahessian's 'hessian step')
            for i in range(n):
                if (started[i] or always) and (owned is None or owned[present[i]] is not None):
                    v = values[i]
                    if id(v) not in exported:
                        exported[id(v)] = (int(v) if kind == INT_STEP else float(v) if kind == FLOAT
                                           else bool(v) if kind == BOOL else v.astype(jnp.float32))
                    out[i][layout.key(name)] = exported[id(v)]
    return out


def expected_keys(fresh: Any, treedef, leaves: Sequence) -> list[dict[str, bool]] | None:
    """The keys each param of a group has once it has stepped, each mapped to whether its value
    is None (a declared `none_keys` entry) (None: a global state, whose declared `load` checks
    its own keys)."""
    if any(layout.is_global for _, layout in _declared_nodes(fresh)):
        return None
    return [{k: v is None for k, v in entry.items()}
            for entry in export_state(fresh, treedef, leaves, every_param=True)]


@jax.jit
def _copy_all(arrays):
    return [jnp.copy(a) for a in arrays]


def copy_arrays(tree: Any) -> Any:
    """`tree` with every JAX array replaced by a copy (one dispatch for all of them): arrays
    handed out never alias the live state, which the next step donates."""
    leaves, treedef = jax.tree.flatten(tree)
    where = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array)]
    if where:
        copies = _copy_all([leaves[i] for i in where])
        for i, c in zip(where, copies):
            leaves[i] = c
    return treedef.unflatten(leaves)


# ---------------------------------------------------------------------------------- host values
def _check_numeric(arr: np.ndarray, value: Any, what: str) -> None:
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_ or arr.dtype == jnp.bfloat16):
        raise TypeError(f"{what} is not numeric: {value!r}")


def plain(value: Any) -> Any:
    """A saved hyperparameter as a Python value (0-d tensors and arrays -> Python numbers)."""
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if hasattr(value, "detach") or isinstance(value, (jax.Array, np.ndarray, np.generic)):
        arr = host_array(value, "param group entry")
        if arr.size == 1:
            item = arr.reshape(()).astype(np.float64) if arr.dtype == jnp.bfloat16 else arr.reshape(())
            return item.item()
        return value
    return value


def _scalar(value: Any, what: str) -> np.ndarray:
    arr = host_array(value, what)
    if arr.size != 1:
        raise ValueError(f"{what} must be a scalar, got shape {arr.shape}")
    _check_numeric(arr, value, what)
    arr = arr.reshape(())
    if np.iscomplexobj(arr):
        raise ValueError(f"{what} must be real, got {value!r}")
    return arr.astype(np.float64)


def _step_value(value: Any, what: str) -> int:
    """A loaded step count: what torch's next step can use and our int32 counter can hold."""
    x = float(_scalar(value, what))
    if not (np.isfinite(x) and x == int(x) and 0 <= x <= _MAX_STEP):
        raise ValueError(f"{what} must be a step count, an integer in [0, {_MAX_STEP}], got {x!r}")
    return int(x)


def _finite_value(value: Any, what: str) -> np.ndarray:
    x = _scalar(value, what)
    if not np.isfinite(x):
        raise ValueError(f"{what} must be finite, got {float(x)!r} (torch's next step would produce nan/inf)")
    return x


def _buffer_value(value: Any, like: jax.Array, pid: int, key: str) -> np.ndarray:
    """A loaded buffer cast to `like`'s dtype (torch's load casts to the param's dtype), checked:
    same shape; numeric; real for a real param. A host copy, never an alias of the loaded memory."""
    what = f"loaded state for param {pid}: {key!r}"
    arr = host_array(value, what)
    if arr.shape != tuple(like.shape):
        raise ValueError(
            f"loaded state for param {pid} has {key!r} of shape {arr.shape}, but the param's state has "
            f"shape {tuple(like.shape)}")
    _check_numeric(arr, value, what)
    if np.iscomplexobj(arr) and not jnp.issubdtype(like.dtype, jnp.complexfloating):
        raise TypeError(f"{what} is complex ({arr.dtype}) but the param is real ({like.dtype})")
    return arr.astype(like.dtype)


def _as_quantized(value: Any) -> QuantizedTensor | None:
    """A loaded quantized buffer as a `QuantizedTensor` (ours, or torchao's state subclass read
    through optax_like.interop.torchao); None for anything else."""
    if isinstance(value, QuantizedTensor):
        return value
    if "torchao" in sys.modules:
        from optax_like.interop import torchao

        if torchao.is_torchao_state(value):
            return torchao.from_torchao(value)
    return None


def _quantized_value(loaded: QuantizedTensor, expected: QuantizedTensor, pid: int, key: str) -> QuantizedTensor:
    """`loaded` checked against `expected` (the fresh state's own form for this param): the
    same format, table, block size and shape, and codes and scales of the sizes they imply."""
    what = f"loaded state for param {pid}: {key!r}"
    if loaded.format != expected.format or loaded.signed != expected.signed:
        signed = lambda q: "" if q.signed is None else (" signed" if q.signed else " unsigned")
        raise ValueError(f"{what} is quantized as{signed(loaded)} {loaded.format}, but this optimizer keeps it "
                         f"as{signed(expected)} {expected.format} (another optimizer's state?)")
    if loaded.shape != expected.shape:
        raise ValueError(f"{what} has shape {loaded.shape}, but the param's state has shape {expected.shape}")
    codes, scale = np.shape(loaded.codes), np.shape(loaded.scale)
    if codes != np.shape(expected.codes) or len(scale) != 1:
        raise ValueError(f"{what} has codes of shape {codes} and scales of shape {scale}, but a {expected.format} "
                         f"state of shape {expected.shape} has codes of shape {np.shape(expected.codes)} and "
                         f"one scale per block")
    if loaded.block_size != expected.block_size or scale != np.shape(expected.scale):
        raise ValueError(f"{what} has block size {loaded.block_size} ({scale[0]} scales), but this optimizer "
                         f"quantizes it in blocks of {expected.block_size} (block_size={expected.block_size})")
    table, want = loaded.qmap, expected.qmap
    if (table is None) != (want is None) or (
            table is not None and want is not None and table.tobytes() != want.tobytes()):
        raise ValueError(f"{what} has another code table (qmap) than this optimizer's {expected.format} format")
    arr = host_array(loaded.scale, what)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has non-finite scales")
    return loaded


def _loaded_buffer(value: Any, like: Any, param: Any, codec: QuantizedCodec | None, pid: int, key: str) -> Any:
    """A loaded buffer for the state leaf `like`: a quantized node (a declared `quantized`
    field) from a `QuantizedTensor` (or torchao's subclass) of its own form, else an array
    (`_buffer_value`). A quantized value for a plain leaf, or a plain one for a quantized leaf,
    is refused naming the param and the key."""
    loaded = _as_quantized(value)
    if codec is not None and isinstance(like, codec.node_type):
        expected = codec.export(like, param)
        if loaded is None:
            raise ValueError(
                f"loaded state for param {pid}: {key!r} is a plain tensor, but this optimizer keeps it quantized "
                f"({expected.format}, block size {expected.block_size}, shape {expected.shape}): was it saved "
                "with another block_size (or by another optimizer)?")
        return codec.load(_quantized_value(loaded, expected, pid, key), like)
    if loaded is not None:
        raise ValueError(
            f"loaded state for param {pid}: {key!r} is quantized ({loaded.format}, block size {loaded.block_size}), "
            f"but this optimizer keeps it as a plain array of shape {tuple(np.shape(like))} (too small to quantize, "
            "or a block_size that does not divide its size): was it saved with another block_size?")
    return _buffer_value(value, like, pid, key)


def _loaded_list(value: Any, like: tuple, pid: int, key: str) -> tuple:
    """A loaded list-valued buffer (a declared `lists` field: timm Kron's `Q`) for the fresh
    tuple `like`: as many arrays, each loaded as a buffer of its fresh array's shape and dtype."""
    if not isinstance(value, (list, tuple)) or len(value) != len(like):
        got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"loaded state for param {pid}: {key!r} must be a list of {len(like)} tensors, got {got}")
    return tuple(_buffer_value(v, f, pid, f"{key}[{j}]") for j, (v, f) in enumerate(zip(value, like)))


def tensor_group_entries(state: Any) -> tuple[str, ...]:
    """Param-group entries the reference keeps as 0-d float32 tensors (declared
    `tensor_group_entries`: torchao's `lr`)."""
    return tuple(dict.fromkeys(k for _, layout in _declared_nodes(state, strict=False) for k in layout.tensor_group_entries))


def attribute_group_entries(state: Any) -> tuple[str, ...]:
    """Our param-group entries the reference keeps as optimizer attributes (declared
    `attribute_group_entries`: torchao's `block_size`)."""
    return tuple(dict.fromkeys(k for _, layout in _declared_nodes(state, strict=False) for k in layout.attribute_group_entries))


def _leaf_scalars_from(values: list, dtype, per_leaf: bool = False) -> LeafScalars:
    """Per-param host values as a `LeafScalars` of host arrays: shared when all equal (the form
    `init` makes, so loading equal steps keeps the compiled step), else one per param; always
    one per param with `per_leaf` (a scalar `init` makes per leaf: NvNovoGrad's `exp_avg_sq`)."""
    arrays = [np.asarray(v).astype(dtype).reshape(()) for v in values]
    if not per_leaf and arrays and all(a.tobytes() == arrays[0].tobytes() for a in arrays):
        return LeafScalars.shared(arrays[0], len(arrays))
    return LeafScalars(arrays)


def _placed_like(state: Any, fresh: Any) -> Any:
    """`state` with each array on the devices/sharding of `fresh`'s (an init state, which follows
    the params' shardings); a per-param `LeafScalars` where `fresh`'s is shared goes where the
    shared scalar is."""
    def place(x, ref):
        if isinstance(x, jax.Array) and isinstance(ref, jax.Array) and x.sharding != ref.sharding:
            return jax.device_put(x, ref.sharding)
        return x

    return jax.tree.map(place, state, leaf_scalars_like(fresh, state))


# ---------------------------------------------------------------------------------- import
def lazy_keys(fresh: Any) -> list[frozenset]:
    """The per-param keys of each node declared `lazy` (entries that may be absent as a whole),
    and of each node with `always` fields its other keys (absent before the param starts)."""
    return [frozenset(layout.key(k) for k in (*layout.buffers, *layout.scalars) if k not in layout.always)
            for _, layout in _declared_nodes(fresh) if layout.lazy or layout.always]


def check_keys(ids: Sequence[int], per_param: Sequence[dict], expected: Sequence[dict], optimizer_name: str,
               lazy: Sequence[frozenset] = ()) -> None:
    """Each loaded non-empty entry has exactly the keys a stepped param has (`expected_keys`:
    another optimizer's or another configuration's state is refused), but may lack all the keys
    of a node declared `lazy` (`lazy_keys`). A None value counts only under a key whose expected
    value is None (`none_keys`); elsewhere it is no entry."""
    for pid, entry, expected_entry in zip(ids, per_param, expected):
        entry = {k for k, v in entry.items() if v is not None or expected_entry.get(k, False)}
        if not entry:
            continue  # no state yet (torch: a param that has not stepped)
        keys = set(expected_entry)
        for optional in lazy:
            if not optional & entry:
                keys -= optional
        missing, unexpected = sorted(keys - entry), sorted(entry - keys)
        if missing or unexpected:
            detail = "; ".join(part for part in (
                f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "") if part)
            raise ValueError(
                f"loaded state for param {pid} does not match {optimizer_name} with these "
                f"options ({detail}; expected keys {sorted(keys)}): is it another optimizer's "
                "or another configuration's state?"
            )


def global_flat_keys(fresh: Any) -> tuple[str, ...] | None:
    """The declared `flat_keys` of a group's global state (torch's LBFGS), None when the state
    is per param."""
    for _, layout in _declared_nodes(fresh):
        if layout.is_global:
            return layout.flat_keys
    return None


def permute_flat_entry(entry: dict, flat_keys: Sequence[str], sizes: Sequence[int], order: Sequence[int]) -> dict:
    """A global entry whose flat vectors hold the params' segments (`sizes`, in the entry's
    param order) rearranged so that position j holds the segment of param `order[j]`."""
    bounds = np.cumsum([0, *sizes])

    def permute(value):
        arr = host_array(value, "flat state vector")
        if arr.ndim != 1 or arr.shape[0] != bounds[-1]:
            return value  # the declared load names the size error
        return np.concatenate([arr[bounds[i]:bounds[i + 1]] for i in order]) if len(order) else arr

    out = dict(entry)
    for key in flat_keys:
        if key in out and out[key] is not None:
            value = out[key]
            out[key] = [permute(v) for v in value] if isinstance(value, (list, tuple)) else permute(value)
    return out


def loaded_entries(by_id: dict, ids: Sequence[int], fresh: Any = None) -> list[dict]:
    """The loaded entry of each param (empty: no state), copied. None values are kept: under a
    declared `none_keys` key one is state (timm's `{'momentum_buffer': None}`); `check_keys`
    and `import_state` drop the others (torch's older SGD saved `momentum_buffer: None`).
    A None under a key that `fresh` (the group's init state) declares `BOOL` reads as False, as
    the reference's `if` reads it (timm's Muon copies a group's `use_muon: None` into each
    param's state and routes it to the fallback)."""
    bools = frozenset() if fresh is None else frozenset(
        layout.key(name) for _, layout in _declared_nodes(fresh) for name, kind in layout.scalars.items()
        if kind == BOOL)
    out = []
    for pid in ids:
        entry = by_id.get(pid, {})
        if not isinstance(entry, dict):
            raise TypeError(f"loaded state for param {pid} must be a dict of its state entries, got {type(entry).__name__}")
        out.append({k: False if v is None and k in bools else v for k, v in entry.items()})
    return out


def import_state(fresh: Any, per_param: Sequence[dict], treedef, leaves: Sequence, ids: Sequence[int]) -> Any:
    """`fresh` (an init state of the group) with the loaded per-param entries written in (pure).

    Checks every value torch's next step depends on, naming the param id and the key: buffers
    have the param's shape and a real (or, for complex params, complex) numeric dtype, and are
    cast to the state's dtype (bfloat16/float16 included); step counts are integers in
    [0, 2**31); float32 per-param scalars are finite. Internal fields are rebuilt by their
    declared rule. Equal per-param scalars load shared, unequal ones per leaf."""
    present = _present(leaves)
    nodes = _declared_nodes(fresh)

    def what(i, key):
        return f"loaded state for param {ids[i]}: {key!r}"

    # A None value is an entry only under a declared `none_keys` key, which holds nothing else.
    none_keys = {key for _, layout in nodes for key in layout.none_keys}
    for i, entry in enumerate(per_param):
        for key in none_keys & set(entry):
            if entry[key] is not None:
                raise ValueError(f"{what(i, key)} must be None here (the reference keeps no {key} with "
                                 f"these options), got {type(entry[key]).__name__}")
    per_param = [{k: v for k, v in entry.items() if v is not None or k in none_keys} for entry in per_param]

    # Step counts first: STEPS_TAKEN counters are rebuilt from them.
    steps = [0]
    for node, layout in nodes:
        for field, kind in layout.scalars.items():
            key = layout.key(field)
            if kind in _STEP_KINDS:
                steps += [_step_value(entry[key], what(i, key)) for i, entry in enumerate(per_param) if key in entry]
    max_step = max(steps)

    def replace(node, layout: TorchLayout):
        if layout.is_group:  # param group entries: import_group_entries
            return node
        if layout.is_global:
            return _import_global(node, layout, per_param, ids)
        new = {}
        for name in layout.buffers:
            key = layout.key(name)
            tree_leaves = list(treedef.flatten_up_to(getattr(node, name)))
            for i, leaf_index in enumerate(present):
                like = tree_leaves[leaf_index]
                if like is not None and key in per_param[i] and name in layout.lists:  # timm Kron's Q
                    tree_leaves[leaf_index] = _loaded_list(per_param[i][key], like, ids[i], key)
                elif like is not None and key in per_param[i]:
                    tree_leaves[leaf_index] = _loaded_buffer(per_param[i][key], like, leaves[leaf_index],
                                                             layout.quantized.get(name), ids[i], key)
                    if name in layout.negated:
                        tree_leaves[leaf_index] = -tree_leaves[leaf_index]
            new[name] = treedef.unflatten(tree_leaves)
        for name, kind in layout.scalars.items():
            old = getattr(node, name)
            if old is None:  # an option that is off: no entries (export_state)
                new[name] = None
                continue
            values = _scalar_values(old)
            key = layout.key(name)
            for i, entry in enumerate(per_param):
                if key in entry and kind == BOOL:  # fixed by the configuration: must match
                    if not isinstance(entry[key], (bool, np.bool_)) or bool(entry[key]) != bool(values[i]):
                        raise ValueError(f"{what(i, key)} must be {bool(values[i])} with these options "
                                         f"(got {entry[key]!r}): is it another configuration's state?")
                elif key in entry:
                    check = _step_value if kind in _STEP_KINDS else _finite_value
                    values[i] = check(entry[key], what(i, key))
                    if name in layout.stepped_if_present and values[i] == 0:
                        raise ValueError(f"{what(i, key)} is 0 in an entry: the reference takes a param with "
                                         "state as past its first step, which a count of 0 cannot say here "
                                         "(the reference never saves such an entry)")
            # the form init made: shared (equal values load shared) or per leaf
            new[name] = _leaf_scalars_from(values, old.dtype, per_leaf=not old.is_shared)
        for name, rule in layout.internal.items():
            old = getattr(node, name)
            if rule == FRESH:  # not saved by the reference: as init made it
                new[name] = old
            elif rule == STARTED:
                own = tuple(layout.key(k) for k in (*layout.buffers, *layout.scalars))  # a lazy node: its own entries
                new[name] = _leaf_scalars_from([1 if (entry and not layout.lazy) or (layout.lazy and all(
                    k in entry for k in own)) else 0 for entry in per_param], old.dtype)
            else:
                assert rule == STEPS_TAKEN
                new[name] = np.asarray(max_step, np.asarray(old).dtype)
        return type(node)(**new)

    return _placed_like(_to_device(_rebuild(fresh, replace)), fresh)


# ---------------------------------------------------------------------------------- group entries
def _group_nodes(state: Any) -> list[tuple[Any, TorchLayout]]:
    return [(node, layout) for node, layout in _declared_nodes(state, strict=False) if layout.is_group]


def group_keys(state: Any) -> tuple[str, ...]:
    """The param group entries `state` declares (group form; () for most optimizers)."""
    return tuple(k for _, layout in _group_nodes(state) for k in layout.group.keys)  # pyright: ignore[reportOptionalMemberAccess]


def export_group_entries(state: Any) -> dict:
    """The group-form state as the group's entries, host values (`state_dict()['param_groups']`)."""
    out = {}
    for node, layout in _group_nodes(state):
        out.update(layout.group.export(node))  # pyright: ignore[reportOptionalMemberAccess]
    return out


def group_view(state: Any) -> dict:
    """The group-form state as the group's entries, device values (no host sync)."""
    out = {}
    for node, layout in _group_nodes(state):
        out.update(layout.group.view(node))  # pyright: ignore[reportOptionalMemberAccess]
    return out


def import_group_entries(state: Any, entries: dict) -> Any:
    """`state` with loaded group entries written into its group-form nodes (pure; the declared
    `load` checks them, naming the key; entries a node does not declare are ignored)."""
    def replace(node, layout: TorchLayout):
        if not layout.is_group:
            return node
        mine = {k: entries[k] for k in layout.group.keys if k in entries}  # pyright: ignore[reportOptionalMemberAccess]
        return layout.group.load(node, mine) if mine else node  # pyright: ignore[reportOptionalMemberAccess]

    if not _group_nodes(state):
        return state
    return _placed_like(_to_device(_rebuild(state, replace)), state)


def _import_global(fresh: Any, layout: TorchLayout, per_param: Sequence[dict], ids: Sequence[int]) -> Any:
    """A global state (torch's LBFGS): loaded from the first param's entry by the declared
    `load`; an entry under any other param is refused, naming it."""
    others = [ids[i] for i, entry in enumerate(per_param) if i > 0 and entry]
    if others:
        first = f" {ids[0]}" if ids else ""
        raise ValueError(
            f"loaded state has entries for params {others}: {type(fresh).__name__} keeps its whole "
            f"state under the first param{first} of its group (torch's layout)")
    assert layout.load is not None  # (the global form has both)
    return layout.load(fresh, dict(per_param[0]) if per_param else {})


def _to_device(state: Any) -> Any:
    """`state` with its host (NumPy) leaves moved to the device in one call (fresh buffers)."""
    leaves, treedef = jax.tree.flatten(state)
    where = [i for i, x in enumerate(leaves) if isinstance(x, np.ndarray)]
    for i, x in zip(where, jax.device_put([leaves[i] for i in where])):
        leaves[i] = x
    return treedef.unflatten(leaves)


def construction_args(state: Any) -> tuple[str, ...]:
    """Hyperparameters `init` must take from the constructor's values (see `TorchLayout`)."""
    return tuple(dict.fromkeys(a for _, layout in _declared_nodes(state, strict=False) for a in layout.construction_args))


def check_group(factory: Callable, group: dict, current: dict, names: Sequence[str], g: int) -> None:
    """Validates a loaded param group with the factory (torch's checks and messages), naming the
    group and the key: torch's next step would reject, or turn into nan, e.g. betas outside
    [0, 1), a negative eps."""
    try:
        factory(**{k: group[k] for k in names})
        return
    except (ValueError, TypeError) as error:
        first = error
    for key in names:  # which loaded entry is refused: each one alone on the current group
        if group[key] is current[key]:
            continue
        try:
            factory(**{k: (group[k] if k == key else current[k]) for k in names})
        except (ValueError, TypeError) as error:
            raise type(error)(f"loaded param_groups[{g}][{key!r}] = {group[key]!r}: {error}") from None
    raise type(first)(f"loaded param_groups[{g}]: {first}") from None


def _pickled_by_torch_save() -> bool:
    """Whether the pickling in progress is torch.save's (its Python frame sits just above the
    C pickler that asks an object how to reduce itself)."""
    import sys

    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return False
        if frame.f_globals.get("__name__") == "torch.serialization":
            return True
        frame = frame.f_back
    return False


class StateDict(dict):
    """`optimizer.state_dict()`: a dict in torch's layout (JAX/NumPy arrays), which also saves
    the torch way. `torch.save(optimizer.state_dict(), path)` writes torch's format (tensors,
    float32 `step`s; `optax_like.interop.torch.to_torch_state_dict`), which
    `torch.load(path, weights_only=True)` reads and torch's optimizers load; where that
    conversion needs torch's param order (`target=`), torch.save raises its error, naming the
    fix. Any other pickling (pickle, copy, deepcopy) keeps the arrays."""

    def __reduce_ex__(self, protocol):
        if _pickled_by_torch_save():
            import collections

            from optax_like.interop.torch import to_torch_state_dict

            try:
                converted = to_torch_state_dict(self)
            except ValueError as error:
                raise ValueError(
                    f"torch.save(optimizer.state_dict()) writes torch's format, but: {error} Save "
                    "torch.save(optax_like.interop.torch.to_torch_state_dict(optimizer, target=model), "
                    "path) instead (or optax_like.checkpoint.save for a JAX checkpoint).") from None
            return collections.OrderedDict, (list(converted.items()),)
        return super().__reduce_ex__(protocol)


# A pytree like a dict (jax.tree.map over a state dict, as over torch's plain dict).
jax.tree_util.register_pytree_with_keys(
    StateDict,
    lambda d: (tuple((jax.tree_util.DictKey(k), v) for k, v in d.items()), tuple(d)),
    lambda keys, values: StateDict(zip(keys, values)),
)
