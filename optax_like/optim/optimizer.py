"""`Optimizer`: torch.optim's stateful surface over the functional core.

The adapter is thin. It holds the params, the functional state of each param group and the
param groups themselves; every number comes from the group's functional optimizer
(`optax_like.sgd`, `optax_like.adam`, ...), built inside ONE jitted, donated XLA computation per
`step()`. Design (details and costs in docs/adapter.md):

Params. `params` is torch's argument: a pytree of arrays (one group), or a list of group dicts
`{'params': pytree, 'lr': ...}` (a list whose items are all dicts with a 'params' key). With
`model=tree`, the groups' trees are sub-trees of `model`, matched by identity as torch matches
tensors; the loss then receives the whole `model` and leaves in no group are frozen.
`optimizer.params` returns the current values in the user's structure (the tree; the list of
group trees; or `model`). Arrays handed to the optimizer are owned by it: they are donated to
the first step (read `optimizer.params`, which is valid until the next step).

Gradients. `step(closure, *args)`: `closure(params, *args)` returns the loss; it is
differentiated and the update applied in the same jitted call, and the loss returned (a device
array: no host sync). It plays torch's closure that begins with `zero_grad()`: pending gradients
are discarded. A closure returning `(loss, aux)` makes `step` return `(loss, aux)`.
`step(..., clip_grad_norm=max_norm)` clips the gradients in the same call (optim/clip_grad.py).
A param the loss does not reach gets no gradient (None: skipped, as torch skips
`p.grad is None` after its closure's `zero_grad()`). A closure defined once
compiles once; a new function object (a per-step lambda) is a new jit key and retraces.
`backward(grads)` accumulates explicit gradients (a tree in the params' structure, `None` for
"no gradient") until `zero_grad()`; `step()` uses them; a leaf without gradient is skipped with
its state untouched, as torch skips `p.grad is None`.

Hyperparameters. Numeric group entries (those whose factory default is a number or a tuple of
numbers, e.g. `lr`, `betas`, `weight_decay`) are fed to the jitted step as one non-weak float
array per step, so editing `param_groups[i]['lr']` takes effect at the next step without a
recompile. Each value travels with its host-computed (float64) `1 - x` and `log(x)` so the
traced step reproduces torch's float64 scalar math (`core.numerics.PreciseScalar`). Other
entries (bools, None, ints listed as static) are compile-time constants: editing them
recompiles once and rebuilds the group's state through the state_dict mapping. A class may
mark a hyperparameter "structural when zero" (SGD's `momentum`: no buffer is allocated while
it is 0; every class's `weight_decay`: no decay pass over the params while it is 0); crossing
zero recompiles once.

Non-finite gradients. By default a nan/inf gradient flows into params and state as in torch.
`skip_nonfinite=True` (a keyword of every class, not in torch; the attribute may be toggled,
which recompiles once) makes a step with any non-finite gradient keep params and state
bit-for-bit and count it in `optimizer.skipped_steps` (a device int32: no host sync per step),
like `torch.amp.GradScaler`'s skipped steps or the functional `apply_if_finite`.
Loss scaling: `step(..., grad_scaler=scaler)` (`optax_like.amp.GradScaler`; the keyword is
torch's contract for optimizers that handle scaling) scales the closure's loss, unscales and
checks its gradients and skips a non-finite step, all in the same jitted call; `scaler.step(
optimizer)` uses it for pending gradients (see `_run_step`).
Compact state and bfloat16 params, group options of every class (not torch's; compile-time):
`mu_dtype` / `nu_dtype` store the group's first / second moments in that float dtype
(`transforms.mixed_precision.compact_state`, optax's rule; a loaded torch state is cast to it);
`stochastic_rounding` (True or an int seed) updates the group's bfloat16 params with torchao's
stochastic rounding, its key folded from the seed, the step count (`optimizer.state[
"stochastic_rounding_count"]`, saved in `state_dict()`) and the group index.

State. `state_dict()` has torch's layout and keys: the functional state's NamedTuple field
names are torch's keys, and each state type declares which fields are buffers, per-param
scalars (with torch's type) or internal (`core.torch_layout`); optim/_state_dict.py is the one
converter both ways, and checks loads (atomic; errors name the param id and the key).
`optimizer.state` and `state_dict()` hand out copies (valid after later steps). Param ids are
the leaves of the groups' trees in `jax.tree.leaves` order, numbered across groups as torch
does; `state_dict()['param_groups'][i]['params']` holds these ids and `optimizer.state[id]` is
that param's state dict. A live `param_groups[i]['params']` is, as in torch, the group's params
themselves: a read-only sequence of the current arrays (valid until the next step, which
donates them).

Group entries. State a reference keeps in its param groups rather than per param
(schedulefree's `k`, `weight_sum`, `lr_max`, `scheduled_lr`) is declared by the state type
(`core.torch_layout.GroupEntries`) and lives in `param_groups[i]` as there: Python numbers after
construction and `load_state_dict`, the state's device scalars after a step (no host sync; valid
until the next step, as `params`; without x64 a float is its float32 high word), the exact
Python values in `state_dict()['param_groups']` and loaded from it. Writing one
(`param_groups[0]['k'] = 0`) loads it into the state at the next step, as the reference's next
step reads it.

Names. A group may be a list of `(name, array)` pairs (torch's `named_parameters()`; see
`optim.named_parameters(tree)`): its names are kept in the group's `param_names` and saved in
`state_dict()`, as torch does; all groups are named or none (torch's errors). The group's tree is
then the list of its arrays (the loss receives lists); with `model=` the loss receives the model. Every param also
has a name from its key path (`"layer.0.weight"`, the path in `model` with `model=`), used to
match a loaded state dict that carries `param_names` by name. One array object given twice is
torch's `UserWarning` within a group (in a tree the copies become independent params, as a
shared zeros buffer means in JAX) and torch's `ValueError` across groups.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import functools
import inspect
import operator
import warnings
import weakref
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
from jax import core as jax_core
import numpy as np

from jax.experimental import sparse as jsparse

from optax_like.core import hyperparams, leaf_order, numerics
from optax_like.core.leaf_scalars import per_leaf_where_none
from optax_like.core.tree import check_params, check_same_structure, is_none, path_str
from optax_like.optim import _names
from optax_like.optim import _state_dict
from optax_like.optim import _step
from optax_like.optim import clip_grad as _clip
from optax_like.optim.hooks import (  # (re-exported: optax_like.optim imports them from here)
    OptimizerHooks, RemovableHandle, register_optimizer_step_post_hook, register_optimizer_step_pre_hook)  # noqa: F401
from optax_like.transforms.sparse_adam import RowSparseGrad

__all__ = [
    "Optimizer",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
    "make_optimizer_class",
]

_live_optimizers: "weakref.WeakSet[Optimizer]" = weakref.WeakSet()


def live_optimizers() -> list["Optimizer"]:
    """The optimizers alive in this process (clip_grad finds the one that holds given params)."""
    return list(_live_optimizers)


def _to_scalar(x: Any) -> Any:
    """torch's `optimizer._to_scalar`: a one-element array hyperparameter of any rank (lr of shape
    (1,) or (1, 1)) is its 0-d value; pairs element by element; anything else as it is."""
    if hyperparams.is_array(x, concrete=True) and x.ndim and x.size == 1:
        return x.reshape(())
    if isinstance(x, tuple) and any(isinstance(v, (jax.Array, np.ndarray)) for v in x):
        return tuple(_to_scalar(v) for v in x)
    return x


class _StateView(dict):
    """`optimizer.state`: a dict snapshot whose writes under keys other than param ids go to
    the optimizer (torch's hooks keep notes there); see `Optimizer.state`."""

    __slots__ = ("_optimizer",)

    def __init__(self, optimizer: "Optimizer", entries: dict) -> None:
        super().__init__(entries)
        self._optimizer = optimizer

    def __setitem__(self, key, value) -> None:
        self._optimizer._set_extra_state(key, value)
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self._optimizer._set_extra_state(key, None, delete=True)
        super().__delitem__(key)

    def pop(self, key, *default):
        if key in self:
            value = self[key]
            del self[key]
            return value
        return super().pop(key, *default)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __reduce_ex__(self, protocol):
        return dict, (dict(self),)  # copies and pickles are plain dicts


def _check_not_donated(tree: Any, what: str, mine: Callable[[Any], bool] = lambda leaf: False) -> None:
    """A ValueError naming the leaf and the optimizer it was donated to, instead of JAX's bare
    'Array has been deleted' at the first use of an array that a step consumed."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]:
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax_core.Tracer) and leaf.is_deleted() and not mine(leaf):
            owner = next((o for o in live_optimizers() if o._is_given(leaf)), None)
            by = (f"was donated to a step of the {type(owner).__name__} optimizer at {id(owner):#x}, which "
                  "updates its params in place as torch's step does" if owner is not None
                  else "has been deleted (donated to a jitted step)")
            raise ValueError(
                f"{what} leaf {path_str(path)} {by}: read the current values from optimizer.params "
                "after the step (copy them, e.g. jax.tree.map(jnp.copy, optimizer.params), to keep "
                "a value across steps).")


def _is_group_list(params: Any) -> bool:
    return (
        isinstance(params, (list, tuple))
        and len(params) > 0
        and all(isinstance(g, dict) and "params" in g for g in params)
    )


# torch's kernel switches: the factories accept and ignore them (one XLA computation either
# way), so they are not part of the compiled step's key: loading a torch state dict (whose
# groups say `foreach: False` where ours say None) or editing them does not recompile.
_KERNEL_SWITCHES = frozenset({"foreach", "fused", "capturable"})


def _hashable(x: Any, name: str = "") -> Any:
    """A compile-time group entry as a hashable key (one-element arrays become Python scalars)."""
    if isinstance(x, (list, tuple)):
        return tuple(_hashable(v, name) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v, name)) for k, v in x.items()))
    if (hyperparams.is_array(x, concrete=True) or isinstance(x, np.generic)) and np.size(x) == 1:
        return np.asarray(x).reshape(()).item()
    try:
        hash(x)
    except TypeError:
        raise TypeError(
            f"param group entry {name!r} is a compile-time option and must be hashable (a Python "
            f"scalar, string, None or tuple), but got {type(x).__name__} {x!r}."
        ) from None
    return x


def _array_dtype(x: Any) -> str | None:
    """The floating dtype of a 0-d array hyperparameter (jax, NumPy or torch), else None."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if hyperparams.is_array(x, concrete=True) and np.size(x) == 1:
        dtype = np.dtype(x.dtype)
        if np.issubdtype(dtype, np.floating) and np.dtype(numerics.float_dtype()).itemsize >= dtype.itemsize:
            return dtype.name
    return None


def _float(x: Any, name: str) -> float:
    try:
        return hyperparams.as_number(x, name)
    except TypeError:
        raise TypeError(f"param group entry {name!r} must be a real number, got {x!r}.") from None



# Group options of every class (not torch's): the dtype its first / second moments are stored in
# (optax's mu_dtype / nu_dtype; transforms.mixed_precision.compact_state).
STATE_DTYPE_OPTIONS = ("mu_dtype", "nu_dtype")


def _state_dtypes(group: dict) -> tuple:
    out = []
    for name in STATE_DTYPE_OPTIONS:
        value = group.get(name)
        if value is None:
            continue
        try:
            dtype = jnp.dtype(value)
        except TypeError:
            dtype = None
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"param group entry {name!r} must be a float dtype (e.g. 'bfloat16'), got {value!r}")
        out.append((name, dtype.name))
    return tuple(out)


