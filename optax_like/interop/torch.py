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
from typing import Any, Sequence, cast

import jax
import jax.numpy as jnp
import numpy as np

from optax_like.core.leaf_order import GroupOrder, first_param_blocks, group_order_issues
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


def _torch_groups(target: Any, groups: list[list[str]], group_orders: Sequence[GroupOrder | None] = ()
                  ) -> tuple[list[int], list[list[str]], dict[str, int] | None]:
    """torch's param groups, in its order, for our groups (their param `names`): for each torch
    group `j`, the index of our group holding the same params (`perm[j]`) and their names in the
    order torch numbers them; and the real element count of each named tensor where `target`
    has tensors. From `target`:

    * a torch optimizer: its groups' `param_names`, matched to ours by the params they hold (a
      group of torch's whose params are not exactly one of ours is refused, naming both);
    * a torch module (`named_parameters()`), `(name, tensor)` pairs or names (the model's order):
      each group keeps that relative order; the groups keep ours, except those a helper ordered
      by the first appearance of their params in a listing (`group_orders`, timm's layer decay;
      `core.leaf_order.remember_grouped`): those are ordered by the first appearance of their
      params in the target's names, as timm builds them from `model.named_parameters()`."""
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
        theirs = [[str(n) for n in group["param_names"]] for group in target.param_groups]
        return _by_membership(groups, theirs, "the torch optimizer's", (
            "Build both optimizers with the same param groups (each holding the same params, in any order): "
            "a group's state and hyperparameters are not exported onto another grouping.")), theirs, sizes
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
    ordered = []
    for g, group in enumerate(groups):
        unknown = [n for n in group if n not in position]
        if unknown:
            raise ValueError(
                f"param group {g} has params {unknown[:4]} that the target does not name (its names: "
                f"{order[:4]}...): name the params as the torch model does (a dict keyed by "
                "model.state_dict()'s names, or (name, param) pairs)")
        ordered.append(sorted(group, key=position.__getitem__))
    perm = list(range(len(groups)))
    for block in first_param_blocks(list(group_orders)):
        first = {g: min((position[n] for n in groups[g]), default=len(order)) for g in block}
        for slot, g in zip(block, sorted(block, key=first.__getitem__)):
            perm[slot] = g
    return perm, [ordered[g] for g in perm], sizes


def _by_membership(ours: list[list[str]], theirs: list[list[str]], whose: str, fix: str) -> list[int]:
    """For each of `theirs` (torch's groups, their param names), the index of our group that
    holds exactly the same params; a ValueError naming the groups (and `fix`) where that is not
    one group."""
    if len(theirs) != len(ours):
        raise ValueError(f"{whose} {len(theirs)} param groups are not this optimizer's {len(ours)}")
    holder = {n: g for g, names in enumerate(ours) for n in names}
    index = {frozenset(names): g for g, names in enumerate(ours) if len(set(names)) == len(names)}
    perm, problems = [], []
    for j, names in enumerate(theirs):
        g = index.get(frozenset(names)) if len(set(names)) == len(names) else None
        if g is None:
            among = sorted({holder[n] for n in names if n in holder})
            problems.append(f"{whose} param group {j} ({names[:4]}{'...' if len(names) > 4 else ''}) holds "
                            + (f"params of this optimizer's groups {among} but not exactly one of them"
                               if among else "none of this optimizer's params"))
        perm.append(g)
    if not problems and sorted(perm) != list(range(len(ours))):
        problems.append(f"{whose} param groups do not each hold one of this optimizer's groups")
    if problems:
        raise ValueError(
            "cannot tell which param group of torch's is which of this optimizer's: torch's groups are "
            "matched to ours by the params they hold, and " + "; ".join(problems) + ". " + fix)
    return cast("list[int]", perm)


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
    # how a helper ordered the groups (timm's layer decay: by their first params in its listing)
    group_orders = ([record.group_order for record in held] if held is not None
                    else list(getattr(sd, "group_orders", None) or [None] * len(groups)))
    perm = list(range(len(groups)))  # torch's group j is our group perm[j]
    if target is None:
        group_issues = group_order_issues(group_orders)
        for g, group in enumerate(groups):
            if held is not None:
                why = len(group["params"]) > 1 and held[g].order_issue
            elif getattr(sd, "order_issues", None) is not None:  # declared by optimizer.state_dict()
                why = len(group["params"]) > 1 and sd.order_issues[g]
            else:
                why = "param_names" in group and "it carries param_names (its order need not be torch's)"
            why = why or group_issues[g]
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
        perm, torch_names, sizes_by_name = _torch_groups(target, named, group_orders)
        orders = [[] for _ in groups]
        for g, theirs in zip(perm, torch_names):
            ours = named[g]
            if sorted(ours) != sorted(theirs) or len(set(ours)) != len(ours):
                raise ValueError(
                    f"param group {g}: the target's params {theirs[:4]}... are not this group's "
                    f"{ours[:4]}... (same names, each once)")
            index = {n: i for i, n in enumerate(ours)}
            orders[g] = [index[n] for n in theirs]  # torch position j holds our param orders[g][j]

    tensor_entries = _tensor_group_entries(optimizer, target, perm)
    omitted = [attribute_group_entries(group.state) for group in held] if held is not None else [()] * len(groups)
    new_state: dict = {}
    new_groups = []
    offset = 0
    for j, g in enumerate(perm):  # torch's groups in its order: torch's group j is our group g
        group, order = groups[g], orders[g]
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
        for k, i in enumerate(order):
            if entries[i] is not None:
                new_state[offset + k] = entries[i]
        packed = {k: _group_value(v) for k, v in group.items() if k != "params"}
        for key in omitted[g]:  # optimizer attributes in the reference (torchao's block_size)
            packed.pop(key, None)
        for key, dtype in tensor_entries[j].items():  # a 0-d tensor in the reference (torchao's lr)
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


