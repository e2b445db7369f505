"""Declared torch mapping of optimizer states: which field is which of torch's per-param entries.

torch keeps an optimizer's state per parameter (`optimizer.state[p] = {'step': ..., 'exp_avg':
...}`); a functional state here is a NamedTuple of trees. Each state type declares, once, right
after its definition, how its fields map to torch's per-param dict:

    class ScaleByAdamState(NamedTuple):
        exp_avg: Any
        ...

    declare_torch_state(
        ScaleByAdamState,
        buffers=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        scalars={"step": STEP},
        internal={"schedule_count": STEPS_TAKEN},
    )

A buffer whose leaves may be block-quantized nodes (torchao's low-bit optimizers keep such a
param's moments as a tensor subclass: codes, per-block scales, a code table) declares a
`QuantizedCodec` per field; the state dict then holds a `QuantizedTensor` for each quantized
leaf (and a plain array for the others):

    declare_torch_state(ScaleByQuantizedAdamState, buffers=("exp_avg", ...),
                        quantized={"exp_avg": SIGNED_CODEC, "exp_avg_sq": UNSIGNED_CODEC, ...}, ...)

A state that torch keeps as ONE dict under the group's first param (torch's LBFGS: flat vectors
and history lists over all params) declares that dict's two directions instead of field kinds:

    declare_torch_state(LBFGSState, export=export_lbfgs, load=load_lbfgs)

`export(state) -> dict` (torch's entry, `{}` before the first step) and `load(fresh, entry) ->
state` (pure: checks every value and raises naming the key). The converter puts the dict under
the first param, loads it from there, and refuses entries under any other param.

State the reference keeps in its param groups rather than per param (schedulefree's `k`,
`weight_sum`, `lr_max`: `param_groups[i]['k']`) declares the group's entries:

    declare_torch_state(ScheduleFreeGroup, group=GroupEntries(("k", ...), export, load, view))

`export(state) -> {key: Python value}` (the state dict's group entries), `load(fresh, entries)
-> state` (pure, checked) and `view(state) -> {key: device scalar}` (the live group's entries
after a step, read without a host sync). The adapter keeps them in `param_groups` (optim/optimizer.py).

Every field is named exactly once (a typo or a forgotten field fails at import). The adapter's
`state_dict`/`load_state_dict` (`optax_like.optim._state_dict`) is one converter driven by these
declarations: a new optimizer adds its declaration and nothing else. A state type without one
(combinators' states, `EmptyState`) is a container: the converter looks inside it.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BOOL",
    "FLOAT",
    "FRESH",
    "FLOAT32",
    "GroupEntries",
    "INT_STEP",
    "QuantizedCodec",
    "QuantizedTensor",
    "STARTED",
    "STEP",
    "STEPS_TAKEN",
    "TorchLayout",
    "declare_torch_state",
    "host_array",
    "torch_layout_of",
]

# How a per-param scalar (a `core.leaf_scalars.LeafScalars` field) appears in torch's state dict, and what
# a loaded value must be.
STEP = "step"  # a 0-d float32 tensor holding a step count (torch's `state['step']`); loads: an integer in [0, 2**31)
INT_STEP = "int_step"  # a Python int step count (torch's SparseAdam); loads as STEP
FLOAT32 = "float32"  # a 0-d float32 tensor (NAdam's `mu_product`, ASGD's `eta`/`mu`); loads: a finite number
FLOAT = "float"  # a Python float (timm's LaProp `exp_avg_lr_1` for a number lr); loads: a finite number
# a Python bool that the configuration fixes per param (timm Muon's `use_muon`: the param's route); loads: a
# bool equal to the fresh state's (another route is another configuration's state)
BOOL = "bool"
SCALAR_KINDS = (STEP, INT_STEP, FLOAT32, FLOAT, BOOL)

# How an internal field (no torch counterpart) is rebuilt when a state dict is loaded.
STEPS_TAKEN = "steps_taken"  # a 0-d counter of updates: the largest loaded per-param step of the group
STARTED = "started"  # a per-param int counter read as "has state": 1 where the param has a loaded entry, else 0
# any field (params-shaped trees too) the reference does not save: kept as `init` made it (timm Adahessian's
# Hessian estimate `p.hess`, an attribute of the param, and its generator, which a resumed timm run restarts)
FRESH = "fresh"
REBUILD_RULES = (STEPS_TAKEN, STARTED, FRESH)


@dataclasses.dataclass(frozen=True)
class GroupEntries:
    """State the reference keeps as entries of its param groups (schedulefree's `k`,
    `weight_sum`, `lr_max`, `scheduled_lr`), not per param.

    keys: the entries' names. export(state) -> {key: Python value} (host values, for
    `state_dict()['param_groups']`); load(fresh, entries) -> state: `fresh` with the entries
    written in (pure; raises ValueError/TypeError naming the key; entries missing from a loaded
    group keep `fresh`'s values); view(state) -> {key: 0-d array} (device values, no host sync:
    the live `param_groups` entries after a step)."""

    keys: tuple[str, ...]
    export: Callable[[Any], dict]
    load: Callable[[Any, dict], Any]
    view: Callable[[Any], dict]


@dataclasses.dataclass(frozen=True)
class TorchLayout:
    """How one state type maps to torch's per-param state dict.

    buffers: fields holding a params-shaped tree, exported per param under the field's name
        (None leaves, e.g. `max_exp_avg_sq` without amsgrad, are not exported).
    scalars: per-param scalar fields (`LeafScalars`) -> their torch form (`STEP`, `INT_STEP`,
        `FLOAT32`, `FLOAT`, `BOOL`). A field holding None (an option that is off: NvNovoGrad's
        `max_exp_avg_sq` without amsgrad) has no entries. A field `init` makes per leaf (a value
        of each param's own: NvNovoGrad's `exp_avg_sq`) loads per leaf; others load shared when
        the loaded values are equal.
    internal: fields torch does not have -> how they are rebuilt on load (`STEPS_TAKEN`,
        `STARTED`, `FRESH`: as `init` made them, for any field, params-shaped trees too).
    started: the per-param counter (a scalar or internal field) whose value > 0 marks a param
        torch has state for (torch creates state at a param's first gradient); None: every
        param has state from construction (torch's Adagrad).
    construction_args: hyperparameters whose *constructor* value (`defaults`) `init` reads for
        the groups given to the constructor, whatever the group says (torch's Adagrad fills
        `sum` from the constructor's `initial_accumulator_value` in `__init__`).
    export, load: the global form (all of the above empty): the state is one torch dict kept
        under the group's first param. `export(state) -> dict` gives torch's entry (`{}`: no
        state yet, torch before the first step); `load(fresh, entry) -> state` writes a loaded
        entry (`{}`: none) into `fresh` (an init state), pure, raising ValueError/TypeError that
        name the key. The entry's keys are the function's to check.
    flat_keys: (global form) the entry's keys that hold vectors over all the group's params,
        one entry per real number, in param order (torch's `_gather_flat_grad`), or lists of
        such vectors: what a change of param order permutes (torch's order <-> ours).
    none_keys: keys a started param's entry holds with the value None, for state the
        reference names but does not have (timm's SGDW keeps `{'momentum_buffer': None}`
        without momentum): exported as None, and a loaded None is accepted there (elsewhere a
        loaded None is dropped, torch's older SGD checkpoints).
    group: (group form) the state is entries of the param group (`GroupEntries`), not per
        param: exported to and loaded from `param_groups[i]`, never to `state`.
    quantized: buffer fields (each also in `buffers`) whose leaves may be block-quantized nodes
        -> their `QuantizedCodec`: such a leaf is exported as a `QuantizedTensor` (torchao's
        OptimState8bit / OptimState4bit / OptimStateFp8 through `optax_like.interop.torchao`)
        and loads only from one of the same format, signedness, block size and shape; a plain
        leaf of the field is a plain array both ways.
    tensor_group_entries: param-group entries the reference keeps as 0-d float32 tensors
        (torchao's `lr`): `optax_like.interop.torch.to_torch_state_dict` writes them so.
    attribute_group_entries: our param-group entries (the optimizer's arguments) that the
        reference keeps as optimizer attributes, not in its groups (torchao's `block_size`,
        `bf16_stochastic_round`): `to_torch_state_dict` leaves them out.
    lazy: the node's entries appear after the param's other state (timm's Lookahead creates
        `lookahead_slow_buff` at a param's first sync, steps after the base's first entries):
        a loaded entry may lack all of the node's keys (the node then loads as not started for
        that param, its `started` counter 0), not some of them.
    buffer_dtypes: buffer fields the reference keeps in one dtype whatever the param's (timm's
        RAdamLegacy: float32 `exp_avg`/`exp_avg_sq`, also for float64 params) -> that dtype's
        name: exported in it (the state holds them in the param's dtype, like every buffer:
        values of that dtype for wider params, rounded for narrower ones); a loaded value is
        cast to the state's dtype as any buffer.
    own_dtype: buffer fields the state holds in a dtype other than the param's, chosen by the
        transform (timm's Adafactor: float32 for 16-bit params; AdafactorBigVision's `exp_avg`
        in its `momentum_dtype`): exported as held, a loaded value cast to the fresh state's
        dtype as any buffer. (The generic tests check every other buffer's dtype is the param's.)
    reduced: buffer fields whose leaves are not params-shaped (timm's factored second moments
        with a dimension removed, its per-param `RMS` as a 0-d array): exported and loaded by
        the fresh state's shapes as any buffer. (The generic tests check every other buffer's
        shape is the param's.)
    scalars_with: scalar fields a param has only where a buffer field's leaf is not None ->
        that buffer (timm's Muon: `step` only beside `exp_avg_sq`, the AdamW fallback's and
        AdaMuon's, not for its plain Muon params): exported and expected on load only there.
    torch_keys: fields exported (and loaded) under another key than the field's name, for the
        reference's keys that are no Python identifiers (timm Adahessian's `'hessian step'`).
    always: scalar fields every param has from construction, started or not (timm Adahessian
        sets `state[p]['hessian step'] = 0` in `__init__`): exported for every param; a loaded
        entry may hold only these (the node's other keys are then absent as a whole: not started).
    negated: buffer fields the state holds with the opposite sign of the reference's (timm's
        Adan keeps `neg_pre_grad = -g`; the state keeps `g`, which XLA passes on as it is where a
        negation took a kernel of its own per leaf): exported and loaded negated (exact).
    stepped_if_present: step scalars whose reference takes a param with an entry as past its
        first step whatever the count says (timm's Adopt: `first_steps = len(state) == 0`),
        where the state knows a first step by its count (`t == 1`): a loaded entry whose count
        is 0 is refused, naming the param and the key (the reference never saves one).
    lists: buffer fields whose per-param value is a tuple of arrays (timm's Kron: `Q`, one
        preconditioner factor per dim): exported as a Python list of them (the reference's list
        of tensors), loaded element by element against the fresh state's (same length, each of
        its shape). Declare them `reduced` (and `own_dtype` where their dtype is not the param's).
    """

    buffers: tuple[str, ...] = ()
    scalars: Mapping[str, str] = dataclasses.field(default_factory=dict)
    internal: Mapping[str, str] = dataclasses.field(default_factory=dict)
    started: str | None = None
    construction_args: tuple[str, ...] = ()
    export: Callable[[Any], dict] | None = None
    load: Callable[[Any, dict], Any] | None = None
    flat_keys: tuple[str, ...] = ()
    none_keys: tuple[str, ...] = ()
    group: GroupEntries | None = None
    quantized: Mapping[str, "QuantizedCodec"] = dataclasses.field(default_factory=dict)
    tensor_group_entries: tuple[str, ...] = ()
    attribute_group_entries: tuple[str, ...] = ()
    lazy: bool = False
    buffer_dtypes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    own_dtype: tuple[str, ...] = ()
    reduced: tuple[str, ...] = ()
    scalars_with: Mapping[str, str] = dataclasses.field(default_factory=dict)
    torch_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    always: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()
    negated: tuple[str, ...] = ()
    stepped_if_present: tuple[str, ...] = ()

    def key(self, field: str) -> str:
        """The reference's key of `field` (`torch_keys`, else the field's name)."""
        return self.torch_keys.get(field, field)

    @property
    def is_group(self) -> bool:
        """Whether the state is entries of the param group (schedulefree's `k`), not per param."""
        return self.group is not None

    @property
    def is_global(self) -> bool:
        """Whether the state is one dict under the group's first param (torch's LBFGS)."""
        return self.export is not None

    def fields(self) -> tuple[str, ...]:
        return (*self.buffers, *self.scalars, *self.internal)


_ATTRIBUTE = "__torch_layout__"


def declare_torch_state(
    state_type: type,
    *,
    buffers: tuple[str, ...] = (),
    scalars: Mapping[str, str] | None = None,
    internal: Mapping[str, str] | None = None,
    started: str | None = None,
    construction_args: tuple[str, ...] = (),
    export: Callable[[Any], dict] | None = None,
    load: Callable[[Any, dict], Any] | None = None,
    flat_keys: tuple[str, ...] = (),
    none_keys: tuple[str, ...] = (),
    group: GroupEntries | None = None,
    quantized: Mapping[str, "QuantizedCodec"] | None = None,
    tensor_group_entries: tuple[str, ...] = (),
    attribute_group_entries: tuple[str, ...] = (),
    lazy: bool = False,
    buffer_dtypes: Mapping[str, str] | None = None,
    own_dtype: tuple[str, ...] = (),
    reduced: tuple[str, ...] = (),
    scalars_with: Mapping[str, str] | None = None,
    torch_keys: Mapping[str, str] | None = None,
    always: tuple[str, ...] = (),
    lists: tuple[str, ...] = (),
    negated: tuple[str, ...] = (),
    stepped_if_present: tuple[str, ...] = (),
) -> TorchLayout:
    """Attaches a `TorchLayout` to `state_type` (a NamedTuple class) and returns it.

    Raises a TypeError at import time when the declaration does not name every field of the
    state exactly once, names an unknown kind or rule, or `started` is not a counter field.
    `started` is required unless `construction_args` says the state exists from construction.
    The global form gives `export` and `load` together (and `flat_keys`) and nothing else; the
    group form gives `group` (a `GroupEntries`) and nothing else.
    """
    layout = TorchLayout(tuple(buffers), dict(scalars or {}), dict(internal or {}), started, tuple(construction_args),
                         export, load, tuple(flat_keys), tuple(none_keys), group,
                         dict(quantized or {}), tuple(tensor_group_entries), tuple(attribute_group_entries), bool(lazy))
    fields = getattr(state_type, "_fields", None)
    name = getattr(state_type, "__name__", repr(state_type))
    if fields is None:
        raise TypeError(f"declare_torch_state: {name} is not a NamedTuple class")
    if group is not None:
        if not isinstance(group, GroupEntries) or not group.keys:
            raise TypeError(f"declare_torch_state({name}): group must be a GroupEntries naming its keys")
        if (layout.fields() or started is not None or construction_args or none_keys or export or load or flat_keys
                or quantized):
            raise TypeError(f"declare_torch_state({name}): the group form declares nothing else: its functions map every field")
        setattr(state_type, _ATTRIBUTE, layout)
        return layout
    if export is not None or load is not None:
        if not (callable(export) and callable(load)):
            raise TypeError(f"declare_torch_state({name}): the global form needs both export and load (callables)")
        if layout.fields() or started is not None or construction_args or none_keys or quantized:
            raise TypeError(
                f"declare_torch_state({name}): the global form (export/load) declares no buffers, "
                "scalars, internal fields, started or construction_args: its functions map every field")
        setattr(state_type, _ATTRIBUTE, layout)
        return layout
    declared = layout.fields()
    repeated = sorted({f for f in declared if declared.count(f) > 1})
    missing, unknown = sorted(set(fields) - set(declared)), sorted(set(declared) - set(fields))
    if repeated or missing or unknown:
        raise TypeError(
            f"declare_torch_state({name}): every field must be declared exactly once as a buffer, "
            f"a scalar or internal (missing {missing}, unknown {unknown}, repeated {repeated})"
        )
    bad = {k: v for k, v in layout.scalars.items() if v not in SCALAR_KINDS}
    bad.update({k: v for k, v in layout.internal.items() if v not in REBUILD_RULES})
    if bad:
        raise TypeError(f"declare_torch_state({name}): unknown kinds {bad} (scalars: {SCALAR_KINDS}; internal: {REBUILD_RULES})")
    clashing = sorted(set(layout.none_keys) & set(declared))
    if clashing:
        raise TypeError(f"declare_torch_state({name}): none_keys {clashing} are fields (a None key holds no state)")
    odd = sorted(k for k, codec in layout.quantized.items() if k not in layout.buffers or not isinstance(codec, QuantizedCodec))
    if odd:
        raise TypeError(f"declare_torch_state({name}): quantized fields {odd} must be buffers, each with a QuantizedCodec")
    if buffer_dtypes:
        odd = sorted(k for k, d in buffer_dtypes.items() if k not in layout.buffers or not jnp.issubdtype(d, jnp.floating))
        if odd:
            raise TypeError(f"declare_torch_state({name}): buffer_dtypes fields {odd} must be buffers, each with a float dtype")
        layout = dataclasses.replace(layout, buffer_dtypes={k: jnp.dtype(d).name for k, d in buffer_dtypes.items()})
    if own_dtype or reduced:
        odd = sorted(k for k in (*own_dtype, *reduced) if k not in layout.buffers)
        if odd:
            raise TypeError(f"declare_torch_state({name}): own_dtype/reduced fields {odd} must be buffers")
        layout = dataclasses.replace(layout, own_dtype=tuple(own_dtype), reduced=tuple(reduced))
    if scalars_with:
        odd = sorted(k for k, b in scalars_with.items() if k not in layout.scalars or b not in layout.buffers)
        if odd:
            raise TypeError(f"declare_torch_state({name}): scalars_with {odd} must map scalars to buffers")
        layout = dataclasses.replace(layout, scalars_with=dict(scalars_with))
    if torch_keys or always:
        odd = sorted(k for k in torch_keys or {} if k not in (*layout.buffers, *layout.scalars))
        odd += sorted(k for k in always if k not in layout.scalars)
        if odd:
            raise TypeError(f"declare_torch_state({name}): torch_keys fields must be buffers or scalars, always "
                            f"fields scalars: {odd}")
        layout = dataclasses.replace(layout, torch_keys=dict(torch_keys or {}), always=tuple(always))
    if lists:
        odd = sorted(k for k in lists if k not in layout.reduced)
        if odd:
            raise TypeError(f"declare_torch_state({name}): lists fields {odd} must be reduced buffers")
        layout = dataclasses.replace(layout, lists=tuple(lists))
    if negated:
        odd = sorted(k for k in negated if k not in layout.buffers or k in (*layout.quantized, *layout.lists))
        if odd:
            raise TypeError(f"declare_torch_state({name}): negated fields {odd} must be plain buffers")
        layout = dataclasses.replace(layout, negated=tuple(negated))
    if stepped_if_present:
        odd = sorted(k for k in stepped_if_present if layout.scalars.get(k) not in (STEP, INT_STEP))
        if odd:
            raise TypeError(f"declare_torch_state({name}): stepped_if_present fields {odd} must be step scalars")
        layout = dataclasses.replace(layout, stepped_if_present=tuple(stepped_if_present))
    if started is None and not construction_args:
        if buffers or layout.scalars or none_keys:
            raise TypeError(f"declare_torch_state({name}): say which counter marks a started param (started=...)")
    elif started is not None and started not in layout.scalars and layout.internal.get(started) != STARTED:
        raise TypeError(f"declare_torch_state({name}): started={started!r} must be a step scalar or a STARTED internal counter")
    setattr(state_type, _ATTRIBUTE, layout)
    return layout


def torch_layout_of(state: Any) -> TorchLayout | None:
    """The declaration of `state`'s type (None for containers and undeclared types)."""
    return type(state).__dict__.get(_ATTRIBUTE)


def host_array(value: Any, what: str) -> np.ndarray:
    """A loaded value (torch tensor of any floating dtype incl. bfloat16/float16, NumPy or JAX
    array, Python number) as a NumPy array that owns its memory. `what` names the entry in errors."""
    if "torch" in sys.modules and isinstance(value, sys.modules["torch"].Tensor):
        torch = sys.modules["torch"]
        t = value.detach().cpu().resolve_conj().resolve_neg()
        if t.dtype == torch.bfloat16:
            return t.contiguous().view(torch.int16).numpy().view(jnp.bfloat16).copy()
        try:
            return t.numpy().copy()
        except TypeError:  # dtypes NumPy lacks (float8, complex32): widened exactly
            return (t.to(torch.complex64) if t.is_complex() else t.to(torch.float32)).numpy()
    if isinstance(value, jax.Array) and value.is_deleted():
        raise RuntimeError(
            f"{what} is an array that an optimizer step has donated (optimizer.params are valid until "
            "the next step): read it again after the step, or copy it (jnp.copy) to keep it")
    try:
        return np.array(value, copy=True)
    except Exception:
        raise TypeError(f"{what} is not an array or a number: {value!r}") from None


# ------------------------------------------------------------------------- quantized buffers
QUANTIZED_FORMATS = ("8bit", "4bit", "fp8")


@jax.tree_util.register_pytree_with_keys_class
class QuantizedTensor:
    """A block-quantized state buffer as a state dict holds it: torchao's `OptimState8bit`,
    `OptimState4bit` or `OptimStateFp8` (its tensor attributes, without torch), for the
    `quantized` layout kind.

    codes: "8bit": uint8 of `shape`; "4bit": uint8 of `numel // 2`, two codes a byte, the first
        in the high nibble; "fp8": float8_e4m3fn of `shape`.
    scale: float32 `(numel // block_size,)`, one per block of the flattened tensor (its absmax;
        fp8: absmax / 448).
    qmap: the float32 code table (8bit: 256 entries, 4bit: 16; fp8: None), `signed` the table's
        kind (fp8: None).
    shape, dtype: the param's (torchao's "appearance" shape and dtype).

    A pytree node whose children are `codes` and `scale` (copies and device transfers see them);
    `np.asarray(x)` is `x.dequantize()`, float32 of `shape`, as torchao's `dequantize()`.
    """

    __slots__ = ("codes", "scale", "format", "signed", "shape", "dtype", "_qmap")

    def __init__(self, codes: Any, scale: Any, qmap: Any, *, format: str, signed: bool | None, shape: tuple,
                 dtype: Any):
        if format not in QUANTIZED_FORMATS:
            raise ValueError(f"QuantizedTensor: format must be one of {QUANTIZED_FORMATS}, got {format!r}")
        self.codes, self.scale = codes, scale
        self.format = format
        self.signed = None if format == "fp8" else bool(signed)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._qmap = None if qmap is None else tuple(float(v) for v in np.asarray(qmap, np.float32).reshape(-1))

    @property
    def qmap(self) -> np.ndarray | None:
        return None if self._qmap is None else np.array(self._qmap, np.float32)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    @property
    def block_size(self) -> int:
        """Values per scale (torchao: `codes.numel() [* 2] // scale.numel()`)."""
        n_scales = int(np.size(self.scale))
        return self.numel // n_scales if n_scales else 0

    def dequantize(self) -> np.ndarray:
        """The float32 values (torchao's `dequantize()`: code value times its block's scale)."""
        codes = np.asarray(self.codes)
        scale = np.asarray(self.scale, np.float32).reshape(-1)
        if self.format == "fp8":
            values = codes.astype(np.float32)
        else:
            codes = codes.astype(np.int64).reshape(-1)
            if self.format == "4bit":
                codes = np.stack([codes >> 4, codes & 0b1111], axis=-1)
            table = self.qmap
            assert table is not None
            values = table[codes]
        return (values.reshape(scale.shape[0], -1) * scale[:, None]).reshape(self.shape)

    def __array__(self, dtype=None, copy=None):
        out = self.dequantize()
        return out if dtype is None else out.astype(dtype)

    def _aux(self):
        return (self.format, self.signed, self.shape, self.dtype.name, self._qmap)

    def tree_flatten_with_keys(self):
        keys = (jax.tree_util.GetAttrKey("codes"), jax.tree_util.GetAttrKey("scale"))
        return tuple(zip(keys, (self.codes, self.scale))), self._aux()

    def tree_flatten(self):
        return (self.codes, self.scale), self._aux()

    @classmethod
    def tree_unflatten(cls, aux, children):
        out = cls.__new__(cls)
        out.codes, out.scale = children
        out.format, out.signed, out.shape, dtype, out._qmap = aux
        out.dtype = np.dtype(dtype)
        return out

    def __repr__(self) -> str:
        signed = "" if self.signed is None else f", signed={self.signed}"
        return (f"QuantizedTensor(format={self.format!r}{signed}, block_size={self.block_size}, "
                f"shape={self.shape}, dtype={self.dtype.name})")


@dataclasses.dataclass(frozen=True)
class QuantizedCodec:
    """How the quantized leaves of a buffer field map to state-dict `QuantizedTensor`s (the
    `quantized` layout kind of `declare_torch_state`).

    node_type: the state's quantized leaf type (a leaf of the field that is not one is a plain
        array, exported as it is).
    export: `export(node, param) -> QuantizedTensor` (the live arrays, not copies).
    load: `load(value, fresh) -> node` for a `value` already checked against
        `export(fresh, param)` (same format, signedness, table, block size and shape); host
        (NumPy) arrays, which the converter moves to the device.
    """

    node_type: type
    export: Callable[[Any, Any], QuantizedTensor]
    load: Callable[[QuantizedTensor, Any], Any]