def _stochastic_rounding(group: dict) -> int | None:
    """A group's `stochastic_rounding` option (not torch's): None/False (off), True (seed 0) or
    an int seed: its bfloat16 params are updated with `apply_updates_stochastic`."""
    value = group.get("stochastic_rounding")
    if value is None or value is False:
        return None
    if value is True:
        return 0
    if isinstance(value, (int, np.integer)):
        return int(value)
    raise TypeError(f"param group entry 'stochastic_rounding' must be a bool or an int seed, got {value!r}")


# The optimizer.state entry counting the steps of stochastic rounding (saved in state_dict(),
# under a key that is not a param id: torch keeps such entries through load_state_dict).
SR_COUNT = "stochastic_rounding_count"


def _is_grad_leaf(x) -> bool:
    return x is None or isinstance(x, (RowSparseGrad, jsparse.JAXSparse))


def _add_grads(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, RowSparseGrad) and isinstance(b, RowSparseGrad):
        # torch adds sparse grads by concatenating entries; duplicates are summed at the step.
        return RowSparseGrad(jnp.concatenate([a.indices, b.indices]), jnp.concatenate([a.values, b.values]))
    return a + b


@jax.jit
def _accumulate(old, new):
    return jax.tree.map(_add_grads, old, new, is_leaf=_is_grad_leaf)


_DUPLICATE_WARNING = (
    "optimizer contains a parameter group with duplicate parameters; in future, this will cause an "
    "error; see github.com/pytorch/pytorch/issues/40967 for more information"
)


@dataclasses.dataclass(eq=False, slots=True)
class _Group:
    """One param group as the optimizer holds it (`param_groups[i]` is its user-facing dict)."""

    treedef: Any  # of the group's tree
    positions: tuple[int, ...]  # root flat positions of its leaves (see _step.Layout)
    leaves: tuple  # current optimized leaves (None: a leaf that is not optimized)
    state: Any  # the functional state
    spec: _step.GroupSpec
    grads: tuple  # pending gradients (None = no gradient)
    ids: list[int]  # torch's integer ids of its params
    names: list[str]  # their names (given, or key paths), see _names
    named: bool  # given as (name, param) pairs
    order_issue: str | None  # why its leaf order may not be the user's
    positional_names: bool  # its names are list positions ("0", "1.2"), not names
    # the group entries of its state (declared GroupEntries) as last written into param_groups[i]:
    # an entry that is no longer this object was edited by the user (None: the state has none)
    entries: dict | None = None
    # how a helper ordered it among the groups it built from one listing (by first appearance,
    # timm's layer decay; core/leaf_order.py), or None: the groups' order is the user's
    group_order: leaf_order.GroupOrder | None = None


# A group's step arguments (a C-level getter: read for every group at every step).
_STEP_ARGS = operator.attrgetter("leaves", "state", "grads", "spec")


class _GroupParams(collections.abc.Sequence):
    """A live param group's 'params' (torch: the group's tensors): the group's current param
    arrays in id order, read-only. Each step donates them: read again after a step."""

    __slots__ = ("_optimizer", "_group")

    def __init__(self, optimizer: "Optimizer", group: int) -> None:
        self._optimizer, self._group = optimizer, group

    def _arrays(self) -> list:
        return [leaf for leaf in self._optimizer._groups[self._group].leaves if leaf is not None]

    def __len__(self) -> int:
        return len(self._optimizer._groups[self._group].ids)

    def __getitem__(self, index):
        return self._arrays()[index]

    def __iter__(self):
        return iter(self._arrays())

    def __repr__(self) -> str:
        return repr(self._arrays())

    def __deepcopy__(self, memo):
        copied = memo.get(id(self._optimizer))
        if copied is not None:  # inside a deepcopy of the optimizer: the copy's live view
            return _GroupParams(copied, self._group)
        return [jnp.array(a, copy=True) for a in self._arrays()]  # torch: copies of the tensors