def _tensor_group_entries(optimizer: Any, target: Any, perm: list[int]) -> list[dict]:
    """Per torch group (torch's group j is our group perm[j]), the entries to write as 0-d
    tensors -> their torch dtype: those the optimizer's state declares (`tensor_group_entries`:
    torchao's lr, float32), and those a torch optimizer `target` keeps as 0-d tensors (in their
    dtype)."""
    torch = _torch()
    out: list[dict] = [{} for _ in perm]
    held = getattr(optimizer, "_groups", None)
    if held is not None:
        out = [dict.fromkeys(tensor_group_entries(held[g].state), torch.float32) for g in perm]
    if target is not None and isinstance(target, torch.optim.Optimizer) and len(target.param_groups) == len(perm):
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
    such as "10.weight", or the given names).

    Where the saved groups are named (by `param_names` or `source`), they are matched to ours by
    the params they hold, not by position: a group of timm's layer decay (built in the model's
    registration order) loads into ours of the same params, its hyperparameters with it. Saved
    names of our params grouped otherwise are refused, naming the groups."""
    converted = from_torch_state_dict(state_dict)
    holder = getattr(optimizer, "_wrapper", optimizer)  # a base taken over by a wrapper: the wrapper's
    records = holder._groups
    ours = [list(group.names) for group in records]
    if source is not None:
        for g, group in enumerate(records):
            if group.positional_names and len(group.names) > 1:
                raise ValueError(
                    f"load_torch_state_dict(..., source=...): the params of group {g} have no names (they "
                    "were given as a list of arrays), so source= cannot match them by name. Give them "
                    "names ((name, param) pairs, a params dict, or model=params), or load without "
                    "source=: a list is loaded by position, torch's rule, and must then be in the saved "
                    "(torch: model.parameters()) order.")
        perm, torch_names, _ = _torch_groups(source, ours, [group.group_order for group in records])
        for j, (group, names) in enumerate(zip(converted["param_groups"], torch_names)):
            if "param_names" not in group:
                if len(names) != len(group["params"]):
                    held = f" (this optimizer's group {perm[j]}" + (
                        ", ordered as torch's by the first appearance of its params in the source's names)"
                        if perm != list(range(len(perm))) else ")")
                    raise ValueError(
                        f"loaded param group {j} has {len(group['params'])} params, the source names "
                        f"{len(names)} for torch's group {j}{held}: the saved groups are not this "
                        "optimizer's groups of the same params")
                group["param_names"] = list(names)
    _match_groups_by_params(records, converted, ours)
    optimizer.load_state_dict(converted)


def _match_groups_by_params(records: list, converted: dict[str, Any], ours: list[list[str]]) -> None:
    """Puts the loaded groups (all named by `param_names`) in our groups' order where they hold
    our groups' params in another order; refuses saved names of our params grouped otherwise.
    Leaves the rest to `optimizer.load_state_dict` (positional names, names not ours)."""
    saved = converted["param_groups"]
    if (len(saved) != len(ours) or any("param_names" not in group for group in saved)
            or any(record.positional_names for record in records)):
        return
    everything = [n for names in ours for n in names]
    if len(set(everything)) != len(everything):
        return  # names repeat across our groups: nothing to match groups by
    theirs = [[str(n) for n in group["param_names"]] for group in saved]
    if all(sorted(a) == sorted(b) for a, b in zip(ours, theirs)):
        return  # the same groups in the same order
    known = set(everything)
    if not all(n in known for names in theirs for n in names):
        return  # names that are not ours: optimizer.load_state_dict's refusal (or its positional rule)
    perm = _by_membership(ours, theirs, "the loaded state dict's", (
        "Build this optimizer with the saver's param groups (each holding the params its param_names "
        "name, in any order); the state is not loaded onto other groups."))
    where = {g: j for j, g in enumerate(perm)}  # our group g is the saved group where[g]
    converted["param_groups"] = [saved[where[g]] for g in range(len(ours))]
