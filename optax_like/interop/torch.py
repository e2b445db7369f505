"""torch.optim state dicts <-> optax_like.optim optimizers (torch imported lazily).

A torch checkpoint (`torch.save(optimizer.state_dict(), path)`, read back with
`torch.load(path, weights_only=True)`) has the layout `optax_like.optim` uses, with the same keys,
so conversion is a change of array type:

    params = {name: jnp.asarray(p.detach().numpy()) for name, p in model.named_parameters()}
    opt = optax_like.optim.Adam(params, lr=...)
    load_torch_state_dict(opt, torch.load("opt.pt", weights_only=True), source=model)
    torch_opt.load_state_dict(to_torch_state_dict(opt, target=model))  # and back

torch matches saved state to params by position in its registration order; our ids follow the
leaves of each group's tree in `jax.tree.leaves` order (dicts sorted by key: '10.weight' before
'2.weight'). `source=`/`target=` (the model, `model.named_parameters()`, a torch optimizer built
from them, or the names in torch's order) renumber by name so that each state lands on the param
of the same name; without them a params dict whose order may not be torch's is refused (or
loaded by the names torch saved). A list of params in `model.parameters()` order needs neither.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core.torch_layout import QuantizedTensor
from optax_like.interop import torchao
from optax_like.optim._state_dict import (
    attribute_group_entries,
    host_array,
    permute_flat_entry,
    plain,
    tensor_group_entries,
)
from optax_like.optimizers.lbfgs import LBFGSState

# declared with the state (declare_torch_state sets the attribute, which pyright cannot see)
_LBFGS_FLAT_KEYS = LBFGSState.__torch_layout__.flat_keys  # pyright: ignore[reportAttributeAccessIssue]

_BFLOAT16 = np.dtype(jnp.bfloat16)


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError("optax_like.interop.torch needs torch (pip install torch).") from e
    return torch


def _tensor(value: Any):
    """A NumPy/JAX array as a torch tensor of the same dtype (bfloat16 included), a copy."""
    torch = _torch()
    arr = np.asarray(value)
    if arr.dtype == _BFLOAT16:
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.tensor(np.array(arr))


def from_torch_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A torch optimizer state dict with NumPy arrays in place of tensors (copies; bfloat16 tensors
    become `jnp.bfloat16` arrays bit for bit) and 0-d hyperparameter tensors as Python numbers."""
    torch = _torch()

    def convert(x):
        if torchao.is_torchao_state(x):  # torchao's quantized moments: codes, scale, qmap
            return torchao.from_torchao(x)
        if isinstance(x, torch.Tensor):
            return host_array(x, "torch state entry")
        if isinstance(x, dict):
            return {k: convert(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(convert(v) for v in x)
        return x

    groups = [{k: plain(v) if isinstance(v, torch.Tensor) else convert(v) for k, v in group.items()}
              for group in state_dict["param_groups"]]
    return {"state": convert(state_dict["state"]), "param_groups": groups}


def _torch_order(target: Any, groups: list[list[str]]) -> tuple[list[list[str]], dict[str, int] | None]:
    """Each group's param names in the order torch numbers them, from `target`: a torch optimizer
    (its groups' `param_names`), a torch module (`named_parameters()`), or an iterable of
    `(name, tensor)` pairs or of names (a model's order: each group keeps that relative order);
    and the real element count of each named tensor where `target` has tensors."""
    torch = _torch()
    sizes = None
    if isinstance(target, torch.optim.Optimizer):
        if len(target.param_groups) != len(groups):
            raise ValueError(
                f"the torch optimizer has {len(target.param_groups)} param groups, the state dict {len(groups)}")
        if any("param_names" not in group for group in target.param_groups):
            raise ValueError(
                "the torch optimizer's param groups carry no param_names, so its params cannot be matched "
                "to ours by name: build it from model.named_parameters() (torch >= 2.5), or pass "
                "target=model (or model.named_parameters(), or the list of names in its parameters() order)")
        sizes = {n: _real_size(p) for group in target.param_groups
                 for n, p in zip(group["param_names"], group["params"])}
        return [list(group["param_names"]) for group in target.param_groups], sizes
    if isinstance(target, torch.nn.Module):
        target = target.named_parameters()
    items = list(target)
    if items and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in items):
        sizes = {n: _real_size(p) for n, p in items}
        order = [n for n, _ in items]
    elif all(isinstance(x, str) for x in items):
        order = list(items)
    else:
        raise TypeError(
            "target must be a torch optimizer, a torch module, model.named_parameters() "
            "((name, tensor) pairs) or a list of names")
    if len(set(order)) != len(order):
        raise ValueError("target names a param twice")
    position = {n: i for i, n in enumerate(order)}
    out = []
    for g, group in enumerate(groups):
        unknown = [n for n in group if n not in position]
        if unknown:
            raise ValueError(
                f"param group {g} has params {unknown[:4]} that the target does not name (its names: "
                f"{order[:4]}...): name the params as the torch model does (a dict keyed by "
                "model.state_dict()'s names, or (name, param) pairs)")
        out.append(sorted(group, key=position.__getitem__))
    return out, sizes


def _group_value(value: Any) -> Any:
    """A param group entry for torch: arrays (a Tensor `lr`, array betas) as tensors, a dtype
    (timm's AdafactorBigVision `momentum_dtype`) as torch's dtype of that name, the rest copied."""
    if isinstance(value, (jax.Array, np.ndarray)):
        return _tensor(value)
    if isinstance(value, np.dtype) and isinstance(getattr(_torch(), value.name, None), _torch().dtype):
        return getattr(_torch(), value.name)
    if isinstance(value, tuple) and any(isinstance(v, (jax.Array, np.ndarray)) for v in value):
        return tuple(_group_value(v) for v in value)
    return copy.deepcopy(value)


def _real_size(tensor: Any) -> int:
    return int(tensor.numel()) * (2 if tensor.is_complex() else 1)


def to_torch_state_dict(optimizer_or_state_dict: Any, target: Any = None) -> dict[str, Any]:
    """An optax_like optimizer's state dict as torch expects it: tensors of the arrays' dtypes
    (bfloat16 included), float32 `step` scalars (Python ints stay ints: torch's SparseAdam
    counts its steps so), lists (LBFGS's history) converted element by element, quantized
    moments (`QuantizedTensor`) as torchao's tensor subclasses. Group entries the state
    declares (`tensor_group_entries`: torchao's lr, a float32 tensor; `attribute_group_entries`:
    torchao's `block_size`, left out) are written as the reference keeps them; that needs the
    optimizer (or a torch optimizer `target`): a bare state dict keeps its entries as they are.

    torch's `load_state_dict` matches saved state to its params by POSITION (ids in its
    registration order; it stores `param_names` but does not map by them). Our ids follow the
    leaves of each group's tree, and JAX orders a dict's leaves by sorted key ('10.weight' before
    '2.weight'; 'bias' before 'weight'), so a params dict rarely has torch's order. `target`
    gives torch's order by name, and the ids are renumbered so that each state lands on the torch
    param of the same name (our names: key paths such as "10.weight", or the given names):

        torch_opt.load_state_dict(to_torch_state_dict(opt, target=model))   # or:
        target=torch_opt  (built from model.named_parameters()),  target=model.named_parameters(),
        target=[name, ...]  (torch's parameters() order)

    LBFGS's flat vectors (`d`, `prev_flat_grad`, the history) are permuted to torch's param order
    too (this needs the optimizer, or a target with tensors, for the params' sizes). Without a
    target, a group whose order may not be torch's is refused, naming the fix: the optimizer's
    params tree holds a dict of several keys, or a saved state dict carries `param_names` (ours
    does exactly when the order is in question, or the params were given named). A saved state
    dict without names is converted by position. `param_names` saved with a group are kept, in
    torch's order.
    """
    source = optimizer_or_state_dict
    optimizer = source if hasattr(source, "state_dict") else None
    sd = source.state_dict() if optimizer is not None else source
    groups = sd["param_groups"]
    state = dict(sd["state"])
    held = getattr(optimizer, "_groups", None)  # an optax_like.optim optimizer's groups
    names: list[list[str] | None] = []
    for g, group in enumerate(groups):
        if held is not None:
            names.append(list(held[g].names))
        else:
            names.append([str(n) for n in group["param_names"]] if "param_names" in group else None)
    if target is None:
        for g, group in enumerate(groups):
            if held is not None:
                why = len(group["params"]) > 1 and held[g].order_issue
            elif getattr(sd, "order_issues", None) is not None:  # declared by optimizer.state_dict()
                why = len(group["params"]) > 1 and sd.order_issues[g]
            else:
                why = "param_names" in group and "it carries param_names (its order need not be torch's)"
            if why:
                raise ValueError(
                    f"to_torch_state_dict: cannot tell which torch param gets which state of param group {g}: "
                    f"{why}, while torch's load_state_dict matches by position in its registration order "
                    "('2.weight' before '10.weight'). Pass target=model (or model.named_parameters(), a "
                    "torch optimizer built from model.named_parameters(), or the list of names in "
                    "torch's order) to renumber the params by name; or give the params to the "
                    "optax_like optimizer as a list (or (name, param) pairs) in torch's order.")
        orders = [list(range(len(group["params"]))) for group in groups]
        sizes_by_name = None
    else:
        if any(n is None for n in names):
            raise ValueError(
                "to_torch_state_dict(..., target=...): the state dict carries no param_names to match "
                "by; pass the optimizer itself")
        named = cast("list[list[str]]", names)  # no None: checked just above
        torch_names, sizes_by_name = _torch_order(target, named)
        orders = []
        for g, (ours, theirs) in enumerate(zip(named, torch_names)):
            if sorted(ours) != sorted(theirs) or len(set(ours)) != len(ours):
                raise ValueError(
                    f"param group {g}: the target's params {theirs[:4]}... are not this group's "
                    f"{ours[:4]}... (same names, each once)")
            index = {n: i for i, n in enumerate(ours)}
            orders.append([index[n] for n in theirs])  # torch position j holds our param orders[g][j]

    tensor_entries = _tensor_group_entries(optimizer, target, len(groups))
    omitted = [attribute_group_entries(group.state) for group in held] if held is not None else [()] * len(groups)
    new_state: dict = {}
    new_groups = []
    offset = 0
    for g, (group, order) in enumerate(zip(groups, orders)):
        ids = list(group["params"])
        n = len(ids)
        identity = order == list(range(n))
        entries = [state.pop(pid, None) for pid in ids]
        first = entries[0] if entries else None
        if not identity and first and "func_evals" in first:  # torch's LBFGS: one dict, flat vectors
            # (names[g] is None only without a target, where sizes_by_name is None and names unused)
            sizes = _lbfgs_sizes(optimizer, g, cast("list[str]", names[g]), sizes_by_name)
            first = permute_flat_entry(first, _LBFGS_FLAT_KEYS, sizes, order)
            entries = [first] + [None] * (n - 1)
            order = list(range(n))
        for j, i in enumerate(order):
            if entries[i] is not None:
                new_state[offset + j] = entries[i]
        packed = {k: _group_value(v) for k, v in group.items() if k != "params"}
        for key in omitted[g]:  # optimizer attributes in the reference (torchao's block_size)
            packed.pop(key, None)
        for key, dtype in tensor_entries[g].items():  # a 0-d tensor in the reference (torchao's lr)
            if key in packed and isinstance(packed[key], (int, float)) and not isinstance(packed[key], bool):
                packed[key] = _torch().tensor(packed[key], dtype=dtype)
        if "param_names" in packed:
            group_names = names[g]
            packed["param_names"] = [group_names[i] for i in order] if group_names else packed["param_names"]
        packed["params"] = list(range(offset, offset + n))
        new_groups.append(packed)
        offset += n
    new_state.update(state)  # entries for no param of any group stay as saved (torch keeps them)

    def convert(key, value):
        if isinstance(value, (list, tuple)):
            return type(value)(convert(key, v) for v in value)
        if isinstance(value, QuantizedTensor):  # torchao's OptimState8bit / 4bit / Fp8
            return torchao.to_torchao(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value  # torch's Python numbers (SparseAdam's step, LBFGS's n_iter, t, ...)
        if key == "step":
            return _tensor(np.asarray(value, np.float32))
        return _tensor(value)

    out_state = {pid: {key: convert(key, value) for key, value in entry.items()} for pid, entry in new_state.items()}
    return {"state": out_state, "param_groups": new_groups}


def _tensor_group_entries(optimizer: Any, target: Any, n_groups: int) -> list[dict]:
    """Per group, the entries to write as 0-d tensors -> their torch dtype: those the optimizer's
    state declares (`tensor_group_entries`: torchao's lr, float32), and those a torch optimizer
    `target` keeps as 0-d tensors (in their dtype)."""
    torch = _torch()
    out: list[dict] = [{} for _ in range(n_groups)]
    held = getattr(optimizer, "_groups", None)
    if held is not None:
        out = [dict.fromkeys(tensor_group_entries(group.state), torch.float32) for group in held]
    if target is not None and isinstance(target, torch.optim.Optimizer) and len(target.param_groups) == n_groups:
        for entries, group in zip(out, target.param_groups):
            entries.update({k: v.dtype for k, v in group.items()
                            if k != "params" and isinstance(v, torch.Tensor) and v.ndim == 0})
    return out


def _lbfgs_sizes(optimizer: Any, g: int, names: list[str], sizes_by_name: dict | None) -> list[int]:
    """The real element count of each param of group g, in our order (LBFGS's flat segments)."""
    if optimizer is not None and hasattr(optimizer, "_groups"):
        leaves = [leaf for leaf in optimizer._groups[g].leaves if leaf is not None]
        return [int(np.size(leaf)) * (2 if jnp.iscomplexobj(leaf) else 1) for leaf in leaves]
    if sizes_by_name is not None:
        return [sizes_by_name[n] for n in names]
    raise ValueError(
        "to_torch_state_dict: LBFGS's flat state must be permuted to torch's param order, which needs "
        "the params' sizes: pass the optimizer itself, or a target with tensors (the model)")


def load_torch_state_dict(optimizer, state_dict: dict[str, Any], source: Any = None) -> None:
    """Loads a torch optimizer state dict into an `optax_like.optim` optimizer (atomic; the same
    checks as `optimizer.load_state_dict`, whose messages name the param id and the key).

    torch's ids follow its registration order. A state dict saved by a torch optimizer built from
    `model.named_parameters()` carries `param_names` and loads by name. Otherwise pass `source`
    (the torch model, `model.named_parameters()`, the torch optimizer built with names, or the
    list of names in torch's order): its names are written into the loaded groups (in the saved
    order), so that each saved state lands on our param of the same name (our names: key paths
    such as "10.weight", or the given names)."""
    converted = from_torch_state_dict(state_dict)
    if source is not None:
        for g, group in enumerate(optimizer._groups):
            if group.positional_names and len(group.names) > 1:
                raise ValueError(
                    f"load_torch_state_dict(..., source=...): the params of group {g} have no names (they "
                    "were given as a list of arrays), so source= cannot match them by name. Give them "
                    "names ((name, param) pairs, a params dict, or model=params), or load without "
                    "source=: a list is loaded by position, torch's rule, and must then be in the saved "
                    "(torch: model.parameters()) order.")
        ours = [list(group.names) for group in optimizer._groups]
        torch_names, _ = _torch_order(source, ours)
        for g, (group, names) in enumerate(zip(converted["param_groups"], torch_names)):
            if "param_names" not in group:
                if len(names) != len(group["params"]):
                    raise ValueError(
                        f"loaded param group {g} has {len(group['params'])} params, the source names {len(names)}")
                group["param_names"] = list(names)
    optimizer.load_state_dict(converted)