class Optimizer(OptimizerHooks):
    """Base class of the stateful optimizers (torch.optim.Optimizer's surface).

    Subclasses set `_factory` (a functional optimizer factory), and optionally `_static`
    (numeric arguments that are compile-time constants, e.g. integer iteration counts) and
    `_structural_zero` (numeric arguments whose zero value removes a block, e.g. SGD momentum).
    `make_optimizer_class` builds them in one line.
    """

    _factory: Callable = None  # pyright: ignore[reportAssignmentType]  (every subclass sets it)
    _static: tuple[str, ...] = ()
    _structural_zero: tuple[str, ...] = ()
    # Group entries torch stores that are not factory arguments (AdamW's decoupled_weight_decay).
    _constants: dict[str, Any] = {}
    # SparseAdam: sparse params are refused at construction, torch's check and message.
    _dense_params_only: bool = False
    # Arguments the reference applies to all groups at once, from its constructor's value:
    # argument -> fn(gradients of every group, value) (see make_optimizer_class's `cross_group`).
    _cross_group: dict[str, Callable] = {}
    # Factory arguments read only from the groups that set them (see make_optimizer_class).
    _group_flags: tuple[str, ...] = ()
    _constructing = False  # True while the constructor adds its groups
    # (closure, args) of the last step when it was a closure's and zero_grad() has not run since:
    # which params that closure reaches (`_step.reached_by_closure`) have gradients, as torch's do
    _last_closure: tuple | None = None

    def __init__(self, params: Any, defaults: dict[str, Any], *, model: Any = None,
                 skip_nonfinite: bool = False) -> None:
        self._factory(**defaults)  # torch's validation and messages, before anything is built
        self.defaults = defaults
        _live_optimizers.add(self)
        # Not in torch: when True, a step whose gradients hold a nan/inf leaves params and state
        # unchanged and adds one to `skipped_steps` (decided on device: no host sync).
        self.skip_nonfinite = bool(skip_nonfinite)
        # The total gradient norm of the latest step(..., clip_grad_norm=...) (device scalar).
        self.last_grad_norm = None
        self._skipped = jnp.zeros((), jnp.int32)
        self._extra_state: dict = {}  # optimizer.state entries under keys that are not param ids
        self._with_entries = False  # a group's state has declared param group entries (see _Group.entries)
        self._init_hooks()
        # The factory's declared argument kinds (core.hyperparams), not the values' Python types:
        # numbers travel as traced floats (an int default such as weight_decay=0 included),
        # flags are compile-time bools (amsgrad=1 is True, as in torch).
        # Split once, from the defaults (`hyperparams.split_arguments`, as inject_hyperparams
        # splits): a group's entry under a number's name is then read as a float or refused.
        # Schedules are compile-time options here.
        kinds = hyperparams.argument_kinds(type(self)._factory)
        self._flag_names = frozenset(k for k in defaults if kinds.get(k) == hyperparams.FLAG)
        self._hyper_names = tuple(hyperparams.split_arguments(type(self)._factory, {
            k: v for k, v in defaults.items() if k not in self._flag_names and k not in self._cross_group},
            self._static, arrays="one")[0])
        # Reads every group's hyperparameters, then its compile-time options, as one tuple (per
        # step: a C-level getter instead of a generator over names).
        names = self._hyper_names + tuple(k for k in defaults if k not in self._hyper_names)
        self._group_values = operator.itemgetter(*names) if len(names) > 1 else (
            lambda group, _names=names: tuple(group[k] for k in _names))
        self.param_groups: list[dict[str, Any]] = []
        self._groups: list[_Group] = []  # what the optimizer holds for each group, in order
        # how the groups' leaves make the user's structure (None only until the first group is added)
        self._layout: _step.Layout = None  # pyright: ignore[reportAttributeAccessIssue]
        self._avals: list[tuple] | None = None  # the leaves' (shape, dtype), see _leaf_avals
        self._hyper_cache = None
        self._given: dict[int, Any] = {}  # id -> weakref of every array object handed over
        self._model_names = None
        if isinstance(params, collections.abc.Iterator):
            params = list(params)  # torch's `list(params)`: a generator of params or named params
        if isinstance(params, jax.Array) or (isinstance(params, np.ndarray)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, "
                f"but got {type(params).__module__}.{type(params).__name__} (here: a pytree of "
                "arrays, or a list of arrays or of dicts); wrap a single array in a list."
            )
        if model is not None:
            flat, self._root_def = jax.tree.flatten(model, is_leaf=is_none)
            self._frozen = list(flat)
            self._model_names = [_names.param_name(path) for path, _ in
                                 jax.tree_util.tree_flatten_with_path(model, is_leaf=is_none)[0]]
            self._mode = "model"
            groups = params if _is_group_list(params) else [{"params": params}]
        elif _is_group_list(params):
            self._root_def, self._frozen, self._mode = None, [], "groups"
            groups = list(params)
        else:
            self._mode = "tree"
            self._root_def, self._frozen = None, []
            groups = [{"params": params}]
        if not jax.tree.leaves(groups[0]["params"]) and len(groups) == 1:
            raise ValueError("optimizer got an empty parameter list")
        if self._dense_params_only:
            sparse = [[g, i] for g, group in enumerate(groups) for i, leaf in enumerate(
                x for x in jax.tree.leaves(group["params"], is_leaf=lambda x: isinstance(x, jsparse.JAXSparse))
                if not isinstance(x, str)) if isinstance(leaf, jsparse.JAXSparse)]
            if sparse:
                raise ValueError(f"Sparse params at indices {sparse}: SparseAdam requires dense parameter tensors")
        self._constructing = True
        try:
            for group in groups:
                self.add_param_group(dict(group))
        finally:
            self._constructing = False
        if model is None and self._mode == "groups" and _names.listed_by_named_parameters(
                leaf for group in self._groups for leaf in group.leaves):
            warnings.warn(
                f"{type(self).__name__}: the param groups list arrays from optim.named_parameters(tree) "
                "but no model= was given, so optimizer.params (and the loss function's argument) is "
                "the list of the groups' params, not your tree. Pass model=tree to get the tree "
                "(leaves in no group are then frozen).", UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ groups and params
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a group (torch's `add_param_group`); the next step compiles once for it."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        tree = param_group["params"]
        if isinstance(tree, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a list instead."
            )
        if isinstance(tree, collections.abc.Iterator):
            tree = list(tree)
        tree, given_names = _names.split_named(tree)
        check_params(tree, "param group")
        _check_not_donated(tree, "param group", self._is_given)  # (ours: torch's duplicate error below)
        paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)
        leaves = [leaf for _, leaf in paths_leaves]
        # torch's key order: the user's (params first), param_names, then the defaults.
        group = {k: v for k, v in param_group.items()}
        if given_names is not None:
            group["param_names"] = given_names
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        # Entries the optimizer does not take are stored and never read, as torch does
        # (Rprop's group with a `weight_decay`: torch keeps it, its step ignores it). torch's
        # validation and messages; the constructor validated its defaults already.
        if not (self._constructing and all(group[k] is v for k, v in self.defaults.items())
                and not any(k in group for k in self._group_flags)):
            self._factory(**{k: group[k] for k in self.defaults},
                          **{k: group[k] for k in self._group_flags if k in group})
        leaves = self._without_duplicates(leaves)
        for other in self._groups:
            if other.named != (given_names is not None):
                raise ValueError(
                    "all optimizer param groups should be with/without names. cannot add param group "
                    f"{'with names' if given_names is not None else 'without names'} to the optimizer"
                )
        current = {id(leaf) for other in self._groups for leaf in other.leaves if leaf is not None}
        if any(leaf is not None and (id(leaf) in current or self._is_given(leaf)) for leaf in leaves):
            raise ValueError("some parameters appear in more than one parameter group")

        mode, positions = self._place(tree, leaves)
        present = [i for i, leaf in enumerate(leaves) if leaf is not None]
        first_id = sum(len(other.ids) for other in self._groups)
        if given_names is not None:
            names = [given_names[i] for i in present]
        elif self._mode == "model":
            # (_model_names is set in "model" mode)
            names = [self._model_names[positions[i]] for i in present]  # pyright: ignore[reportOptionalSubscript]
        else:
            names = [_names.param_name(paths_leaves[i][0]) for i in present]
        spec = self._spec(group)
        opt_leaves = tuple(jnp.asarray(leaf) if leaf is not None else None for leaf in leaves)
        state = self._init_state(spec, treedef.unflatten(opt_leaves), group)
        entry_keys = _state_dict.group_keys(state)
        if entry_keys:  # group entries the user gave (the reference's `setdefault` keeps them)
            state = _state_dict.import_group_entries(state, {k: group[k] for k in entry_keys if k in group})
        # Commit (nothing above mutated self).
        if self._mode == "model":
            for pos in positions:
                if pos >= 0:
                    self._frozen[pos] = None
        for leaf in leaves:
            try:
                self._given[id(leaf)] = weakref.ref(leaf)
            except TypeError:
                pass  # not weak-referenceable (a NumPy scalar): copied by jnp.asarray anyway
        group["params"] = _GroupParams(self, len(self.param_groups))
        entries = _state_dict.export_group_entries(state) if entry_keys else None
        if entries is not None:
            group.update(entries)
            self._with_entries = True
        self.param_groups.append(group)
        self._groups.append(_Group(
            treedef=treedef, positions=positions, leaves=opt_leaves, state=state, spec=spec,
            grads=(None,) * len(leaves), ids=list(range(first_id, first_id + len(present))), names=names,
            named=given_names is not None, order_issue=_names.order_issue(tree, leaves),
            positional_names=given_names is None and mode != "model" and all(
                isinstance(key, jax.tree_util.SequenceKey) for path, _ in paths_leaves for key in path),
            entries=dict(entries) if entries is not None else None, group_order=leaf_order.group_order(leaves)))
        self._mode = mode
        self._layout = _step.Layout(mode, self._root_def, tuple(g.positions for g in self._groups),
                                    tuple(g.treedef for g in self._groups))
        self._avals = None
        self._hyper_cache = None

    def _place(self, tree, leaves) -> tuple[str, tuple[int, ...]]:
        """The mode with the new group (a second group turns a single tree into a list of group
        trees) and the root positions of the group's leaves."""
        if self._mode != "model":
            start = sum(len(group.positions) for group in self._groups)
            return ("groups" if self.param_groups else self._mode), tuple(range(start, start + len(leaves)))
        by_id: dict[int, list[int]] = {}
        for pos, leaf in enumerate(self._frozen):
            if leaf is not None:
                by_id.setdefault(id(leaf), []).append(pos)
        owned = {id(leaf) for group in self._groups for leaf in group.leaves if leaf is not None}
        positions, seen = [], set()
        paths = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]
        for (path, _), leaf in zip(paths, leaves):
            if leaf is None:
                positions.append(-1)
                continue
            if id(leaf) in owned or id(leaf) in seen:
                raise ValueError("some parameters appear in more than one parameter group")
            found = by_id.get(id(leaf), [])
            if len(found) != 1:
                where = "is not a leaf of `model`" if not found else "appears at several places in `model`"
                raise ValueError(
                    f"param group leaf {path_str(path)} {where}: with model=, each group's "
                    "'params' must be a sub-tree of model (leaves are matched by identity, as "
                    "torch matches tensors); pass arrays taken from model itself."
                )
            seen.add(id(leaf))
            positions.append(found[0])
        return "model", tuple(positions)

    def _without_duplicates(self, leaves: list) -> list:
        """torch's UserWarning for an array object given twice in one group. In a tree, the
        repeats become copies (independent params: a tied weight is one leaf used twice in the
        loss, a repeated object is a shared buffer such as one `jnp.zeros(n)` for several
        biases); with model=, a repeated sub-tree leaf is the same model leaf: optimized once."""
        out, seen = list(leaves), set()
        for i, leaf in enumerate(leaves):
            if leaf is None:
                continue
            if id(leaf) in seen:
                if all(a is b for a, b in zip(out, leaves)):  # once per group, as torch
                    warnings.warn(_DUPLICATE_WARNING, UserWarning, stacklevel=4)
                out[i] = None if self._mode == "model" else jnp.array(leaf, copy=True)
            seen.add(id(leaf))
        return out

    def _is_given(self, leaf) -> bool:
        """Whether `leaf` (an array object) was handed to this optimizer (maybe donated since)."""
        ref = self._given.get(id(leaf))
        return ref is not None and ref() is leaf

    # ------------------------------------------------------------------ ids and names (state_dict)
    def _own_groups(self) -> list[dict]:
        """The groups this optimizer holds state for, in order: `param_groups` as built by the
        constructor and `add_param_group` (a list the user extended with its own groups, torch's
        `param_groups.extend(param_groups)`, keeps them first)."""
        return self.param_groups[: len(self._groups)]

    def _group_index(self, group: dict) -> int:
        """The index of one of `param_groups`' dicts among this optimizer's own groups."""
        for g, own in enumerate(self._own_groups()):
            if own is group:
                return g
        raise ValueError(
            "a param_groups entry is not one of this optimizer's groups (a dict put into "
            "optimizer.param_groups by hand): add groups with add_param_group.")

    def _group_order_issues(self) -> list[str | None]:
        """Per group, why its position among the groups may not be the saver's (torch's), or None
        (`core.leaf_order.group_order_issues`: timm's layer decay on a params dict)."""
        return leaf_order.group_order_issues([group.group_order for group in self._groups])

    def _export_param_groups(self) -> list[dict]:
        """`state_dict()["param_groups"]`: torch's layout (copies; int ids under "params", last,
        as torch's `pack_group`; "param_names" for named groups). A group whose dict leaves JAX
        orders differently from their insertion order also saves its key-path names, so that
        loading it back maps by name (see `_saved_to_current_ids`)."""
        out = []
        for group in self.param_groups:
            record = self._groups[self._group_index(group)]
            entries = self._group_entries(group, record)
            packed = {k: entries[k] if k in entries else copy.deepcopy(v) for k, v in group.items() if k != "params"}
            if "param_names" not in packed and record.order_issue is not None:
                packed["param_names"] = list(record.names)
            packed["params"] = list(record.ids)
            out.append(packed)
        return out

    def _saved_to_current_ids(self, saved_groups: list[dict]) -> tuple[dict[int, int], set[int]]:
        """Maps a loaded state dict's param ids to ours, group by group; never by a guess.
        Returns the map and the groups (of several params) mapped by position.

        * The saved group carries `param_names` (torch's, saved by an optimizer built from
          `named_parameters()`, or ours) and they are our params' names (given names, or key
          paths such as "10.weight"): by name.
        * Otherwise by position (torch's rule: saved ids in order against our params in order),
          but only where our order is the one the user listed (a list or tuple of arrays or
          `(name, param)` pairs, as torch's params are listed), or the group has one param.
        * Everything else is refused, naming the group, why its order is unknown and the fix:
          names carried that are not ours while we have names of our own, or no names while our
          order is JAX's (a dict's sorted keys, a module's flatten order, arrays listed by
          `optim.named_parameters`; see `_names.order_issue`), even where the shapes would fit.
        """
        if len(self.param_groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(self._groups[g].ids) != len(s["params"]) for g, s in enumerate(saved_groups)):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
            )
        fix = (
            "Load it with optax_like.interop.torch.load_torch_state_dict(optimizer, state_dict, "
            "source=model) (the torch model, model.named_parameters(), or the names in its "
            "parameters() order), or add the names in the saved order before loading: "
            "state_dict['param_groups'][{g}]['param_names'] = [...]; or build the optimizer from a "
            "list of params (or (name, param) pairs) in the saver's order."
        )
        id_map: dict[int, int] = {}
        by_position: set[int] = set()
        group_issues = self._group_order_issues()
        for g, saved in enumerate(saved_groups):
            record = self._groups[g]
            ids, names = record.ids, record.names
            saved_ids = list(saved["params"])
            saved_names = saved.get("param_names")
            issue = (record.order_issue if len(ids) > 1 else None) or group_issues[g]
            if saved_names is not None:
                saved_names = [str(n) for n in saved_names]
                if len(saved_names) != len(saved_ids):
                    raise ValueError(
                        f"loaded param group {g} has {len(saved_names)} param_names for {len(saved_ids)} params")
                if len(set(names)) == len(names) and sorted(saved_names) == sorted(names):
                    index = {name: i for i, name in enumerate(names)}
                    id_map.update((sid, ids[index[name]]) for sid, name in zip(saved_ids, saved_names))
                    continue
                if not record.positional_names or issue is not None:
                    unknown = [n for n in saved_names if n not in set(names)][:3]
                    raise ValueError(
                        f"loaded param group {g} names its params {saved_names[:4]}..., which are not "
                        f"this optimizer's ({names[:4]}...; e.g. {unknown} are unknown): the state "
                        "cannot be matched to the params by name. Rename them in the state dict "
                        f"(state_dict['param_groups'][{g}]['param_names']), or give the params in the "
                        "saved order (a list or named pairs) and delete 'param_names' to load by position."
                    )
                # Our names are list positions (or a single param): the order is the user's, as torch's is.
            elif issue is not None:
                raise ValueError(
                    f"cannot tell which saved state belongs to which param of group {g}: the loaded "
                    f"param group carries no 'param_names', and {issue}; the saver's order (torch's: "
                    "registration order) need not be this one, and loading by position could put a "
                    "param's state on another param of the same shape. " + fix.format(g=g)
                )
            id_map.update(zip(saved_ids, ids))
            if len(ids) > 1:
                by_position.add(g)
        return id_map, by_position

    def _global_entry_in_our_order(self, group: _Group, saved: dict, id_map: dict, per_param: list[dict],
                                   flat_keys: tuple[str, ...]) -> list[dict]:
        """A group's loaded entries with a global state (torch's LBFGS: one dict under the first
        param, flat vectors over the params in the saver's order) in our order: when the load
        matched the params by name in another order, the entry moves to our first param and its
        declared flat vectors are permuted segment by segment."""
        ids = group.ids
        ours = [ids.index(id_map[sid]) for sid in saved["params"]]  # saved position -> ours
        if ours == list(range(len(ids))) or any(e for i, e in enumerate(per_param) if i != ours[0]):
            return per_param  # same order; or entries elsewhere, which the declared load refuses
        leaves = [leaf for leaf in group.leaves if leaf is not None]
        sizes = [int(np.size(leaf)) * (2 if jnp.iscomplexobj(leaf) else 1) for leaf in leaves]
        moved = _state_dict.permute_flat_entry(
            per_param[ours[0]], flat_keys, [sizes[i] for i in ours], [ours.index(i) for i in range(len(ids))])
        return [moved] + [{} for _ in ids[1:]]

    def _spec(self, group) -> _step.GroupSpec:
        static = tuple(
            (k, hyperparams.as_flag(group[k], k) if k in self._flag_names else _hashable(group[k], k))
            for k in self.defaults
            if k not in self._hyper_names and k not in _KERNEL_SWITCHES and k not in self._cross_group
        ) + tuple((k, hyperparams.as_flag(group[k], k)) for k in self._group_flags if k in group)
        index_argument = getattr(type(self), "_group_index_argument", None)
        if index_argument is not None:  # the group's position in param_groups (a group being added: the next)
            params = group.get("params")
            own = isinstance(params, _GroupParams) and params._optimizer is self
            static += ((index_argument, params._group if own else len(self._groups)),)
        layout = tuple(
            (k, len(group[k]) if isinstance(group[k], (tuple, list)) else 0, _array_dtype(group[k]))
            for k in self._hyper_names
        )
        zero = tuple(k for k in self._structural_zero if _float(group[k], k) == 0.0)
        return _step.GroupSpec(type(self)._factory, static, layout, zero, _state_dtypes(group),
                               _stochastic_rounding(group))

    def _hyper_array(self, group, leaves=()) -> np.ndarray:
        """The group's numeric hyperparameters as (x, 1 - x, log x) float64 rows. Each value must
        fit the traced hyperparameter dtype and the dtype its params compute in (`leaves`): torch
        raises "value cannot be converted to type float without overflow" for `SGD(lr=1e308)` on
        float32 params; we raise it, naming the entry, instead of stepping with inf."""
        check_dtypes = {numerics.float_dtype()} | {
            numerics.compute_dtype(jnp.finfo(leaf.dtype).dtype) for leaf in leaves if leaf is not None}
        rows = []
        for name in self._hyper_names:
            value = group[name]
            for x in (value if isinstance(value, (tuple, list)) else (value,)):
                x = _float(x, name)
                for dtype in check_dtypes:
                    numerics.check_representable(x, dtype, name)
                rows.append(numerics.precise_triple(x))
        return np.asarray(rows, dtype=np.float64).reshape(-1, 3)

    def _init_state(self, spec: _step.GroupSpec, params, group):
        # Some states start from a hyperparameter (Rprop's step_size = lr, ASGD's eta = lr).
        rows = jnp.asarray(self._hyper_array(group, jax.tree.leaves(params)), numerics.float_dtype())
        state = _step.init_state(spec, rows, params)
        # A state declared to exist from construction takes these from the constructor's values
        # for the constructor's groups (torch's Adagrad; core.torch_layout.TorchLayout).
        args = _state_dict.construction_args(state) if self._constructing else ()
        if any(group[k] is not self.defaults[k] for k in args):
            group = {**group, **{k: self.defaults[k] for k in args}}
            state = _step.init_state(spec, jnp.asarray(self._hyper_array(group), numerics.float_dtype()), params)
        return state

    @property
    def params(self) -> Any:
        """Current params in the user's structure (valid until the next step: copy to keep)."""
        return _step.user_tree(self._layout, [group.leaves for group in self._groups], self._frozen)

    @params.setter
    def params(self, value: Any) -> None:
        _check_not_donated(value, "new params")
        new = self._split(value, "params")
        for group, leaves in zip(self._groups, new):
            for a, b in zip(group.leaves, leaves):
                if (a is None) != (b is None) or (a is not None and jnp.shape(a) != jnp.shape(b)):
                    raise ValueError("new params must have the structure and shapes of optimizer.params")
        new = [tuple(None if b is None else jnp.asarray(b, a.dtype) for a, b in zip(group.leaves, leaves))
               for group, leaves in zip(self._groups, new)]
        self._avals = None
        for group, leaves in zip(self._groups, new):
            group.leaves = leaves

    def _split(self, tree, what) -> list[tuple]:
        """A tree in the user's structure -> per-group leaf tuples (None allowed)."""
        if self._mode == "model":
            # (_root_def is set in "model" mode)
            flat = self._root_def.flatten_up_to(tree)  # pyright: ignore[reportOptionalMemberAccess]
            return [tuple(flat[p] if p >= 0 else None for p in group.positions) for group in self._groups]
        trees = [tree] if self._mode == "tree" else list(tree)
        if len(trees) != len(self._groups):
            raise ValueError(f"{what} must be a list of {len(self._groups)} group trees")
        try:
            return [tuple(group.treedef.flatten_up_to(t)) for group, t in zip(self._groups, trees)]
        except (ValueError, TypeError) as e:
            raise ValueError(f"{what} do not have the structure of optimizer.params: {e}") from None

    # ------------------------------------------------------------------ gradients
    @property
    def grad(self) -> Any:
        """Pending (accumulated) gradients in the params' structure; None = no gradient."""
        return _step.user_tree(self._layout, [group.grads for group in self._groups], [None] * len(self._frozen))

    @grad.setter
    def grad(self, value: Any) -> None:
        self._set_grads(self._check_grads(value))

    def _set_grads(self, grads: list[tuple]) -> None:
        """New pending gradients, per group. Switches the state of each group whose gradients
        miss some optimized leaf to per-leaf scalars (`core.leaf_scalars.per_leaf_scalars`):
        torch skips a param whose grad is None, and a functional update only accepts that on
        such a state. The state's structure changes here, between steps, once per group (the
        jitted step compiles once more), never inside a step."""
        for group, group_grads in zip(self._groups, grads):
            group.grads = group_grads
            group.state = per_leaf_where_none(group.state, group_grads, group.leaves)

    def _allow_pending_none_grads(self) -> None:
        """After the state was rebuilt (a load, an option edit): pending gradients set with a
        None leaf need per-leaf scalars (none pending: the next `backward`/`grad` decides)."""
        if any(gr is not None for group in self._groups for gr in group.grads):
            self._set_grads([group.grads for group in self._groups])

    def _leaf_avals(self) -> list[tuple]:
        """(shape, dtype) of each optimized leaf, per group (None: not optimized). Cached: a step
        returns leaves of the same shapes and dtypes; adding a group or setting params resets it."""
        if self._avals is None:
            self._avals = [tuple(None if p is None else (p.shape, p.dtype) for p in group.leaves)
                           for group in self._groups]
        return self._avals

    def _check_grads(self, grads) -> list[tuple]:
        # Fast path (every step): structure, shapes and dtypes equal to the params'. Anything
        # else goes through core.tree's check, which names the offending leaf path (and
        # accepts what the functional optimizers accept, e.g. float32 grads for bf16 params).
        # Reads each jax.Array's `aval` (an attribute; `.shape`/`.dtype` are properties that cost
        # twice as much, and this runs for every leaf at every step).
        try:
            new = self._split(grads, "grads")
            same, stray = True, False
            for leaves, avals in zip(new, self._leaf_avals()):
                for g, pa in zip(leaves, avals):
                    if g is None:
                        continue
                    if pa is None:
                        stray = True  # a gradient for a leaf that is not optimized: dropped
                        continue
                    ga = getattr(g, "aval", None)
                    if ga is None:
                        if isinstance(g, RowSparseGrad):  # sparse: checked at the step
                            continue
                        ga = g
                    if ga.shape != pa[0] or ga.dtype != pa[1]:
                        same = False
                        break
        except (ValueError, TypeError, AttributeError):
            new, same = None, False
        if not same or new is None:  # (new is None only when not same)
            check_same_structure(self.params, grads, "params", "grads")
            if new is None:
                new = self._split(grads, "grads")
            stray = True
        if not stray:
            return new
        return [tuple(None if p is None else g for g, p in zip(l, group.leaves)) for l, group in zip(new, self._groups)]

    def backward(self, grads: Any) -> None:
        """Accumulates `grads` into the pending gradients, as `loss.backward()` adds to `.grad`."""
        new = self._check_grads(grads)
        old = tuple(group.grads for group in self._groups)
        self._set_grads(new if all(g is None for group in old for g in group) else list(_accumulate(old, tuple(new))))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drops the pending gradients (or zeroes those that exist, as torch does)."""
        if set_to_none:
            self._last_closure = None
        for group in self._groups:
            group.grads = ((None,) * len(group.grads) if set_to_none
                           else tuple(None if g is None else jnp.zeros_like(g) for g in group.grads))

    def _closure_gradients(self) -> list[tuple[bool, ...]] | None:
        """Per group, per leaf: whether the last `step(closure)` left the param a gradient (torch's
        `p.grad is not None` after its closure: the loss reaches it); None when the last step
        was not a closure's or `zero_grad()` ran since. Traces the closure (abstractly) once per
        call: for rare readers (timm's `Lookahead.sync_lookahead`), not every step."""
        if self._last_closure is None:
            return None
        closure, args = self._last_closure
        return _step.reached_by_closure(self._layout, closure, [g.leaves for g in self._groups], self._frozen, args)

    # ------------------------------------------------------------------ step
    def step(self, closure: Callable | None = None, *args: Any, **kwargs: Any):
        """One optimization step; with `closure(params, *args)`, returns its loss, or
        `(loss, aux)` when the closure returns `(loss, aux)` (aux: any pytree of the same
        evaluation, e.g. logits or new BatchNorm statistics; same jitted call).

        Keywords (not torch's; they clip inside the jitted step, see optim/clip_grad.py):
        `clip_grad_norm=max_norm` (with `norm_type=2.0`) scales the gradients as torch's
        `clip_grad_norm_` and leaves the total norm in `optimizer.last_grad_norm`;
        `clip_grad_value=v` clamps them as `clip_grad_value_`. A new value recompiles once.
        `grad_scaler=scaler` (an `optax_like.amp.GradScaler`): torch's AMP iteration in this call,
        the closure's loss scaled, its gradients unscaled (then clipped) and the update skipped
        when one is inf or nan; call `scaler.update()` after it, as in torch.

        Runs the global and own step pre hooks (which may replace args/kwargs), the step, then
        the own and global post hooks, in torch's order.
        """
        if not self._has_step_hooks():
            return self._step(closure, *args, **kwargs)
        return self._step_with_hooks(self._step, (closure, *args), kwargs)

    def _hypers(self):
        values = [(self._group_values(g), g.get("mu_dtype"), g.get("nu_dtype"), g.get("stochastic_rounding"),
                   *[(k in g, g.get(k)) for k in self._group_flags])
                  for g in self._own_groups()]
        cache = self._hyper_cache
        if cache is not None and cache[0] == values:
            return cache[1]
        self._refresh_specs()
        hypers = jnp.asarray(
            np.stack([self._hyper_array(g, record.leaves) for g, record in zip(self._own_groups(), self._groups)]),
            numerics.float_dtype()
        )
        self._hyper_cache = (copy.deepcopy(values), hypers)
        return hypers

    def _refresh_specs(self) -> None:
        """Rebuilds the state of groups whose compile-time options were edited."""
        for index, (group, record) in enumerate(zip(self._own_groups(), self._groups)):
            spec = self._spec(group)
            if spec != record.spec:
                per_param = self._export_group(record)
                entries = _state_dict.export_group_entries(record.state) if record.entries is not None else None
                params = record.treedef.unflatten(record.leaves)
                fresh = self._init_state(spec, params, group)
                try:
                    record.state = self._import_group(record, fresh, per_param, entries)
                except ValueError as error:
                    edited = sorted({k for k, _ in set(spec.static_items) ^ set(record.spec.static_items)})
                    raise ValueError(f"param group {index}: the edited option(s) {edited} do not fit the state "
                                     f"its params have (left unchanged): {error}") from None
                record.spec = spec
                self._allow_pending_none_grads()

    def _step(self, closure=None, *args, **kwargs):
        grad_scaler = kwargs.pop("grad_scaler", None) if kwargs else None
        clip = _clip.check_step_clip(kwargs.pop("clip_grad_norm", None), kwargs.pop("norm_type", 2.0),
                                     kwargs.pop("clip_grad_value", None)) if kwargs else None
        if kwargs:
            raise TypeError(f"step() got unexpected keyword arguments {sorted(kwargs)}")
        hypers = self._hypers()
        try:
            return self._run_step(_step.gradient_update, hypers, closure, args, clip, bool(self.skip_nonfinite),
                                  grad_scaler)
        except RuntimeError as error:
            if "has been deleted" not in str(error):
                raise
            raise RuntimeError(
                f"{type(self).__name__}.step(): {str(error).rstrip('.')}. An array given to this step (a batch "
                "argument, a gradient, or an array the loss function captures) was donated to an "
                "earlier step: params are updated in place, as torch's step does. Pass the params "
                "through the loss function's first argument, and read optimizer.params after each "
                "step (copy to keep a value)."
            ) from None

    def _run_step(self, update: Callable, hypers, closure, args: tuple, clip=None, skip_nonfinite: bool = False,
                  grad_scaler=None):
        """The jitted step (optim/_step.py) with the rule `update` (LBFGS's step passes its own):
        a closure discards the pending gradients; returns the loss, or (loss, aux).

        `grad_scaler` (`optax_like.amp.GradScaler`, torch's `step(..., grad_scaler=)` contract)
        takes part through two calls: `_step_operand(optimizer, closure)` -> (mode, array)
        before the step (see optim/_step.py: "scale" with the scale, "skip" with found_inf;
        mode None: no scaling) and `_stepped(optimizer, found_inf)` after it."""
        amp_mode, amp = grad_scaler._step_operand(self, closure) if grad_scaler is not None else (None, None)
        groups = self._groups
        if self._has_group_entries:
            self._load_edited_group_entries()
        if closure is not None:
            for group in groups:
                group.grads = (None,) * len(group.grads)
        leaves, states, grads, specs = zip(*map(_STEP_ARGS, groups))
        count = None
        if any(spec.stochastic_rounding is not None for spec in specs):
            count = int(self._extra_state.get(SR_COUNT, 0))
            self._extra_state[SR_COUNT] = count + 1
            count = np.int32(count)
        (loss, aux, grad_norm, found_inf), leaves, states, skipped = _step.jitted_step(
            _step.Config(update, closure, self._layout, specs, skip_nonfinite, clip, amp_mode, self._cross_group_step()),
            leaves, states,
            tuple(self._frozen), hypers, grads, args, self._skipped if skip_nonfinite else None, amp, count,
        )
        for group, group_leaves, state in zip(groups, leaves, states):
            group.leaves, group.state = group_leaves, state
        # torch's closure leaves its gradients in p.grad (timm's Lookahead.sync_lookahead reads
        # which params have one); ours are consumed inside the step: remember the call, whose
        # reach tells which exist (`_closure_gradients`)
        self._last_closure = None if closure is None else (closure, args)
        if self._has_group_entries:
            for group, record in zip(self._own_groups(), groups):
                if record.entries is not None:  # the live entries: the new state's device scalars
                    record.entries = _state_dict.group_view(record.state)
                    group.update(record.entries)
        if skipped is not None:
            self._skipped = skipped
        self.last_grad_norm = grad_norm
        if amp_mode is not None and grad_scaler is not None:  # (amp_mode is None without a grad_scaler)
            grad_scaler._stepped(self, found_inf)
        return loss if aux is None else (loss, aux[0])

    def _cross_group_step(self) -> tuple:
        """The step's `(fn, value)` pairs of the class's `cross_group` arguments, each with the
        value in `defaults` now (the reference reads `self.defaults[...]` at each step); None: off."""
        if not self._cross_group:
            return ()
        return tuple((fn, _hashable(self.defaults[name], name)) for name, fn in self._cross_group.items()
                     if self.defaults.get(name) is not None)

    def _pending_grads(self) -> tuple[tuple, ...]:
        """The pending gradients, per group (leaf tuples, None = no gradient): for GradScaler."""
        return tuple(group.grads for group in self._groups)

    def _replace_pending_grads(self, grads: tuple[tuple, ...]) -> None:
        """New values for the pending gradients (same leaves present: GradScaler's unscale_)."""
        for group, group_grads in zip(self._groups, grads):
            group.grads = tuple(group_grads)

    @property
    def skipped_steps(self) -> jax.Array:
        """Steps skipped for non-finite gradients (with `skip_nonfinite=True`), an int32 device
        scalar: reading it as a Python int syncs with the device."""
        return self._skipped

    # ------------------------------------------------------------------ state and state_dict
    def _export_group(self, group: _Group) -> list[dict]:
        """Per-param torch-style state dicts of a group (live arrays; empty = not stepped)."""
        return _state_dict.export_state(group.state, group.treedef, group.leaves)

    def _import_group(self, group: _Group, fresh, per_param: list[dict], entries: dict | None = None):
        """`fresh` (an init state) with torch-style per-param entries (and the param group's
        `entries`, for a state with declared group entries) written in (pure, checked; see
        optim/_state_dict.py), each leaf placed like `fresh`'s (the params' shardings)."""
        state = _state_dict.import_state(fresh, per_param, group.treedef, group.leaves, list(group.ids))
        return _state_dict.import_group_entries(state, entries) if entries else state

    @property
    def _has_group_entries(self) -> bool:
        """Whether a group's state declares param group entries (schedulefree's `k`)."""
        return self._with_entries

    def _group_entries(self, group: dict, record: _Group) -> dict:
        """The group's declared entries as Python values: the state's, or the user's edit."""
        if record.entries is None:
            return {}
        exported = _state_dict.export_group_entries(record.state)
        return {k: (exported[k] if group.get(k, obj) is obj else _state_dict.plain(group[k]))
                for k, obj in record.entries.items()}

    def _load_edited_group_entries(self) -> None:
        """Loads the group entries the user wrote into `param_groups` since the last step (the
        reference's next step reads its group's `k`, `lr_max`, ... as they are)."""
        for group, record in zip(self._own_groups(), self._groups):
            if record.entries is None:
                continue
            edited = {k: group[k] for k, obj in record.entries.items() if k in group and group[k] is not obj}
            if edited:
                record.state = _state_dict.import_group_entries(record.state, edited)
                record.entries = {**record.entries, **{k: group[k] for k in edited}}

    def _check_state_keys(self, group: _Group, fresh, per_param: list[dict]) -> None:
        """Each loaded entry has the state keys a stepped param of the group has (if declared)."""
        expected = _state_dict.expected_keys(fresh, group.treedef, group.leaves)
        if expected is not None:
            _state_dict.check_keys(list(group.ids), per_param, expected, type(self).__name__,
                                   _state_dict.lazy_keys(fresh))

    @property
    def state(self) -> dict[Any, Any]:
        """Per-param state keyed by param id (torch's keys): a snapshot, whose arrays are copies
        that stay valid after later steps (read it once, not per param: each read copies).

        Entries under other keys are the user's, as in torch's `optimizer.state`: writing
        `optimizer.state['note'] = x` (hooks do) keeps it in the optimizer, in `state_dict()`
        and through `load_state_dict`. A param's own entry is computed from the functional
        state: writing it is a TypeError that names the way (`load_state_dict`)."""
        return _StateView(self, {**_state_dict.copy_arrays(self._live_state()), **self._extra_state})

    def _set_extra_state(self, key: Any, value: Any, delete: bool = False) -> None:
        if isinstance(key, (int, np.integer)) and any(key in group.ids for group in self._groups):
            raise TypeError(
                f"optimizer.state[{key}] is param {key}'s state, computed from the functional state "
                "(a snapshot here): change it through a state dict, optimizer.load_state_dict(sd) "
                "with sd = optimizer.state_dict() edited.")
        if delete:
            del self._extra_state[key]
        else:
            self._extra_state[key] = value

    def _live_state(self) -> dict[int, dict[str, Any]]:
        out = {}
        for group in self._groups:
            for pid, entry in zip(group.ids, self._export_group(group)):
                if entry:
                    out[pid] = entry
        return out

    def state_dict(self) -> dict[str, Any]:
        """torch's `{'state': {id: {...}}, 'param_groups': [{..., 'params': [ids]}]}` (copies)."""
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state = dict(self.state)  # copies (a plain dict: hooks may edit it)
        state_dict = _state_dict.StateDict(state=state, param_groups=self._export_param_groups())
        # Declared for torch.save's conversion: which groups' order is not the user's (pyright: StateDict
        # does not declare the attribute).
        state_dict.order_issues = [  # pyright: ignore[reportAttributeAccessIssue]
            self._groups[self._group_index(group)].order_issue for group in self.param_groups]
        # and how a helper ordered the groups (interop.torch matches them to torch's by name)
        state_dict.group_orders = [  # pyright: ignore[reportAttributeAccessIssue]
            self._groups[self._group_index(group)].group_order for group in self.param_groups]
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state dict (ours or torch's, arrays or tensors); atomic: on error, no change."""
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        id_map, by_position = self._saved_to_current_ids(saved_groups)
        by_id = {id_map[k]: v for k, v in state_dict["state"].items() if k in id_map}
        new_groups, new_names = [], []
        for group, record, saved in zip(self.param_groups, self._groups, saved_groups):
            # torch's new group is the saved one (entries the optimizer does not take included)
            # with the current params; the class's constants stay (AdamW's decoupled_weight_decay).
            new_group = {k: (_state_dict.plain(v) if k in self.defaults else v)
                         for k, v in saved.items() if k not in ("params", "param_names")}
            for k in self.defaults:
                new_group.setdefault(k, group[k])
            new_group.update(type(self)._constants)
            for name in (*STATE_DTYPE_OPTIONS, "stochastic_rounding"):  # ours: a torch state dict keeps the group's
                if name not in saved and group.get(name) is not None:
                    new_group[name] = group[name]
            new_group = {"params": group["params"], **new_group}
            names = record.names
            saved_names = [str(n) for n in saved.get("param_names", names)]
            if sorted(saved_names) != sorted(names):
                names = saved_names  # loaded by position: torch keeps the saved names
            if "param_names" in saved or "param_names" in group:
                new_group["param_names"] = list(names)
            new_groups.append(new_group)
            new_names.append(names)
        for g, (group, new_group) in enumerate(zip(self.param_groups, new_groups)):
            _state_dict.check_group(self._factory, new_group, group, list(self.defaults), g)
        new_specs = [self._spec(group) for group in new_groups]
        new_states = []
        for g, (record, group, spec) in enumerate(zip(self._groups, new_groups, new_specs)):
            fresh = self._init_state(spec, record.treedef.unflatten(record.leaves), group)
            per_param = _state_dict.loaded_entries(by_id, list(record.ids), fresh)
            flat_keys = _state_dict.global_flat_keys(fresh)
            if flat_keys is not None:  # torch's LBFGS: one entry, vectors in the saver's param order
                per_param = self._global_entry_in_our_order(record, saved_groups[g], id_map, per_param, flat_keys)
            try:
                self._check_state_keys(record, fresh, per_param)
                state = self._import_group(record, fresh, per_param)
            except ValueError as error:
                if g not in by_position:
                    raise
                raise ValueError(
                    f"{error}. Param group {g} was loaded by position (torch's rule for params given "
                    "as a list, with no saved param_names), so its list must be in the saver's order "
                    "(torch: model.parameters() order; jax.tree.leaves(params) is sorted by key, not "
                    "that order). Give the params names ((name, param) pairs, a params dict or "
                    "model=params) and load with optax_like.interop.torch.load_torch_state_dict("
                    "optimizer, state_dict, source=model), or add the saved param_names."
                ) from None
            entry_keys = _state_dict.group_keys(state)  # the reference's group entries (schedulefree's k)
            try:
                new_states.append(_state_dict.import_group_entries(state, {k: group[k] for k in entry_keys if k in group}))
            except (ValueError, TypeError) as error:
                raise type(error)(f"loaded param_groups[{g}]: {error}") from None
        # Commit.
        self._extra_state = {k: v for k, v in state_dict["state"].items() if k not in id_map}  # torch keeps them
        self.param_groups[:] = new_groups
        for record, group, names, spec, state in zip(self._groups, new_groups, new_names, new_specs, new_states):
            record.names, record.spec, record.state = names, spec, state
            if record.entries is not None:  # the loaded entries, as Python values
                record.entries = _state_dict.export_group_entries(state)
                group.update(record.entries)
            record.named = record.named or "param_names" in group
            record.positional_names = record.positional_names and "param_names" not in group
        self._hyper_cache = None
        self._allow_pending_none_grads()
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __repr__(self) -> str:
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def class_factory(factory: Callable, constants: Iterable[str] = (), cleared: Iterable[str] = ()) -> Callable:
    """`factory` as a class calls it: one-element array hyperparameters squeezed (torch's
    `_to_scalar`), the class's `constants` (group entries that are not factory arguments)
    left out and its `cleared` arguments None (`cross_group` ones: the class applies them over
    all groups). Its signature is the factory's (`functools.wraps`)."""
    constants = frozenset(constants)
    cleared = frozenset(cleared)

    @functools.wraps(factory)
    def wrapped(**kwargs):
        return factory(**{k: _to_scalar(v) for k, v in kwargs.items() if k not in constants and k not in cleared},
                       **dict.fromkeys(cleared))

    return wrapped


def make_optimizer_class(name: str, factory: Callable, *, static: Iterable[str] = (),
                         structural_zero: Iterable[str] = (), constants: dict[str, Any] | None = None,
                         snapshots: dict[str, str | Callable] | None = None, dense_params_only: bool = False,
                         cross_group: dict[str, Callable] | None = None, group_flags: Iterable[str] = (),
                         group_index: str | None = None, doc: str | None = None, base: type | None = None) -> type:
    """A torch-named Optimizer class for `factory`: its signature and defaults are the factory's.

        SGD = make_optimizer_class("SGD", optax_like.sgd, structural_zero=("momentum",))

    `constants` are param-group entries torch stores that are not constructor arguments
    (AdamW's `decoupled_weight_decay=True`): shown in `defaults` and `param_groups`, never passed
    to the factory. `snapshots = {entry: argument}`: a None `entry` becomes the constructor's
    `argument` as a float (timm's `max_lr_snapshot`: the constructor's lr, kept while schedulers
    edit `lr`); an `argument` that is a function is called with the constructor's arguments
    instead (`{name: value}`) and gives the entry (timm's Adafactor: `beta1` from `betas`,
    `relative_step` from `lr is None`). `dense_params_only`: sparse params are refused at construction (SparseAdam).
    `cross_group = {argument: fn}`: an argument the reference applies to all its param groups at
    once, reading the constructor's value (`defaults`, as timm's Lamb reads
    `self.defaults['max_grad_norm']` for one gradient clip over every group): each step, after
    the step's own clipping and before the groups' updates, the gradients of every group go
    through `fn(grads, value)` (a flat list, None for no gradient; traceable), with the value in
    `optimizer.defaults` then (a new value recompiles once; None: not applied); each group's
    factory is called with the argument None. The groups keep it as an entry (the reference's
    groups do), which the step does not read, as the reference does not.
    `group_flags`: keyword-only flag arguments of the factory that the reference reads from a
    param group only where the group sets them, and never from its constructor (timm's Muon's
    `use_fallback` / `use_muon`): not constructor arguments nor `defaults`; a group's own entry
    (where present) goes to its factory as a compile-time bool, read as the reference's `if`
    reads it (a present None is False).
    `group_index`: the name of a keyword-only int argument of the factory (default 0) that receives
    the group's position in `param_groups` (static: each group compiles its own program), for a
    reference whose step differs per group by more than its entries (timm's Kron draws from one
    stream over all its groups; ours keys each draw on the group too: `kron(param_group=...)`).
    Not a constructor argument nor in `defaults`; `param_groups`' functional builders pass a
    group's position among its optimizer's groups the same way.
    `base`: the class to derive from (an `Optimizer` subclass with the reference's own methods,
    e.g. schedulefree's `train()`/`eval()`, optim/schedule_free.py); default `Optimizer`.
    How the state maps to torch's state dict is declared by the state types
    (core.torch_layout), not here.
    """
    group_flags = tuple(group_flags)
    signature = inspect.signature(factory)
    if group_index is not None and signature.parameters.get(group_index, None) is None:
        raise TypeError(f"make_optimizer_class: group_index {group_index!r} is not an argument of "
                        f"{getattr(factory, '__name__', factory)}")
    signature = signature.replace(parameters=[p for p in signature.parameters.values()
                                              if p.name not in group_flags and p.name != group_index])
    base_cls = Optimizer if base is None else base
    if not (isinstance(base_cls, type) and issubclass(base_cls, Optimizer)):
        raise TypeError(f"make_optimizer_class: base must be an Optimizer subclass, got {base!r}")
    snapshots = dict(snapshots or {})
    names = [p.name for p in signature.parameters.values()]
    constants = dict(constants or {})
    # weight_decay == 0 drops the decay block (no extra pass over the params); a traced zero
    # would keep it. Crossing zero recompiles once.
    structural_zero = tuple(structural_zero) + (
        ("weight_decay",) if "weight_decay" in names and "weight_decay" not in tuple(structural_zero) else ())
    cross_group = dict(cross_group or {})
    factory = class_factory(factory, constants, cleared=cross_group)

    def __init__(self, params, *args, model=None, skip_nonfinite=False, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        defaults = {k: bound.arguments[k] for k in names}
        for entry, argument in snapshots.items():
            if defaults[entry] is None and callable(argument):  # derived from the constructor's arguments
                defaults[entry] = argument(dict(defaults))
            elif defaults[entry] is None and isinstance(argument, str):
                value = defaults[argument]  # a pair (timm Mars's betas_1d: the constructor's betas) or a number
                defaults[entry] = (tuple(hyperparams.concrete_value(x) for x in value) if isinstance(value, (tuple, list))
                                   else hyperparams.concrete_value(value))
        defaults.update(constants)
        base_cls.__init__(self, params, defaults, model=model, skip_nonfinite=skip_nonfinite)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += list(signature.parameters.values())
    params.append(inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, default=None))
    params.append(inspect.Parameter("skip_nonfinite", inspect.Parameter.KEYWORD_ONLY, default=False))
    params.sort(key=lambda p: p.kind)
    __init__.__signature__ = inspect.Signature(params)
    cls = type(name, (base_cls,), {
        "__init__": __init__,
        "_factory": staticmethod(factory),
        "_static": tuple(static),
        "_structural_zero": tuple(structural_zero),
        "_constants": constants,
        "_dense_params_only": bool(dense_params_only),
        "_cross_group": cross_group,
        "_group_flags": group_flags,
        "_group_index_argument": group_index,
        "__doc__": doc or f"torch.optim.{name} over `optax_like.{factory.__name__}` (see its docstring).",
        "__module__": "optax_like.optim",
    })
    return cls
